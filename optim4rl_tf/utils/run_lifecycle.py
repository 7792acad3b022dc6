"""One run's lifecycle, shared by every run loop: A2C (``agents/a2c_train.py``), PPO (``agents/ppo_train.py``),
meta-training (``meta/run.py``) and the supervised analysis (``analysis/supervised.py``)::

  prepare_workdir(workdir, console, warning)          # writable workdir (created); an optional warning printed
  logger = open_run(config, workdir)                  # config.json, tb/, returns.csv
  progress = make_progress(config, total, tag, num_seeds)
  sizer, timer = CallSizer(config), CallTimer()
  checkpoint = StateCheckpoint(workdir, "ppo", config, RESUMABLE_FIELDS)
  restored = checkpoint.load(initial_state)           # None, or the state and bookkeeping to resume from
  with deferred_signals() as stop:                    # SIGINT/SIGTERM recorded, the loop stops between calls
    try:
      while ...:
        k = sizer.take(steps_left); ...; timer.add(secs, k); sizer.record(secs, k)
        if stop(): raise interrupted(stop())
    except BaseException as e:
      status, error = outcome(e), e
  checkpoint.save(state, done, status, wall_secs)     # checkpoint.npz: resumes bit-identically
  save_params(workdir, labels, names, params)         # params.npz
  write_summary(workdir, status, summary, wall_secs, env_steps, planned_env_steps, error)   # summary.json

``summary.json`` has ONE schema for the four loops: ``status`` (one of :data:`STATUSES`: "finished",
"interrupted", "diverged", "failed"), ``summary`` (the one-line result), ``error`` (one line, or null),
``wall_secs``, ``env_steps`` and ``planned_env_steps`` (the run's progress in its own unit: env steps per seed for
the agents and meta-training, optimizer steps for the supervised analysis), then each loop's own fields.
Every file here is written atomically (a same-folder temp file, then ``os.replace``): a kill or a full disk
leaves the previous file whole. ``summary_status`` reads the status of older result folders too.

Shapes: ``labels`` are the seed labels of a run's S seeds; ``params`` a list of [S, ...] numpy arrays; a
checkpoint's ``state`` any ``tf.nest`` structure of tensors.
"""

import contextlib
import ctypes
import hashlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import workdir as workdir_lib

STATUSES = ("finished", "interrupted", "diverged", "failed")
SUMMARY_NAME = "summary.json"
PARAMS_NAME = "params.npz"
CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = 1

# ----- workdir, logger, progress -------------------------------------------------------------------------


def prepare_workdir(workdir, console=True, warning=None):
  """Checks that ``workdir`` is writable (created if needed); with ``console``, prints ``warning`` (e.g. an
  untrained learned optimizer) when there is one."""
  cc.check_writable_dir(workdir)
  if warning and console:
    print(f"WARNING: {warning}", flush=True)


def open_run(config, workdir):
  """Writes ``workdir/config.json`` and returns the run's :class:`optim4rl_tf.utils.logging.RunLogger`
  (``tb/``, ``returns.csv``)."""
  logging_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG_NAME), logging_lib.config_to_dict(config))
  return logging_lib.RunLogger(workdir)


def make_progress(config, total_steps, tag, num_seeds):
  """Console progress of ``total_steps`` env steps per seed, its rate counting the env steps of all
  ``num_seeds`` seeds."""
  return logging_lib.Progress(total_steps,
                              every_secs=float(config.console_every_secs),
                              prefix=tag,
                              rate_scale=num_seeds,
                              rate_label="env steps/s" + (" (all seeds)" if num_seeds > 1 else ""))


class CallSizer:
  """Training steps per call of a trainer's ``tf.function``: ``config.iterations_per_call``, or (0) one
  step first and then, when ``adaptive``, as many as take about ``config.chunk_secs`` (1 to 1000)."""

  def __init__(self, config, adaptive=True):
    self.config = config
    self.k = 1 if not config.iterations_per_call else int(config.iterations_per_call)
    self.adaptive = adaptive and not config.iterations_per_call

  def take(self, left):
    """Steps of the next call, with ``left`` steps still to run."""
    return min(self.k, left)

  def record(self, secs, k):
    """A call of ``k`` steps took ``secs``: sizes the next calls."""
    if self.adaptive:
      self.k = int(min(max(1, round(float(self.config.chunk_secs) / max(secs / k, 1e-6))), 1000))


