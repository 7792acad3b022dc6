"""Trains A2C agents (all seeds in one vectorised graph) and writes logs, returns.csv and returns.png.

  python launch/train.py --config=configs/a2c.py:catch --config.optimizer.name=adam \
      --config.num_seeds=10 --config.train_steps=300000 --workdir=/tmp/a2c_catch

See configs/a2c.py for the variants (task names) and fields; optim4rl_tf.agents.a2c_train for the outputs.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/a2c.py:catch.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for TensorBoard logs, returns.csv and plots.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/a2c.py:catch")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from optim4rl_tf.agents import a2c_train
  try:
    a2c_train.train(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
