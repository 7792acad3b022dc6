"""Collects agent / supervised gradients for Fig. 1, Fig. 5 and Table 4 (docs/fidelity.md §8) into WORKDIR/grads.

  python launch/collect_gradients.py --config=configs/collect.py:bdl --workdir=runs/collect_bdl
  python launch/collect_gradients.py --config=configs/collect.py:mnist --workdir=runs/collect_mnist
  python launch/collect_gradients.py --config=configs/collect.py:mnist --config.data.path=~/data/mnist \
      --workdir=runs/collect_mnist
  optim4rl-collect-gradients ...                                          # the same, installed with pip

Then: python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4
A shell around optim4rl_tf.analysis.collect_gradients_command (its flags: see that module; the variants:
configs/collect.py).
"""
from optim4rl_tf.analysis import collect_gradients_command

if __name__ == "__main__":
  collect_gradients_command.console()