class CallTimer:
  """Seconds and training steps of every call but the first (whose time includes tracing/compilation)."""

  def __init__(self):
    self.secs, self.steps, self._calls = 0.0, 0, 0

  def add(self, secs, steps):
    if self._calls:
      self.secs += secs
      self.steps += steps
    self._calls += 1

  def rate(self, env_steps_per_step):
    """Env steps per second of the timed calls, ``env_steps_per_step`` per training step (NaN if none)."""
    return self.steps * env_steps_per_step / self.secs if self.secs > 0 else float("nan")


# ----- signals and outcomes ------------------------------------------------------------------------------


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)):
  """While active, the first SIGINT/SIGTERM only records itself, so the loop stops between calls with a
  consistent state to save; a second one ends the process at once with the signal's default action (the last
  checkpoint is kept), as under :func:`optim4rl_tf.utils.cli.run`. Yields ``stop()`` -> the first signal number
  received, or None. Off the main thread (where Python cannot set handlers) it never reports one.

  "At once" holds even while the main thread is inside one long TensorFlow call (a meta-training iteration
  can take minutes), where Python runs no signal handler until the call returns: the signals also reach a
  watcher thread through ``signal.set_wakeup_fd``, and that thread ends the process on the second one.

  A signal that :func:`optim4rl_tf.utils.cli.run`'s handler received before the block counts as received
  (``cli.take_pending_signal``): its exception may still be waiting for a safe point, or have been caught and
  dropped by library code, and the run must still stop."""
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield lambda: None
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    if received:  # a second signal: force-quit
      _die_of(signum)
    received.append(signum)

  previous = {s: signal.signal(s, handler) for s in signums}
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  if cli.pending_signal() in signums:  # arrived before this block, its exception deferred or lost (cli)
    received.append(cli.take_pending_signal())
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  watcher = threading.Thread(target=_watch_signals, args=(read_fd, set(signums)), daemon=True)
  watcher.start()
  try:
    yield lambda: received[0] if received else None
  finally:
    signal.set_wakeup_fd(previous_fd)
    os.close(write_fd)  # the watcher reads end-of-file and returns
    watcher.join(timeout=5)
    for s, h in previous.items():
      signal.signal(s, h)


def _watch_signals(read_fd, signums):
  """Counts the signals written to the wakeup fd; ends the process on the second of ``signums``."""
  count = 0
  with os.fdopen(read_fd, "rb", buffering=0) as f:
    while True:
      try:
        data = f.read(64)
      except OSError:
        return
      if not data:
        return
      for signum in data:
        if signum in signums:
          count += 1
          if count >= 2:
            _die_of(signum)


def _die_of(signum):
  """Ends the process with ``signum``'s default action (from any thread: the C-level handler is reset
  through libc, since Python's ``signal.signal`` works only on the main thread)."""
  sys.stdout.flush()
  sys.stderr.flush()
  libc = ctypes.CDLL(None, use_errno=True)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
  libc.signal(signum, None)  # SIG_DFL
  os.kill(os.getpid(), signum)
  time.sleep(10)  # the signal is delivered before this returns
  os._exit(128 + signum)  # pylint: disable=protected-access


def interrupted(signum):
  """The exception a loop raises after ``stop()`` reported ``signum``: :class:`optim4rl_tf.utils.cli.Interrupted`
  (a KeyboardInterrupt; exit status 128 + signum in the launchers)."""
  return cli.Interrupted(signum)


def outcome(error, diverged=False):
  """The status of a run that ended with ``error`` (None: it ran to its end): "interrupted" for a
  KeyboardInterrupt (SIGINT/SIGTERM), "failed" for any other error, else "diverged" or "finished"."""
  if isinstance(error, KeyboardInterrupt):
    return "interrupted"
  if error is not None:
    return "failed"
  return "diverged" if diverged else "finished"


def describe_error(error):
  """One line for summary.json's ``error`` (None without one): the signal of an interrupt, else the type and
  first line of the message (an OSError's names the file and the errno, e.g. "No space left on device")."""
  if error is None:
    return None
  if isinstance(error, KeyboardInterrupt):
    return getattr(error, "reason", None) or "interrupted (SIGINT)"
  first = (str(error).strip().splitlines() or [""])[0]
  return f"{type(error).__name__}: {first}"[:500]


# ----- summary.json --------------------------------------------------------------------------------------


