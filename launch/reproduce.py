"""One command per A2C/PPO figure or table of the paper: meta-train, test the fixed optimizers, report.

  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch            # full budget
  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch_small \
      --meta_iterations=10 --test_steps=1e5 --num_seeds=3                                      # reduced
  optim4rl-reproduce ...                                                  # the same, installed with pip

A shell around optim4rl_tf.eval.reproduce (its flags, experiments and workdir rules: see that module).
"""
from optim4rl_tf.eval import reproduce

if __name__ == "__main__":
  reproduce.console()
