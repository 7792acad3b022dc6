"""The robustness command (``optim4rl-robustness``, launch/robustness.py): Tables 5-7, a fixed learned
optimizer tested with A2C under other GAE lambda / entropy / discount values (optim4rl_tf.analysis.robustness).

  python launch/robustness.py --config=configs/robustness.py \
      --config.meta_params=runs/meta_bdl/phi.npz --workdir=runs/robustness
  # reduced budget:
  python launch/robustness.py --config=configs/robustness.py:small_dense_short \
      --config.meta_params=runs/meta_bdl/phi.npz --config.num_seeds=3 --config.train_steps=1e6 \
      --workdir=runs/robustness_small
  # only rebuild the report from finished runs:
  python launch/robustness.py --config=configs/robustness.py ... --workdir=runs/robustness --report_only

Writes WORKDIR/<task>/<setting>/ (one A2C run each, see launch/train.py), WORKDIR/robustness.md (the tables
beside the paper's numbers) and WORKDIR/robustness.json. Finished runs are reused (config.resume).

This module imports no TensorFlow (the experiment is imported by :func:`main`), so that :func:`console` sets
the process up before TensorFlow loads.
"""

from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv``: where ml_collections reads ``--config.*``
  overrides; None: ``sys.argv``)."""
  cli.define_config_flag(flag_values, argv, "configs/robustness.py")
  flags.DEFINE_string("workdir", None, "Output directory.", flag_values=flag_values)
  flags.DEFINE_bool("report_only", False, "Write the report from finished runs only.", flag_values=flag_values)


def main(argv, flag_values):
  """The command: runs (or reuses) every planned run, or with ``--report_only`` only reads the finished
  ones, then writes and prints the report. A bad config or workdir: one line ``error: ...``, exit 2."""
  cli.check_config_and_workdir(argv, flag_values, "configs/robustness.py")
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from optim4rl_tf.analysis import robustness
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.utils import config_checks as cc
  rc, workdir = flag_values.config, flag_values.workdir
  try:
    cc.check_writable_dir(workdir)
    if flag_values.report_only:
      results = robustness.finished_results(rc, workdir)
    else:
      results = robustness.run_all(rc, workdir, a2c_configs.get_config)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  path = robustness.write_report(rc, results, workdir)
  with open(path) as f:
    print(f.read())
  print(f"report: {path}")


def console():
  """The ``optim4rl-robustness`` console script (and launch/robustness.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
