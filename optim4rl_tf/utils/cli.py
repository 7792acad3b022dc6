"""Launcher plumbing: one-line errors with fixed exit codes instead of tracebacks, and signals.

  from optim4rl_tf.utils import cli

  def main(argv):
    ...
    cli.fail("what went wrong and what to change")       # prints "error: ...", exits 2

  if __name__ == "__main__":
    cli.run(main)                                        # instead of absl's app.run(main)

A command of the package (``optim4rl_tf.eval.reproduce``, ...) is two functions, ``define_flags(flag_values,
argv)`` and ``main(args, flag_values)``, so that one definition serves three callers:

  cli.run_command(reproduce.define_flags, reproduce.main)  # launch/reproduce.py, the optim4rl-reproduce script
  cli.call(reproduce.define_flags, reproduce.main, argv)    # in this process (tests): a fresh flags.FlagValues

What :func:`run` adds to ``absl.app.run``:

* Flag errors print ONE line ``error: ...`` on stderr and exit 2 (``EXIT_USAGE``): an unknown or misspelled
  ``--config.field`` (keeping ml_collections' "Did you mean" hint), a config file that is missing or whose
  ``get_config`` raises, a value that does not parse, an unknown flag, and ``app.UsageError`` from ``main``.
  (absl prints a traceback for the first two and exits 1 for the others.)
* SIGTERM raises :class:`Interrupted` -- a ``KeyboardInterrupt``, as SIGINT does -- in the main thread, so
  ``finally`` blocks run and trainers can write what they have computed. An interrupt that reaches
  :func:`run` prints one line and exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM), and so does any
  other exception that reaches it after a signal arrived (library code it interrupted may turn the
  ``Interrupted`` into another error). A second signal while the first is being handled ends the process at
  once (the default action).
* The exception is not raised where Python cannot pass it on: inside a garbage-collector callback or a
  ``__del__`` (Python prints "Exception ignored" and drops it) or inside the import machinery (a C caller of
  ``__import__`` turns it into a ``SystemError``). There the signal is recorded (:func:`pending_signal`) and
  raised at the first safe point after, checked every 20 ms by a ``SIGALRM`` timer.

Exit codes: 0 success, 2 usage or configuration error, 3 a training run diverged (launch/train.py),
130/143 interrupted.
"""

import atexit
import gc
import os
import signal
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class Interrupted(KeyboardInterrupt):
  """SIGTERM or SIGINT received (``signum``); ``reason`` is e.g. "interrupted by SIGTERM"."""

  def __init__(self, signum):
    self.signum = int(signum)
    self.reason = f"interrupted by {signal.Signals(signum).name}"
    super().__init__(self.reason)


def exit_code(interrupt):
  """128 + signal number for an :class:`Interrupted`, 130 (SIGINT) for a plain KeyboardInterrupt."""
  return 128 + getattr(interrupt, "signum", int(signal.SIGINT))


def fail(message, code=EXIT_USAGE):
  """Prints ``error: message`` (one line) to stderr and exits with ``code``. After :func:`run`'s handler received
  a signal, the error is that interruption (``error: interrupted by SIGX``, 128 + signal): the signal's
  exception, raised inside library code, can surface as an error a command reports as bad input."""
  if _raised:
    interrupt = Interrupted(_raised[0])
    message, code = interrupt.reason, exit_code(interrupt)
  text = " ".join(str(message).split("\n")).strip()
  print(f"error: {text}", file=sys.stderr, flush=True)
  sys.exit(code)


_raised = []  # the first signal received (at most one element)
_thrown = []  # its Interrupted has been raised
_RETRY_S = 0.02  # how often a signal received at an unsafe point retries


def _unsafe_to_raise(frame):
  """True while ``frame`` (the one a signal handler interrupted) runs where an exception cannot propagate to
  the program: a garbage-collector callback, a ``__del__``, or the import machinery (also below a C caller)."""
  callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
  while frame is not None:
    code = frame.f_code
    if code in callbacks or code.co_name == "__del__" or code.co_filename.startswith("<frozen importlib"):
      return True
    frame = frame.f_back
  return False


def _raise_when_safe(signum, frame):
  """Raises ``Interrupted(signum)`` in ``frame`` unless that is unsafe; then retries in ``_RETRY_S`` seconds."""
  if signal.getsignal(signum) is not _on_signal:  # a run took the signals over (take_pending_signal)
    return
  if _unsafe_to_raise(frame):
    signal.signal(signal.SIGALRM, _on_retry)
    signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
    return
  _thrown.append(signum)
  raise Interrupted(signum)


