"""Meta-trains one of the shipped optimizers by its recipe and writes optim4rl_tf/pretrained/<name>.npz.

  python launch/make_pretrained.py --name=grid6 --workdir=runs/pretrained/grid6
  python launch/make_pretrained.py --name=catch --workdir=runs/pretrained/catch
  optim4rl-make-pretrained --name=catch                                   # the same, installed with pip

A shell around optim4rl_tf.meta.make_pretrained_command (its flags and the provenance written: see that
module; the recipes: optim4rl_tf/pretrained/__init__.py).
"""
from optim4rl_tf.meta import make_pretrained_command

if __name__ == "__main__":
  make_pretrained_command.console()
