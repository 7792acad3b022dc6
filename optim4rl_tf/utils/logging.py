"""Run logging shared by the trainers: TensorBoard scalars and HParams, returns.csv, config.json, console progress.

  logger = RunLogger(workdir)                      # creates workdir/tb, workdir/returns.csv
  logger.scalars(step, {LOSS_TOTAL: 0.3, ...})     # TensorBoard scalars of the aggregate run (tb/)
  logger.scalars(step, {EPISODE_RETURN: 0.5}, run=seed_run(3))   # ... of seed 3's run (tb/seed_3/)
  logger.hparams(flat_hparams(config), run=seed_run(3))          # the HParams dashboard's row of seed 3
  logger.returns(step, seed, value)                # one returns.csv row (step,seed,return)
  logger.close()

  progress = Progress(total_steps, every_secs=10)
  progress.update(step, {"return": 0.5})           # prints at most every every_secs (and at the end)

TensorBoard layout (``workdir/tb``): every seed of a multi-seed run is its own run ``tb/seed_<k>/`` (each task of a
meta-training ``tb/task_<name>/``) under the SAME tag names, so TensorBoard's run selector overlays them; the
aggregates over seeds (means over the healthy seeds) and the run-wide quantities (speed, memory, meta-gradient) are
the run ``tb/`` itself. The tag names are the constants below, used by A2C, PPO and meta-training alike (``TAGS``:
tag -> meaning).
"""

import csv
import io
import json
import math
import os
import resource
import sys
import time

import tensorflow as tf

try:
  import tensorboard  # noqa: F401  (tf.summary.scalar comes from it)
except ImportError as e:
  raise ImportError("the run logger (TensorBoard scalars) needs tensorboard, which the trainers use: "
                    "pip install 'optim4rl-tf[train]'") from e

from optim4rl_tf.utils import workdir as workdir_lib  # noqa: E402

# TensorBoard tag names, one per quantity, shared by every trainer.
EPISODE_RETURN = "episode/return"  # A2C: mean return of the episodes ended in an iteration; PPO: evaluation return
EPISODE_LENGTH = "episode/length"  # PPO: mean evaluation episode length
LOSS_TOTAL = "loss/total"
LOSS_ACTOR = "loss/actor"
LOSS_CRITIC = "loss/critic"
LOSS_ENTROPY = "loss/entropy"
POLICY_ENTROPY = "policy/entropy"
NORM_GRAD = "norm/grad"
NORM_UPDATE = "norm/update"
HEALTH_DIVERGED_SEEDS = "health/diverged_seeds"
SPEED_ENV_STEPS = "speed/env_steps_per_sec"
SPEED_ITERATIONS = "speed/iterations_per_sec"
MEMORY_PEAK_RSS = "memory/peak_rss_gb"
OPTIMIZER_UPDATE_ABS_MEAN = "optimizer/update_abs_mean"
META_LOSS = "meta/loss"
META_GRAD_NORM = "meta/grad_norm"
META_APPLIED = "meta/applied"
META_PHI_NORM = "meta/phi_norm"
FINAL_RETURN = "final/return"
FINAL_ENV_STEPS = "final/env_steps_per_sec"

TAGS = {
    EPISODE_RETURN: "episode return (A2C: episodes ended in the iteration; PPO: evaluation; meta: the task's agents)",
    EPISODE_LENGTH: "evaluation episode length (PPO)",
    LOSS_TOTAL: "agent loss",
    LOSS_ACTOR: "policy-gradient (A2C) / clipped surrogate (PPO) loss",
    LOSS_CRITIC: "value loss",
    LOSS_ENTROPY: "entropy loss term",
    POLICY_ENTROPY: "policy entropy",
    NORM_GRAD: "global norm of the agent gradient",
    NORM_UPDATE: "global norm of the optimizer's update",
    HEALTH_DIVERGED_SEEDS: "number of diverged (frozen) seeds",
    SPEED_ENV_STEPS: "env steps per second, all seeds (or tasks) together",
    SPEED_ITERATIONS: "iterations per second (A2C iterations, PPO training steps, meta outer iterations)",
    MEMORY_PEAK_RSS: "peak resident memory of the process, GB",
    OPTIMIZER_UPDATE_ABS_MEAN: "mean |update| of the learned optimizer (meta-training)",
    META_LOSS: "meta-loss (tb/: sum over tasks)",
    META_GRAD_NORM: "global norm of the meta-gradient",
    META_APPLIED: "1 if the meta-update was applied (0: skipped as non-finite)",
    META_PHI_NORM: "global norm of the meta-parameters phi",
    FINAL_RETURN: "final performance (A2C: mean of the last 20 logged returns; PPO: of the last evaluations)",
    FINAL_ENV_STEPS: "env steps per second of the whole run (written once, at the end)",
}