def _on_retry(signum, frame):
  del signum
  if _raised and not _thrown:
    _raise_when_safe(_raised[0], frame)


def _on_signal(signum, frame):
  if _raised:  # second signal: stop now
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _raised.append(signum)
  _raise_when_safe(signum, frame)


def _quiet_unraisable(previous):
  """An ``sys.unraisablehook`` that drops the interruption's exception (and errors it caused) after a signal."""

  def hook(unraisable):
    exc = unraisable.exc_value
    if _raised and (isinstance(exc, Interrupted) or isinstance(exc.__context__, Interrupted)):
      return
    previous(unraisable)

  hook.quiets_interrupts = True
  return hook


def pending_signal():
  """The signal :func:`run`'s handler has received in this process (None: none)."""
  return _raised[0] if _raised else None


def take_pending_signal():
  """:func:`pending_signal`, for a loop that takes the signals over (``run_lifecycle.deferred_signals``) and
  stops on it: an ``Interrupted`` still waiting for a safe point is no longer raised."""
  _cancel_retry()
  if _raised and not _thrown:
    _thrown.append(_raised[0])
  return pending_signal()


def _cancel_retry():
  """Disarms the retry timer (also at exit: Python restores SIGALRM's default action, which kills)."""
  if signal.getsignal(signal.SIGALRM) is _on_retry:
    signal.setitimer(signal.ITIMER_REAL, 0)


def install_signal_handlers():
  """SIGTERM and SIGINT raise :class:`Interrupted` in the main thread (the first one, at a safe point; a second
  kills). For launchers (:func:`run`): it sets the process's handlers and ``sys.unraisablehook``."""
  _raised.clear()
  _thrown.clear()
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _on_signal)
  atexit.unregister(_cancel_retry)
  atexit.register(_cancel_retry)
  if not getattr(sys.unraisablehook, "quiets_interrupts", False):
    sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


def _innermost(exc):
  """The message of ``exc``, unwrapping exceptions passed as the single argument of another
  (ml_collections raises ``AttributeError(KeyError(msg))``)."""
  while len(exc.args) == 1 and isinstance(exc.args[0], BaseException):
    exc = exc.args[0]
  if len(exc.args) == 1 and isinstance(exc.args[0], str):
    return exc.args[0]
  return str(exc)


def _one_line(text):
  return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _arg_for(argv, name):
  """The command-line argument that set flag ``name`` (``--name=value``), or ``--name``."""
  for i, arg in enumerate(argv):
    if arg == f"--{name}" and i + 1 < len(argv):
      return f"--{name}={argv[i + 1]}"
    if arg.startswith(f"--{name}="):
      return arg
  return f"--{name}"


def flag_error_message(exc, argv):
  """One line for an exception raised while parsing ``argv``."""
  if isinstance(exc, flags.Error):
    text = str(exc)
    if "Traceback (most recent call last)" in text:  # a config file's get_config raised
      head = text.split("Error whilst parsing config file", 1)[0].rstrip(": \n")
      last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
      text = f"{head}: the config file raised {last}"
    text = _one_line(text)
    return text[len("flag "):] if text.startswith("flag --") else text
  text = _innermost(exc)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if isinstance(exc, (KeyError, AttributeError)) and lines:  # override of a field the config lacks
    field = lines[0].strip("'\"")
    arg = next(
        (a.split("=", 1)[0] for a in argv[1:] if a.startswith("--") and field in a.split("=", 1)[0].split(".")[1:]),
        None)
    hint = " ".join(lines[1:])
    return (f"{arg or 'a --config override'}: the config has no field {field!r}" +
            (f"; {hint}" if hint else "; see the config file for the valid fields"))
  return f"{type(exc).__name__}: {_one_line(text)}"


def _config_load_errors(argv, flag_values):
  """ml_collections defers a config file's load failure (e.g. file not found) until the config is used;
  returns a one-line message for the first such flag of ``flag_values``, or None."""
  try:
    from ml_collections.config_flags import config_flags as cf  # pylint: disable=g-import-not-at-top
    error_type = cf._ErrorConfig  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None
  for name in sorted(set(flag_values)):
    value = flag_values[name].value
    if isinstance(value, error_type):
      err = object.__getattribute__(value, "_error")
      lines = [line.strip() for line in str(err).splitlines() if line.strip()]
      return f"{_arg_for(argv, name)}: cannot load the config file: {lines[-1] if lines else err}"
  return None


