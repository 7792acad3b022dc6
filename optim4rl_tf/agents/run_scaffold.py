"""The scaffold the agents' run functions share (:func:`optim4rl_tf.agents.a2c_train.train`,
:func:`optim4rl_tf.agents.ppo_train.train`), so that each reads as a short script::

  prepare_workdir(config, workdir, console)      # writable workdir; warns about an untrained learned optimizer
  logger = open_run(config, workdir)             # config.json, tb/, returns.csv
  progress = make_progress(config, total, tag, num_seeds)
  sizer, timer = CallSizer(config), CallTimer()
  while ...:                                     # the training loop, calls of k training steps
    k = sizer.take(steps_left)
    ...; state, metrics = trainer.run(state, k); ...
    timer.add(secs, k); sizer.record(secs, k)
  save_params(workdir, labels, names, params)    # params.npz
  ... ci_fields(ci), timer.rate(env_steps_per_step) ...   # summary.json

Shapes: ``labels`` are the seed labels of a run's S seeds; ``params`` a list of [S, ...] numpy arrays.
"""

import math
import os

import numpy as np

from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib


def prepare_workdir(config, workdir, console):
  """Checks that ``workdir`` is writable (created if needed); with ``console``, warns when a learned
  optimizer runs without ``optimizer.meta_params`` (an untrained, random phi)."""
  cc.check_writable_dir(workdir)
  if config.optimizer.name not in transforms.CLASSICAL and not config.optimizer.meta_params and console:
    print(f"WARNING: {config.optimizer.name} without optimizer.meta_params uses an untrained (random) phi")


def open_run(config, workdir):
  """Writes ``workdir/config.json`` and returns the run's :class:`optim4rl_tf.utils.logging.RunLogger`
  (``tb/``, ``returns.csv``)."""
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
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


def returns_arrays(runs):
  """{seed label: ([steps], [returns])} lists -> {seed label: (steps int64 [n], returns float64 [n])}."""
  return {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}


def save_params(workdir, labels, names, params, **extra):
  """``workdir/params.npz``: ``seeds`` (the labels), each parameter [S, ...] under its name, then
  ``extra`` arrays."""
  np.savez(os.path.join(workdir, "params.npz"), seeds=np.array(labels), **dict(zip(names, params)), **extra)


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