# Per-task metric names of the meta-trainers -> tags of the task's run (tb/task_<name>/); others keep their name
# under "task/".
META_TASK_TAGS = {
    "agent_return": EPISODE_RETURN,
    "agent_reward_per_step": "episode/reward_per_step",
    "meta_loss": META_LOSS,
    "meta_value_loss": "meta/value_loss",
    "meta_entropy": "meta/entropy",
    "update_abs_mean": OPTIMIZER_UPDATE_ABS_MEAN,
    "entropy": POLICY_ENTROPY,
    "episodes": "episode/count",
    "inner_loss": LOSS_TOTAL,
    "inner_value_loss": LOSS_CRITIC,
    "inner_entropy": POLICY_ENTROPY,
    "inner_update_norm": NORM_UPDATE,
    "inner_reward_per_step": "episode/inner_reward_per_step",
    "params_ok": "health/params_ok",
}
# meta_metrics.csv / progress_fn names of the run-wide meta-training values (kept as before for the readers
# of meta_metrics.csv) -> tag.
META_RUN_TAGS = {
    "speed/outer_it_per_sec": SPEED_ITERATIONS,
    SPEED_ENV_STEPS: SPEED_ENV_STEPS,
    MEMORY_PEAK_RSS: MEMORY_PEAK_RSS,
}


def seed_run(label):
  """The TensorBoard run (sub-directory of tb/) of seed ``label``."""
  return f"seed_{int(label)}"


def task_run(name):
  """The TensorBoard run (sub-directory of tb/) of a meta-training task."""
  return f"task_{name}"