def parse_flags(argv, flag_values=None):
  """``flags_parser`` for ``app.run``: parses ``argv`` into ``flag_values`` (default absl's ``flags.FLAGS``)
  like absl, but any error is one line + exit 2. Returns the arguments left over (``argv[0]`` first)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    rest = flag_values(argv)
  except Exception as e:  # pylint: disable=broad-except   (absl Error, ml_collections KeyError, ...)
    fail(flag_error_message(e, argv))
  message = _config_load_errors(argv, flag_values)
  if message:
    fail(message)
  return rest


def _guarded(main, handle_signals):
  """``main(args)`` with one-line usage errors and interrupts (and, with ``handle_signals``, SIGTERM)."""

  def wrapped(args):
    if handle_signals:
      install_signal_handlers()
    try:
      return main(args)
    except app.UsageError as e:
      fail(str(e))
    except KeyboardInterrupt as e:
      print(f"error: {getattr(e, 'reason', 'interrupted by SIGINT')}", file=sys.stderr, flush=True)
      sys.exit(exit_code(e))
    except Exception:  # pylint: disable=broad-except
      # The signal's exception, raised inside library code (TensorFlow tracing, a generator's clean-up),
      # can come out as another exception: after a signal, still the interruption, in one line.
      if handle_signals and _raised:
        fail("")  # after a signal: the interruption's line and status (fail)
      raise

  return wrapped


def run(main, argv=None, handle_signals=True):
  """``absl.app.run(main)`` with :func:`parse_flags`, one-line usage errors and signal handling."""
  app.run(_guarded(main, handle_signals), argv=argv, flags_parser=parse_flags)


def run_command(define_flags, main, argv=None):
  """A command as a process (its launcher's ``__main__``, its console script): ``define_flags(flags.FLAGS,
  None)`` (None: ml_collections reads ``--config.*`` overrides from ``sys.argv``), then :func:`run` of
  ``main(args, flags.FLAGS)``. The command's flags are key flags of the main program, so ``--helpshort`` (and
  ``--help``) list them as they did when the launchers defined their own flags."""
  before = set(flags.FLAGS)
  define_flags(flags.FLAGS, None)
  for name in sorted(set(flags.FLAGS) - before):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  run(lambda args: main(args, flags.FLAGS), argv=argv)


def call(define_flags, main, argv):
  """A command in this process, as its process would run it but on a fresh ``flags.FlagValues`` (absl's
  global registry untouched) and without installing signal handlers: ``argv`` (``argv[0]`` the program) is
  parsed by :func:`parse_flags` (one line + exit 2 on an error), then ``main(args, flag_values)`` runs with
  :func:`run`'s one-line errors. Returns the exit status (0, or that of the ``SystemExit`` raised)."""
  argv = [str(a) for a in argv]
  flag_values = flags.FlagValues()
  try:
    define_flags(flag_values, argv)
    rest = parse_flags(argv, flag_values)
    code = _guarded(lambda args: main(args, flag_values), handle_signals=False)(rest)
  except SystemExit as e:
    code = e.code
  return 0 if code is None else code if isinstance(code, int) else 1


def config_argv(flag_values, name="config"):
  """The command line (``argv[0]`` first) from which the config file flag ``name`` of ``flag_values`` read its
  ``--name.<field>`` overrides: the ``argv`` its command's ``define_flags`` gave it (:func:`call`), else
  ``sys.argv`` (:func:`run_command`). A sweep forwards these overrides, as written, to every run."""
  argv = getattr(flag_values[name], "_sys_argv", None)  # ml_collections' _ConfigFlag(sys_argv=...)
  return list(sys.argv if argv is None else argv)


def define_config_flag(flag_values, argv, example, lock_config=True):
  """``--config=FILE[:VARIANT]`` (plus its ``--config.field=value`` overrides, read from ``argv``; None:
  ``sys.argv``) on ``flag_values``; ``example`` names a config file for the help text."""
  config_flags.DEFINE_config_file("config",
                                  None,
                                  f"Config file, e.g. {example}.",
                                  flag_values=flag_values,
                                  lock_config=lock_config,
                                  sys_argv=argv)


def check_config_and_workdir(argv, flag_values, example):
  """The usage checks of a command with ``--config`` and ``--workdir``: no positional arguments, both flags
  given (``example`` is the config file named in the error); app.UsageError otherwise."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if flag_values.config is None:
    raise app.UsageError(f"--config is required, e.g. --config={example}")
  if not flag_values.workdir:
    raise app.UsageError("--workdir is required")
