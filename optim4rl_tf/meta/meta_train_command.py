"""The meta-training command (``optim4rl-meta-train``, launch/meta_train.py): flags -> ``run.meta_train``.

  optim4rl-meta-train --config=configs/meta_a2c.py:catch --workdir=runs/meta_catch
  python launch/meta_train.py --config=configs/meta_a2c.py:big_dense_long --config.chunk_size=64 \
      --config.meta_lr=1e-4 --workdir=runs/meta_bdl
  python launch/meta_train.py --config=configs/ppo.py:meta_ant --workdir=runs/meta_rl_ant        # MetaPPO

MetaA2C on gridworlds (configs/meta_a2c.py) and MetaPPO on Brax (configs/ppo.py:meta_*; STAR with
--config.optimizer.name=star). Killed runs resume from the last checkpoint when started again with the same
--workdir. See the config files for the variants and fields, optim4rl_tf.meta.run for the outputs.

On W workers (MetaA2C): start this same command on every worker, each with its own TF_CONFIG (tf.distribute's
standard variable; worker 0 is the chief and alone writes --workdir, which all must read):

  TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}' \
      python launch/meta_train.py --config=configs/meta_a2c.py:catch --workdir=/shared/runs/meta_catch

Each worker holds num_units / W units; phi is that of one process (optim4rl_tf/meta/workers.py).

Exit status: 0 done; 2 a bad flag, config or workdir (one line); 1 divergence, a full disk or a lost worker;
130/143 SIGINT/SIGTERM (after saving the last completed outer iteration).
"""
from absl import flags
from absl import logging

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv``: where ml_collections reads ``--config.*``
  overrides; None: ``sys.argv``)."""
  cli.define_config_flag(flag_values, argv, "configs/meta_a2c.py:catch")
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, phi.npz).", flag_values=flag_values)


def main(argv, flag_values):
  """The command: the parsed config and workdir -> ``run.meta_train`` (on this worker's share of the units
  when TF_CONFIG names several workers)."""
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  cli.check_config_and_workdir(argv, flag_values, "configs/meta_a2c.py:catch")
  config, workdir = flag_values.config, flag_values.workdir
  from optim4rl_tf.meta import workers as workers_lib  # pylint: disable=import-outside-toplevel
  try:  # before any other TensorFlow op: tf.distribute starts this worker's server and waits for the others
    workers = workers_lib.from_environment()
  except (ValueError, RuntimeError) as e:
    cli.fail(e)
  from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
  # One line and an exit status for bad configs/workdirs (2), divergence or a full disk (1) and
  # SIGINT/SIGTERM (130/143, after saving the last completed outer iteration).
  try:
    run.cli_call(run.meta_train, config, workdir, workers=workers)
  except workers_lib.WorkerLost as e:  # another worker died: one line, not a hang
    cli.fail(e, code=run.EXIT_FAILED)


def console():
  """The ``optim4rl-meta-train`` console script (and launch/meta_train.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
