"""Shared pytest setup: quiet TF, register markers, make the checkout importable."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

GOLDEN_DIR = os.path.join(os.path.dirname(ROOT), "shared", "reference", "golden")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer learning tests (still run by CI)")


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
