"""The project's main job (README's first command): the paper's Catch experiment, end to end.

  python launch/main.py --workdir=runs/main
  optim4rl-main --workdir=runs/main                                       # the same, installed with pip
  tensorboard --logdir=runs/main

A shell around optim4rl_tf.eval.main_job (its flags, stages and resume rules: see that module).
"""
from optim4rl_tf.eval import main_job

if __name__ == "__main__":
  main_job.console()
