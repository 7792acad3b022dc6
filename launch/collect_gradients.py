"""Collects agent / supervised gradients for Fig. 1, Fig. 5 and Table 4 (docs/fidelity.md §8) into WORKDIR/grads.

  python launch/collect_gradients.py --config=configs/collect.py:bdl --workdir=runs/collect_bdl
  python launch/collect_gradients.py --config=configs/collect.py:mnist --workdir=runs/collect_mnist
  python launch/collect_gradients.py --config=configs/collect.py:mnist --config.data.path=~/data/mnist \
      --workdir=runs/collect_mnist

Then: python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4
See configs/collect.py for the variants.
"""
import os
import sys

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/collect.py:bdl.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (the gradients go to WORKDIR/grads).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/collect.py:bdl")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  config = _CONFIG.value
  try:
    if config.kind == "a2c":
      from optim4rl_tf.agents import a2c_train
      from optim4rl_tf.analysis import collect
      a2c_train.train(config, _WORKDIR.value, gradient_probe=collect.gradient_probe_for(config))
    elif config.kind == "supervised":
      from optim4rl_tf.analysis import supervised
      supervised.train(config, _WORKDIR.value)
    else:
      raise ValueError(f"unknown config kind {config.kind!r} (expected 'a2c' or 'supervised')")
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"gradients written to {os.path.join(_WORKDIR.value, config.collect.subdir)}", flush=True)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