def write_summary(workdir, status, summary, wall_secs, env_steps, planned_env_steps=None, error=None, **fields):
  """Writes ``workdir/summary.json`` atomically in the one schema (module docstring) and returns its dict.
  ``fields``: the loop's own entries; ``error``: an exception (one line, :func:`describe_error`), a line or None."""
  if status not in STATUSES:
    raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
  out = dict(status=status,
             summary=str(summary),
             error=describe_error(error) if isinstance(error, BaseException) else error,
             wall_secs=float(wall_secs),
             env_steps=None if env_steps is None else int(env_steps),
             planned_env_steps=None if planned_env_steps is None else int(planned_env_steps),
             **fields)
  logging_lib.write_json(os.path.join(workdir, SUMMARY_NAME), out)
  return out


def read_summary(workdir):
  """The dict of ``workdir/summary.json``; {} when there is none or it cannot be read."""
  return workdir_lib.read_json_dict(os.path.join(workdir, SUMMARY_NAME)) or {}


def summary_status(summary):
  """The status (:data:`STATUSES`) a summary.json dict records, None for an empty one. Result folders written
  before the one schema: meta-training recorded ``diverged: true``, PPO ``aborted: true`` for a diverged run, and
  neither had a ``status`` for a finished one."""
  if not summary:
    return None
  if "status" in summary:
    return summary["status"]
  return "diverged" if summary.get("diverged") is True or summary.get("aborted") is True else "finished"


def outputs_to_rewrite(workdir):
  """For a finished run started again: True when its outputs were not all written (e.g. a full disk made it
  "failed" after its last checkpoint), so params.npz and summary.json are written again from the checkpoint."""
  return summary_status(read_summary(workdir)) not in ("finished", "diverged")


def finished_again(result, workdir, done, env_steps, rewrite, console):
  """The result of a finished run started again (``result``: its run function's finish, written again when
  ``rewrite``): raises the error that writing met, else records ``resumed_from`` = ``done`` and says so."""
  if result["error"] is not None:
    raise result["error"]
  del result["error"]
  result["resumed_from"] = done
  if console:
    print(f"workdir {workdir} already holds a finished run of this config (status {result['status']}, "
          f"{env_steps:,} env steps): " +
          ("its params.npz and summary.json are written again" if rewrite else "nothing to do") +
          f"\n{result['summary']}",
          flush=True)
  return result


# ----- params.npz ----------------------------------------------------------------------------------------


