"""Tables 5-7: a fixed learned optimizer tested with A2C under other GAE lambda / entropy / discount values.

  python launch/robustness.py --config=configs/robustness.py \
      --config.meta_params=runs/meta_bdl/phi.npz --workdir=runs/robustness
  # reduced budget:
  python launch/robustness.py --config=configs/robustness.py:small_dense_short \
      --config.meta_params=runs/meta_bdl/phi.npz --config.num_seeds=3 --config.train_steps=1e6 \
      --workdir=runs/robustness_small
  # only rebuild the report from finished runs:
  python launch/robustness.py --config=configs/robustness.py ... --workdir=runs/robustness --report_only
  optim4rl-robustness ...                                                 # the same, installed with pip

A shell around optim4rl_tf.analysis.robustness_command (its flags and outputs: see that module).
"""
from optim4rl_tf.analysis import robustness_command

if __name__ == "__main__":
  robustness_command.console()
