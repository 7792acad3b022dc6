"""Meta-trains a learned optimizer (pipeline training) and writes phi.npz: every meta-training config.

  python launch/meta_train.py --config=configs/meta_a2c.py:catch --workdir=runs/meta_catch
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
"""
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from optim4rl_tf.utils import cli  # noqa: E402  one-line flag errors (exit 2), SIGINT/SIGTERM handling
from optim4rl_tf.utils import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config",
                                          None,
                                          "Config file, e.g. configs/meta_a2c.py:catch.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, phi.npz).")


def main(argv):
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/meta_a2c.py:catch")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from optim4rl_tf.meta import workers as workers_lib
  try:  # before any other TensorFlow op: tf.distribute starts this worker's server and waits for the others
    workers = workers_lib.from_environment()
  except (ValueError, RuntimeError) as e:
    cli.fail(e)
  from optim4rl_tf.meta import run
  # One line and an exit status for bad configs/workdirs (2), divergence or a full disk (1) and
  # SIGINT/SIGTERM (130/143, after saving the last completed outer iteration).
  try:
    run.cli_call(run.meta_train, _CONFIG.value, _WORKDIR.value, workers=workers)
  except workers_lib.WorkerLost as e:  # another worker died: one line, not a hang
    cli.fail(e, code=run.EXIT_FAILED)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run(main)
