"""Trains agents (all seeds in one vectorised graph) and writes logs, returns.csv and returns.png.

  python launch/train.py --config=configs/a2c.py:catch --config.optimizer.name=adam \
      --config.num_seeds=10 --config.train_steps=300000 --workdir=/tmp/a2c_catch
  python launch/train.py --config=configs/ppo.py:ant_cpu --workdir=/tmp/ppo_ant

The config's ``agent`` field picks the trainer: 'a2c' (the default when absent; configs/a2c.py, outputs in
optim4rl_tf.agents.a2c_train), 'ppo' (PPO on Brax; configs/ppo.py, optim4rl_tf.agents.ppo_train) or
'meta_ppo' (MetaPPO meta-training on Brax; configs/ppo.py:meta_*, optim4rl_tf.meta.meta_ppo).
"""
import os
import sys


from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/a2c.py:catch.",
                                          lock_config=True)
AGENTS = ("a2c", "ppo", "meta_ppo")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for TensorBoard logs, returns.csv and plots.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/a2c.py:catch")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  agent = _CONFIG.value.get("agent", "a2c")
  if agent not in AGENTS:
    print(f"error: unknown config.agent {agent!r}; valid: {', '.join(AGENTS)}", file=sys.stderr)
    sys.exit(2)
  if agent in ("ppo", "meta_ppo"):
    # JAX / MuJoCo / TF checkpointing log at INFO through the root logger, which absl prints: keep the
    # console to the run's own progress lines.
    absl_logging.set_verbosity(absl_logging.WARNING)
  if agent == "ppo":
    from optim4rl_tf.agents import ppo_train
    run = ppo_train.train
  elif agent == "meta_ppo":
    from optim4rl_tf.meta import meta_ppo
    run = meta_ppo.meta_train
  else:
    from optim4rl_tf.agents import a2c_train
    run = a2c_train.train
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
