"""Shared pytest setup: quiet TF, the golden-value folder, config overrides.

The repository root is on ``sys.path`` through ``pythonpath`` in pyproject.toml's pytest section (for
``configs`` and ``launch``); ``optim4rl_tf`` itself is the installed package."""
import contextlib
import functools
import io
import os
import re
import types

import pytest

from optim4rl_tf.utils import config_checks

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# --- order: longest first --------------------------------------------------------------------------------
# Tests that take long carry ``@pytest.mark.slow(SECONDS)``, SECONDS the CPU time they took when last
# measured (only the order matters; a bare ``slow`` counts as SLOW_DEFAULT_SECONDS). They run first,
# longest first, and with ``-n 2`` the tests are handed out in that order a few at a time (below), so the
# two workers start on the long tests and finish together instead of one worker ending alone on a long
# one. Mark a new test ``slow(SECONDS)`` when it takes more than ~5 s.
SLOW_DEFAULT_SECONDS = 30.0


def slow_seconds(item):
  """The duration an item's ``slow`` marker states (SLOW_DEFAULT_SECONDS if none); 0 for other tests."""
  marker = item.get_closest_marker("slow")
  if marker is None:
    return 0.0
  return float(marker.args[0]) if marker.args else SLOW_DEFAULT_SECONDS


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: -slow_seconds(item))  # stable: the rest keep their file order


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
  """``-n N`` (``--dist=load``, the default): xdist's LoadScheduling sends each worker a batch of an
  eighth of the suite up front, which would give all the long tests sorted to the front to one worker.
  Instead the workers get work units in collection order as they finish the previous ones (each holds
  two or three), a unit being one test or all the parametrizations of one test function, which often
  share a module-scoped fixture that should be built once, on one worker. A test file with a module- or
  session-scoped fixture (``shares_fixtures``) is one unit as a whole: its tests share what the fixture
  built (a Ray runtime, a finished run), which two workers would each build."""
  if config.getvalue("dist") != "load":
    return None
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

  class InOrderScheduling(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      path = nodeid.split("::", 1)[0]
      return path if shares_fixtures(os.path.join(str(config.rootpath), path)) else nodeid.split("[", 1)[0]

  config.option.loadscopereorder = False  # keep the collection order (loadscope sorts units by size)
  return InOrderScheduling(config, log)


@functools.lru_cache(maxsize=None)
def shares_fixtures(path):
  """Whether the test file ``path`` defines a fixture of module or session scope."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return False
  return re.search(r"fixture\(\s*scope\s*=\s*[\"'](module|session)[\"']", text) is not None


def set_fields(config, **overrides):
  """Sets dotted ``ConfigDict`` fields (``{"optimizer.name": "adam"}``) like ``--config.a.b=v``; returns
  the config."""
  return config_checks.set_fields(config, overrides)


# --- commands in this process ----------------------------------------------------------------------------
# A command of the package (a module with define_flags and main: optim4rl_tf.eval.reproduce, main_job) runs
# in the test's own process through cli.call: a fresh absl FlagValues, the command's one-line errors and exit
# status, no TensorFlow start-up to pay again.


def run_command(module, *args):
  """Runs ``module``'s command with ``args`` (``cli.call``); returns ``.returncode`` (its exit status),
  ``.stdout`` and ``.stderr``, like ``subprocess.run``."""
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.call(module.define_flags, module.main, [module.__name__] + [str(a) for a in args])
  return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
