"""Shared pytest setup: quiet TF, the golden-value folder, config overrides.

The repository root is on ``sys.path`` through ``pythonpath`` in pyproject.toml's pytest section (for
``configs`` and ``launch``); ``optim4rl_tf`` itself is the installed package."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def set_fields(config, **overrides):
  """Sets dotted ``ConfigDict`` fields (``{"optimizer.name": "adam"}``) like ``--config.a.b=v``; returns
  the config."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config
