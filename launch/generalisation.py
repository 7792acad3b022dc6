"""Generalisation table: shipped Optim4RL optimizers (grid6, catch, inverted_pendulum) or a phi of your own vs
Adam and RMSProp with A2C on the six grid6 gridworlds, the two grid6 never saw and Catch.

  python launch/generalisation.py --out=results/generalisation
  python launch/generalisation.py --out=/tmp/gen --num_seeds=2 --small_steps=2e4 --big_steps=2e4 \
      --catch_steps=2e4 --tasks=small_sparse_short,catch --lrs=1e-3          # a quick look
  python launch/generalisation.py --out=runs/gen_mine --optimizers='Adam,Optim4RL runs/meta_catch/phi.npz'
  optim4rl-generalisation ...                                             # the same, installed with pip

A shell around optim4rl_tf.eval.generalisation_command (its flags and outputs: see that module).
"""
from optim4rl_tf.eval import generalisation_command

if __name__ == "__main__":
  generalisation_command.console()
