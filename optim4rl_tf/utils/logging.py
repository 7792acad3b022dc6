"""Run logging shared by the trainers: TensorBoard scalars, returns.csv, config.json, console progress.

  logger = RunLogger(workdir)                      # creates workdir/tb, workdir/returns.csv
  logger.scalars(step, {"loss/total": 0.3, ...})   # TensorBoard scalars (floats)
  logger.returns(step, seed, value)                # one returns.csv row (step,seed,return)
  logger.close()

  progress = Progress(total_steps, every_secs=10)
  progress.update(step, {"return": 0.5})           # prints at most every every_secs (and at the end)
"""

import csv
import json
import math
import os
import sys
import time

import tensorflow as tf

try:
  import tensorboard  # noqa: F401  (tf.summary.scalar comes from it)
except ImportError as e:
  raise ImportError("the run logger (TensorBoard scalars) needs tensorboard, which the trainers use: "
                    "pip install 'optim4rl-tf[train]'") from e

from optim4rl_tf.utils import workdir as workdir_lib  # noqa: E402


def write_json(path, obj):
  """Writes ``obj`` as JSON atomically (:func:`optim4rl_tf.utils.workdir.atomic_write`): a kill mid-write
  keeps the old file."""
  workdir_lib.atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def config_to_dict(config):
  """ml_collections ConfigDict (or plain dict) -> plain dict for JSON."""
  if hasattr(config, "to_dict"):
    return config.to_dict()
  return dict(config)


class ReturnsCSV:
  """Appends ``step,seed,return`` rows. Line-buffered: every row is in the file as soon as it is written,
  so a killed run keeps all rows produced so far."""

  HEADER = ("step", "seed", "return")

  def __init__(self, path):
    self.path = path
    self._f = open(path, "w", newline="", buffering=1)
    self._w = csv.writer(self._f)
    self._w.writerow(self.HEADER)

  def write(self, step, seed, value):
    self._w.writerow((int(step), int(seed), repr(float(value))))

  def flush(self):
    self._f.flush()

  def close(self):
    if not self._f.closed:
      self._f.close()


class RunLogger:
  """TensorBoard writer (``workdir/tb``) + returns.csv (``workdir/returns.csv``)."""

  def __init__(self, workdir, tb_subdir="tb", returns_csv="returns.csv"):
    self.workdir = workdir
    self.writer = tf.summary.create_file_writer(os.path.join(workdir, tb_subdir))
    self.csv = ReturnsCSV(os.path.join(workdir, returns_csv)) if returns_csv else None

  def scalars(self, step, values):
    """Writes a dict {tag: float} at ``step`` (non-finite values are written too: they flag a problem)."""
    with self.writer.as_default(step=int(step)):
      for k, v in values.items():
        tf.summary.scalar(k, float(v))

  def returns(self, step, seed, value):
    self.csv.write(step, seed, value)

  def flush(self):
    self.writer.flush()
    if self.csv:
      self.csv.flush()

  def close(self):
    self.writer.close()
    if self.csv:
      self.csv.close()


def format_duration(secs):
  if secs is None or not math.isfinite(secs):
    return "?"
  secs = int(round(secs))
  h, rem = divmod(secs, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Console progress: step/total, user values, steps/s and ETA, at most every ``every_secs`` seconds.

  The rate is measured from the first :meth:`update` (which usually follows graph compilation), so
  compilation time does not distort the ETA.
  """

  def __init__(self, total_steps, every_secs=10.0, stream=None, prefix="", rate_scale=1.0, rate_label="steps/s"):
    """rate_scale multiplies the printed rate (e.g. the number of seeds, when ``step`` counts the env
    steps of one seed but the rate should count all env steps); the ETA uses the unscaled rate."""
    self.rate_scale = float(rate_scale)
    self.rate_label = rate_label
    self.total = int(total_steps)
    self.every = float(every_secs)
    self.stream = stream or sys.stdout
    self.prefix = prefix
    self._t_start = time.time()
    self._t_ref = None
    self._step_ref = 0
    self._last_print = -math.inf
    self.rate = float("nan")

  def update(self, step, values=None, force=False):
    now = time.time()
    if self._t_ref is None:
      self._t_ref, self._step_ref = now, step
    elif now > self._t_ref:
      self.rate = (step - self._step_ref) / (now - self._t_ref)
    if not force and now - self._last_print < self.every and step < self.total:
      return False
    self._last_print = now
    eta = (self.total - step) / self.rate if self.rate and self.rate > 0 else float("nan")
    parts = [f"{self.prefix}step {step:,}/{self.total:,} ({100.0 * step / max(self.total, 1):.0f}%)"]
    for k, v in (values or {}).items():
      parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    parts.append(
        f"{self.rate * self.rate_scale:,.0f} {self.rate_label}" if math.isfinite(self.rate) else f"- {self.rate_label}")
    parts.append(f"elapsed {format_duration(now - self._t_start)}")
    parts.append(f"ETA {format_duration(eta)}")
    print(" | ".join(parts), file=self.stream, flush=True)
    return True
