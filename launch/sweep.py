"""Expands a config's sweep grid into runs and runs a launcher for each (local process pool or Ray).

  # meta-train Optim4RL on Catch over the §5.7 grid (20 configurations), 2 at a time:
  python launch/sweep.py --launcher=launch/meta_train.py --config=configs/meta_a2c.py:catch \
      --sweep_dir=runs/meta_rl_catch --workers=2
  # the index table only (configuration index -> values, docs/fidelity.md §9.2):
  python launch/sweep.py --launcher=launch/meta_train.py --config=configs/meta_a2c.py:catch \
      --sweep_dir=runs/meta_rl_catch --list
  # on Ray: --backend=ray [--workers=2] [--ray_address=auto]
  optim4rl-sweep ...                                                      # the same, installed with pip

A shell around optim4rl_tf.eval.sweep_command (its flags, Ray and the exit status: see that module; the index
mapping: optim4rl_tf/eval/sweep.py; the files written: optim4rl_tf/eval/sweep_runner.py).
"""
from optim4rl_tf.eval import sweep_command

if __name__ == "__main__":
  sweep_command.console()
