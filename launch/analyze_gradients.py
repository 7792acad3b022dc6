"""Fig. 1 / Fig. 5 histograms and Table 4 Wasserstein distances from collected gradients (docs/fidelity.md §8).

  python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4
  optim4rl-analyze-gradients ...                                          # the same, installed with pip

Each --grads is a launch/collect_gradients.py workdir (or its grads/ directory). A shell around
optim4rl_tf.analysis.analyze_gradients_command (its flags and outputs: see that module).
"""
from optim4rl_tf.analysis import analyze_gradients_command

if __name__ == "__main__":
  analyze_gradients_command.console()
