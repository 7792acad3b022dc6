"""Shared pytest setup: quiet TF, the golden-value folder, config overrides.

The repository root is on ``sys.path`` through ``pythonpath`` in pyproject.toml's pytest section (for
``configs`` and ``launch``); ``optim4rl_tf`` itself is the installed package."""
import contextlib
import importlib
import io
import os
import signal
import sys
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
  share a module-scoped fixture that should be built once, on one worker."""
  if config.getvalue("dist") != "load":
    return None
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

  class InOrderScheduling(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      return nodeid.split("[", 1)[0]

  config.option.loadscopereorder = False  # keep the collection order (loadscope sorts units by size)
  return InOrderScheduling(config, log)


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


# --- launchers in this process ---------------------------------------------------------------------------
# A launcher run as a subprocess pays ~5-10 s (more on a loaded machine) to import TensorFlow before it
# checks anything. Each launcher keeps ONE subprocess test of its real process wiring (exit status,
# stderr, signals); every other launcher case runs the same script in the test's own process with
# `launcher(name).run(*args)`: the script's own flags, parsed by cli.parse_flags, its main() wrapped by
# cli.run exactly as its __main__ block does (only runtime.configure_process, the allocator set-up,
# is left out).

_FLAG_STATE = ("__flags", "__hiddenflags", "__flags_by_module", "__flags_by_module_id", "__key_flags_by_module",
               "__flags_parsed", "__unparse_flags_called")
_LAUNCHERS = {}


def _absl_flag_state():
  """A copy of absl's global flag registry holding only absl's own flags (logging verbosity, ...)."""
  from absl import app as _app  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from absl import flags
  from absl import logging as _logging  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  d = flags.FLAGS.__dict__
  keep = {m: list(fs) for m, fs in d["__flags_by_module"].items() if m.split(".")[0] == "absl"}
  ids = {id(f) for fs in keep.values() for f in fs}
  return {
      "__flags": {
          n: f for n, f in d["__flags"].items() if id(f) in ids
      },
      "__hiddenflags": set(),
      "__flags_by_module": keep,
      "__flags_by_module_id": {
          k: list(fs) for k, fs in d["__flags_by_module_id"].items() if fs and all(id(f) in ids for f in fs)
      },
      "__key_flags_by_module": {
          m: list(fs) for m, fs in d["__key_flags_by_module"].items() if m.split(".")[0] == "absl"
      },
      "__flags_parsed": False,
      "__unparse_flags_called": False
  }


def _copy_flag_state(state):
  return {
      k: ({
          n: (list(v) if isinstance(v, list) else v) for n, v in x.items()
      } if isinstance(x, dict) else set(x) if isinstance(x, set) else x) for k, x in state.items()
  }


def _app_run(main, argv=None, flags_parser=None):
  """absl.app.run without its once-per-process set-up: parse, then sys.exit(main(args))."""
  sys.exit(main(flags_parser(argv)))


class Launcher:
  """``launch/NAME.py`` loaded into this process with a flag registry of its own (launchers define
  clashing flags, e.g. --workdir, and other tests import launch.reproduce)."""

  def __init__(self, name):
    self.path = os.path.join(ROOT, "launch", name + ".py")
    self._state = _absl_flag_state()
    module_name = f"launch.{name}"
    if module_name in sys.modules:
      raise RuntimeError(f"{module_name} was imported before conftest.launcher({name!r}): its flags live in "
                         "the global registry; use one or the other in a test process")
    with self.flags():
      self.module = importlib.import_module(module_name)  # the repo root is on pythonpath (pyproject)

  @contextlib.contextmanager
  def flags(self, *args):
    """Inside the block absl.flags.FLAGS is this launcher's registry as the script left it (its flags
    at their defaults) and sys.argv is [script] + args; the block's flag changes (the ``--config.*``
    override flags ml_collections defines while parsing, values) are dropped at its end."""
    from absl import flags
    d = flags.FLAGS.__dict__
    saved, argv = {k: d[k] for k in _FLAG_STATE}, sys.argv
    d.update(_copy_flag_state(self._state))
    sys.argv = [self.path] + list(args)  # ml_collections reads the overrides from sys.argv
    try:
      flags.FLAGS.unparse_flags()
      yield flags.FLAGS
    finally:
      if not self._loaded:
        self._state, self._loaded = _copy_flag_state({k: d[k] for k in _FLAG_STATE}), True
      d.update(saved)
      sys.argv = argv

  _loaded = False

  @contextlib.contextmanager
  def parsed(self, *args):
    """The launcher module with ``args`` parsed (every other flag at its default) inside the block."""
    with self.flags(*args) as fv:
      fv([self.path] + list(args))
      yield self.module

  def run(self, *args):
    """Runs the launcher with ``args``; returns ``.returncode`` (the SystemExit status), ``.stdout`` and
    ``.stderr``, like ``subprocess.run``."""
    from absl import app
    from optim4rl_tf.utils import cli
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    real_run, app.run = app.run, _app_run
    code = 0
    try:
      with self.flags(*args), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
          cli.run(self.module.main, argv=[self.path] + list(args))
        except SystemExit as e:
          code = 0 if e.code is None else e.code
    finally:
      app.run = real_run
      for s, h in handlers.items():
        signal.signal(s, h)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def launcher(name):
  """The in-process :class:`Launcher` of ``launch/NAME.py`` (loaded once per process)."""
  if name not in _LAUNCHERS:
    _LAUNCHERS[name] = Launcher(name)
  return _LAUNCHERS[name]