def write_npz(path, arrays):
  """``np.savez`` of the dict ``arrays`` into ``path``, atomically: on an OSError (disk full) the previous file
  is left whole and the error (one line naming ``path`` and the errno's reason) is raised."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  workdir_lib.atomic_write(path, buf.getvalue())


def save_params(workdir, labels, names, params, **extra):
  """``workdir/params.npz`` (atomic, :func:`write_npz`): ``seeds`` (the labels), each parameter [S, ...] under
  its name, then ``extra`` arrays."""
  write_npz(os.path.join(workdir, PARAMS_NAME), dict(seeds=np.array(labels), **dict(zip(names, params)), **extra))


def returns_arrays(runs):
  """{seed label: ([steps], [returns])} lists -> {seed label: (steps int64 [n], returns float64 [n])}."""
  return {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}


def finite_or_none(value):
  """None for a missing or non-finite number (JSON has no NaN), else the number."""
  return None if value is None or not math.isfinite(value) else value


def ci_fields(ci, finite_only=False):
  """summary.json's ``mean``, ``ci_low``, ``ci_high``, ``half_width`` of a :class:`stats.CI` (all None
  without one); ``finite_only``: None for a non-finite number."""
  if ci is None:
    return dict(mean=None, ci_low=None, ci_high=None, half_width=None)
  keep = finite_or_none if finite_only else (lambda v: v)
  return dict(mean=keep(ci.mean), ci_low=keep(ci.low), ci_high=keep(ci.high), half_width=keep(ci.half_width))


# ----- checkpoint.npz: resuming --------------------------------------------------------------------------


def file_digest(path):
  """sha256 of a file (hex), or None without one."""
  if not path:
    return None
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


class Restored(NamedTuple):
  """What :meth:`StateCheckpoint.load` found: the training ``state`` (the structure of the initial one),
  ``iterations`` done, ``wall_secs`` of the earlier sessions, and the loop's own bookkeeping (``meta``: the
  JSON part, ``arrays``: name -> numpy array)."""
  state: Any
  iterations: int
  wall_secs: float
  meta: dict
  arrays: dict


class StateCheckpoint:
  """``workdir/checkpoint.npz``: a run's whole training state (any ``tf.nest`` structure of tensors, saved
  leaf by leaf as ``state_<i>``), its iteration count and the loop's bookkeeping, written atomically
  (:func:`optim4rl_tf.utils.workdir.write_arrays`). Resuming from it continues bit-identically, since the
  trainers draw every random number from keys held in the state.

  ``kind`` names the loop ("a2c", "ppo"); ``resumable``: config fields that may differ on resume (the budget
  and bookkeeping); ``meta_params``: the learned optimizer's file (its sha256 is recorded: a changed file is
  refused)."""

  def __init__(self, workdir, kind, config, resumable=(), meta_params=None):
    self.workdir, self.kind, self.resumable = workdir, kind, tuple(resumable)
    self.path = os.path.join(workdir, CHECKPOINT_NAME)
    self.config = logging_lib.config_to_dict(config)
    self.digest = file_digest(meta_params)
    self.meta_params = meta_params
    self.saved_at = time.time()

  def age(self):
    """Seconds since the last save (or since this object was made)."""
    return time.time() - self.saved_at

  def save(self, state, iterations, status, wall_secs, arrays=None, **meta):
    """Writes the checkpoint: ``state`` after ``iterations`` iterations, the run's ``status`` so far,
    ``wall_secs`` of all its sessions, the loop's ``arrays`` (name -> array, not ``state_*``) and JSON ``meta``."""
    leaves = [np.asarray(x) for x in tf.nest.flatten(state)]
    out = {f"state_{i:04d}": x for i, x in enumerate(leaves)}
    out.update(arrays or {})
    head = dict(format=CHECKPOINT_FORMAT,
                agent=self.kind,
                config=self.config,
                meta_params_sha256=self.digest,
                iterations=int(iterations),
                status=status,
                wall_secs=float(wall_secs),
                state=[[list(x.shape), x.dtype.name] for x in leaves])
    head.update(meta)
    workdir_lib.write_arrays(self.path, out, head)
    self.saved_at = time.time()

  def load(self, init, console=True):
    """The :class:`Restored` checkpoint, with ``init`` (the fresh state) giving the structure; None when there
    is none or the workdir has no config.json (its outputs were cleared, e.g. by launch/train.py --overwrite:
    the run starts again and its first save replaces the stale file). One WorkdirError, changing nothing, for a
    damaged checkpoint, another kind or config, a changed ``meta_params`` file or a state of other shapes."""
    path = self.path
    if not os.path.exists(path):
      return None
    if not os.path.exists(os.path.join(self.workdir, workdir_lib.CONFIG_NAME)):
      if console:
        print(f"note: {path} is left from a run whose outputs were cleared; starting again", flush=True)
      return None
    arrays, meta = workdir_lib.read_arrays(path)
    if (meta.get("format") != CHECKPOINT_FORMAT or meta.get("agent") != self.kind or
        not isinstance(meta.get("config"), dict)):
      raise workdir_lib.WorkdirError(f"checkpoint {path} is not a {self.kind.upper()} checkpoint of this version "
                                     f"(format {meta.get('format')!r}); use a new --workdir")
    workdir_lib.check_config(self.workdir, self.config, ignore=self.resumable)
    workdir_lib.raise_if_different(self.workdir, meta["config"], self.config, ignore=self.resumable)
    if meta.get("meta_params_sha256") != self.digest:
      raise workdir_lib.WorkdirError(f"optimizer.meta_params {self.meta_params} changed since the checkpoint "
                                     f"{path} was written; use a new --workdir")
    leaves = tf.nest.flatten(init)
    spec = [[list(x.shape), x.dtype.name] for x in leaves]
    names = [f"state_{i:04d}" for i in range(len(leaves))]
    got = [[list(arrays[n].shape), arrays[n].dtype.name] if n in arrays else None for n in names]
    if meta.get("state") != spec or got != spec or f"state_{len(leaves):04d}" in arrays:
      raise workdir_lib.WorkdirError(f"checkpoint {path} does not fit this config (its training state has other "
                                     "shapes); use the config it was made with or a new --workdir")
    state = tf.nest.pack_sequence_as(init, [tf.constant(arrays.pop(n)) for n in names])
    try:
      done = int(meta["iterations"])
      wall = float(meta.get("wall_secs", 0.0))
    except (KeyError, TypeError, ValueError):
      raise workdir_lib.WorkdirError(f"checkpoint {path} is damaged (no iteration count); move it away to start "
                                     "again, or use a new --workdir") from None
    return Restored(state, done, wall, meta, arrays)
