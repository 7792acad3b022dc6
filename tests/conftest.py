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