def peak_rss_gb():
  """Peak resident set size of this process in GB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def meta_scalars(values, task_names):
  """A meta-training iteration's values ({"<task>/<metric>": v, "meta/...": v, "speed/...": v, ...}) ->
  (scalars of tb/, {task run: scalars}): per-task metrics under the tags of ``META_TASK_TAGS`` in their task's
  run; tb/ gets the run-wide values and ``META_LOSS`` summed over the tasks."""
  top, runs = {}, {}
  tasks = set(task_names)
  for key, v in values.items():
    head, _, metric = key.partition("/")
    if head in tasks and metric:
      runs.setdefault(task_run(head), {})[META_TASK_TAGS.get(metric, f"task/{metric}")] = v
    else:
      top[META_RUN_TAGS.get(key, key)] = v
  losses = [r[META_LOSS] for r in runs.values() if META_LOSS in r]
  if losses:
    top[META_LOSS] = float(sum(float(x) for x in losses))
  return top, runs


def flat_hparams(config, extra=None, exclude=()):
  """A config (ConfigDict or dict, nested) -> flat {dotted name: bool | int | float | str} for the TensorBoard
  HParams plugin: sequences of scalars become one string (``optimizer.mlp_dims: "(16, 16)"``), lists of dicts
  are numbered (``tasks.0.env_name``), None is "None"; top-level fields in ``exclude`` (bookkeeping) are left
  out, ``extra`` (e.g. the seed) is added last."""
  out = {}

  def visit(prefix, v):
    if hasattr(v, "to_dict"):
      v = v.to_dict()
    if isinstance(v, dict):
      for k in sorted(v, key=str):
        visit(f"{prefix}.{k}" if prefix else str(k), v[k])
    elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) or hasattr(x, "to_dict") for x in v):
      for i, x in enumerate(v):
        visit(f"{prefix}.{i}", x)
    elif isinstance(v, (list, tuple)):
      out[prefix] = str(tuple(v))
    elif isinstance(v, (bool, int, float, str)):
      out[prefix] = v
    elif hasattr(v, "item"):  # numpy scalars
      out[prefix] = v.item()
    else:
      out[prefix] = str(v)

  if hasattr(config, "to_dict"):
    config = config.to_dict()
  visit("", {k: v for k, v in config.items() if k not in exclude})
  out.update(extra or {})
  return out


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
  so a killed run keeps all rows produced so far. ``append``: the file holds its header and rows already (a
  resumed run, :meth:`text`)."""

  HEADER = ("step", "seed", "return")

  def __init__(self, path, append=False):
    self.path = path
    self._f = open(path, "a" if append else "w", newline="", buffering=1)
    self._w = csv.writer(self._f)
    if not append:
      self._w.writerow(self.HEADER)

  @classmethod
  def text(cls, rows):
    """The file's text holding ``rows`` ((step, seed, return) in order), as :meth:`write` writes them."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(cls.HEADER)
    for step, seed, value in rows:
      w.writerow((int(step), int(seed), repr(float(value))))
    return out.getvalue()

  def write(self, step, seed, value):
    self._w.writerow((int(step), int(seed), repr(float(value))))

  def flush(self):
    self._f.flush()

  def close(self):
    if not self._f.closed:
      self._f.close()


class RunLogger:
  """TensorBoard writers (``workdir/tb`` and its runs ``workdir/tb/<run>``) + returns.csv
  (``workdir/returns.csv``). A run's writer is created at its first use and kept until :meth:`close`."""

  def __init__(self, workdir, tb_subdir="tb", returns_csv="returns.csv"):
    self.workdir = workdir
    self.tb_dir = os.path.join(workdir, tb_subdir)
    self.writer = tf.summary.create_file_writer(self.tb_dir)
    self._writers = {None: self.writer}
    self.csv = ReturnsCSV(os.path.join(workdir, returns_csv)) if returns_csv else None

  def run_writer(self, run=None):
    """The writer of run ``run`` (``tb/<run>``; None: ``tb/`` itself)."""
    w = self._writers.get(run)
    if w is None:
      w = self._writers[run] = tf.summary.create_file_writer(os.path.join(self.tb_dir, run))
    return w

  def scalars(self, step, values, run=None):
    """Writes a dict {tag: float} at ``step`` into run ``run`` (None: tb/ itself; non-finite values are written
    too: they flag a problem)."""
    if not values:
      return
    with self.run_writer(run).as_default(step=int(step)):
      for k, v in values.items():
        tf.summary.scalar(k, float(v))

  def run_scalars(self, step, per_run):
    """{run: {tag: float}} at ``step``: e.g. every seed's scalars of one logging step."""
    for run, values in per_run.items():
      self.scalars(step, values, run=run)

  def hparams(self, hparams, run=None):
    """Writes the TensorBoard HParams plugin's summary (``hp.hparams``) of run ``run``: one row of the HParams
    dashboard, whose metric columns are the run's scalar tags (e.g. ``FINAL_RETURN``)."""
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel
    with self.run_writer(run).as_default():
      hp.hparams(hparams)

  def returns(self, step, seed, value):
    self.csv.write(step, seed, value)

  def flush(self):
    for w in self._writers.values():
      w.flush()
    if self.csv:
      self.csv.flush()

  def close(self):
    for w in self._writers.values():
      w.close()
    if self.csv:
      self.csv.close()


def log_final(logger, step, env_steps_per_sec, mean_return=None, run_returns=None):
  """Writes a run's final metrics at ``step`` (the HParams dashboard's metric columns): ``FINAL_ENV_STEPS`` and
  ``FINAL_RETURN`` (``mean_return``) in tb/, and in every run of ``run_returns`` ({run: final return}) its
  return and the run's env steps/s. Non-finite or None returns are left out."""
  ok = lambda x: x is not None and math.isfinite(float(x))
  for run, ret in (run_returns or {}).items():
    values = {FINAL_ENV_STEPS: env_steps_per_sec}
    if ok(ret):
      values[FINAL_RETURN] = ret
    logger.scalars(step, values, run=run)
  top = {FINAL_ENV_STEPS: env_steps_per_sec}
  if ok(mean_return):
    top[FINAL_RETURN] = mean_return
  logger.scalars(step, top)


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
