"""Meta-trains a learned optimizer (pipeline training) and writes phi.npz: every meta-training config.

  python launch/meta_train.py --config=configs/meta_a2c.py:catch --workdir=runs/meta_catch
  python launch/meta_train.py --config=configs/ppo.py:meta_ant --workdir=runs/meta_rl_ant        # MetaPPO
  optim4rl-meta-train ...                                                 # the same, installed with pip

A shell around optim4rl_tf.meta.meta_train_command (its flags, workers (TF_CONFIG) and exit status: see
that module).
"""
from optim4rl_tf.meta import meta_train_command

if __name__ == "__main__":
  meta_train_command.console()
