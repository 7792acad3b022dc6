"""A meta-training run as users launch it: config checks, logs, progress, outputs.

  result = meta_train(config, workdir)     # resumes from workdir/checkpoints if present

The one entry for every meta-training config (``launch/meta_train.py``; ``launch/train.py`` forwards MetaPPO
configs here): configs/meta_a2c.py (MetaA2C on gridworlds) and configs/ppo.py ``meta_*`` (MetaPPO on Brax),
told apart by ``registry.meta_agent``. ``validate_config`` checks either kind, ``trainer.MetaTrainer`` builds
its inner problems (``trainer.build``).

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard: meta-loss, meta-gradient
norm, per-task agent returns, statistics of the learned optimizer's updates, outer iterations/s, env
steps/s, peak RSS), ``meta_metrics.csv`` (one row per outer iteration), ``checkpoints/`` (every
``checkpoint_every`` iterations), ``phi.npz`` (the meta-parameters, readable by
``optim4rl_tf.Optim4RL(meta_params=...)``), ``meta_state.npz`` (phi, meta-Adam and the counters without the
agents: a few KB that carry a run to another machine, see :mod:`optim4rl_tf.meta.trainer`) and
``summary.json``.

A workdir is locked while a run uses it (a second process is refused) and resumed only with the config it
was made with (fields in ``RESUMABLE_FIELDS``, the budget and bookkeeping, may change). On resume,
``meta_metrics.csv`` and the TensorBoard event files lose the rows/steps after the restored iteration, so
redone iterations appear once. SIGINT/SIGTERM stop the run after the current outer iteration, which is
saved (``trainer.Interrupted``; exit status 130/143 in the launchers). The signals, summary.json's schema
(``status`` finished | interrupted | diverged | failed, written also when the run stops early) and atomic writes
are the run lifecycle shared with the A2C/PPO runs (:mod:`optim4rl_tf.utils.run_lifecycle`).
"""

import contextlib
import csv
import io
import json
import os
import resource
import time

from optim4rl_tf import pretrained
from optim4rl_tf.meta import registry
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import workdir as workdir_lib

# Config fields that may differ when a workdir is resumed: the budget, bookkeeping, memory layout
# (chunking changes float rounding only) and labels; ``num_units`` is recorded per task (tasks[i].num_units).
RESUMABLE_FIELDS = ("num_iterations", "train_steps", "checkpoint_every", "log_every", "max_nonfinite", "chunk_size",
                    "sweep", "num_units")


def peak_rss_gb():
  """Peak resident set size of this process in GB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# Fields where a value <= 0 switches something off (clipping, normalisation) and any finite value is valid; NaN
# would switch it off silently (``x > 0`` is False), so NaN and +-inf are refused.
_FINITE_FIELDS = ("meta_grad_clip", "meta_grad_norm", "max_norm", "agent_grad_clip", "grad_clip")
# Loss weights: a NaN weight made every meta-loss NaN, so every iteration was skipped and the run exited 0.
_WEIGHT_FIELDS = ("critic_weight", "entropy_weight", "entropy_cost")


def check_meta_fields(config):
  """Checks shared by every meta-training config (MetaA2C and MetaPPO): seed, budget, meta-optimizer and
  its clipping, loss weights, returns, checkpoints, NaN guard, pipeline and the optional starting phi.
  Each bad value is one ValueError naming the field and the value."""
  cc.check_seed(config.seed, 1)  # phi and every unit's RNG keys are int32: [0, 2**31 - 1]
  cc.check_nonnegative_int("num_iterations", config.num_iterations)  # 0: from train_steps
  if int(config.num_iterations) == 0:
    cc.check_positive("train_steps", config.train_steps)
  for name in _FINITE_FIELDS:
    if name in config:
      cc.check_finite(name, config[name])
  for name in _WEIGHT_FIELDS:
    if name in config:
      cc.check_nonnegative(name, config[name])
  cc.check_positive("meta_lr", config.meta_lr)
  cc.check_unit_interval("discount", config.discount)
  cc.check_unit_interval("gae_lambda", config.gae_lambda)
  cc.check_positive_int("checkpoint_every", config.checkpoint_every)
  cc.check_positive_int("max_nonfinite", config.max_nonfinite)
  cc.check_choice("nonfinite", trainer_lib.nonfinite_policy(config), trainer_lib.NONFINITE_POLICIES)
  if config.pipeline:
    cc.check_positive_int("reset_interval", config.reset_interval)
  if config.optimizer.init_meta_params:  # a path, or "pretrained:NAME" for a shipped file
    try:
      start = pretrained.file_of(config.optimizer.init_meta_params)
    except ValueError as e:
      raise ValueError(f"optimizer.init_meta_params: {e}") from None
    cc.check_file("optimizer.init_meta_params", start)


def validate_config(config):
  """Any meta-training config (MetaA2C or MetaPPO, ``registry.meta_agent``): one clear ValueError per bad
  field, before anything is built, and for a MetaA2C config one for a size this machine's memory cannot hold
  (``memory_estimate.check``, called by MetaA2C's registration); returns the number of outer iterations."""
  entry = registry.lookup(config)  # ValueError for a config of another trainer
  check_meta_fields(config)
  # The config's own checks (``registry.Registration.validate``); MetaA2C's end with ``memory_estimate.check``.
  return entry.validate(config)


def plain(obj):
  """ConfigDict / dict / list (with ConfigDicts inside lists) -> JSON-ready plain Python."""
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, dict):
    return {k: plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [plain(v) for v in obj]
  return obj


# Fields added after runs were recorded, with the value that keeps the older behaviour: left out of the
# recorded config at that value, so older config.json files and pretrained provenance still match.
LEGACY_DEFAULTS = {"nonfinite": "skip"}


def resolved_config(config):
  """The config as recorded in config.json: plain dict, each task's num_units the number actually used
  (fields of ``LEGACY_DEFAULTS`` at their legacy value left out)."""
  out = plain(config)
  for key, value in LEGACY_DEFAULTS.items():
    if out.get(key, value) == value:
      out.pop(key, None)
  return registry.lookup(config).resolve_config(config, out)


def _yaml_scalars(text):
  """``key: value`` lines (how ml_collections prints a flat ConfigDict) -> dict of numbers/strings."""
  out = {}
  for line in text.splitlines():
    key, sep, value = line.partition(":")
    if not sep:
      continue
    value = value.strip()
    for parse in (int, float):
      try:
        out[key.strip()] = parse(value)
        break
      except ValueError:
        pass
    else:
      out[key.strip()] = value.strip("'\"")
  return out


def _upgrade_old_config(old):
  """config.json of older versions stored tasks as YAML strings with unresolved num_units."""
  tasks = old.get("tasks")
  if isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks):
    old = dict(old, tasks=[_yaml_scalars(t) for t in tasks])
    units = old.get("num_units", 0)
    for t in old["tasks"]:
      if isinstance(t, dict) and isinstance(units, int) and units > 0:
        t["num_units"] = units
  for key, value in LEGACY_DEFAULTS.items():  # recorded at the legacy value by a version that had the field
    if old.get(key, value) == value:
      old = {k: v for k, v in old.items() if k != key}
  return old


def prepare_workdir(workdir, config_dict, ignore=RESUMABLE_FIELDS):
  """Refuses a workdir made with another config, or one with checkpoints but no config.json to check them
  against (WorkdirError), after removing temp files a killed run left (``workdir_lib.remove_stale_temps``).
  Writes nothing else: :func:`record_config` records the config once the run is known to start. Call it while
  holding ``workdir_lib.lock(workdir)``."""
  workdir_lib.remove_stale_temps(workdir)
  path = os.path.join(workdir, workdir_lib.CONFIG_NAME)
  if not os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(
      os.path.join(workdir, "checkpoints")):
    raise workdir_lib.WorkdirError(
        f"workdir {workdir} holds checkpoints but no {workdir_lib.CONFIG_NAME}, so nothing says which config they "
        f"come from; put its {workdir_lib.CONFIG_NAME} back or use a new --workdir")
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = None
    if isinstance(old, dict):
      workdir_lib.raise_if_different(workdir, _upgrade_old_config(old), config_dict, ignore)
    else:
      workdir_lib.check_config(workdir, config_dict, ignore)  # raises the unreadable-config error


def record_config(workdir, config_dict, done, total):
  """Writes config.json (atomically) for a run that starts at iteration ``done`` of ``total``; refuses
  (WorkdirError, writing nothing) a ``total`` below the iterations the workdir already holds, whose phi.npz
  the new config.json would no longer describe."""
  if done > total:
    raise workdir_lib.WorkdirError(
        f"workdir {workdir} already holds {done} outer iterations, more than num_iterations={total}; give "
        f"--config.num_iterations={done} or more to continue it, or use a new --workdir")
  workdir_lib.atomic_write(os.path.join(workdir, workdir_lib.CONFIG_NAME),
                           json.dumps(config_dict, indent=2, sort_keys=True, default=str))


class _MetricsCSV:
  """meta_metrics.csv: one row per outer iteration (columns fixed by the first row)."""

  def __init__(self, path):
    self.path = path
    self.columns = None
    if os.path.exists(path):
      with open(path) as f:
        header = f.readline().strip()
      self.columns = header.split(",") if header else None

  def truncate(self, last_iteration):
    """Drops rows after ``last_iteration`` (and a partial last row), so redone iterations appear once."""
    if not os.path.exists(self.path):
      return
    with open(self.path, newline="") as f:
      rows = list(csv.reader(f))
    if not rows:
      return
    header, kept = rows[0], [rows[0]]
    for row in rows[1:]:
      try:
        if len(row) == len(header) and int(float(row[0])) <= last_iteration:
          kept.append(row)
      except ValueError:
        pass
    if len(kept) != len(rows):
      out = io.StringIO()
      csv.writer(out).writerows(kept)
      workdir_lib.atomic_write(self.path, out.getvalue())

  def write(self, row):
    new = self.columns is None
    if new:
      self.columns = list(row)
    with open(self.path, "a", newline="") as f:
      w = csv.writer(f)
      if new:
        w.writerow(self.columns)
      w.writerow([row.get(c, "") for c in self.columns])


def meta_train(config, workdir, console=True, progress_fn=None, workers=None):
  """Meta-trains (or resumes) with any meta-training config and returns a dict: phi_path, iterations,
  skipped, it_per_sec, env_steps_per_sec, peak_rss_gb, wall_secs, num_workers (``drive``).

  ``workers`` (``workers.Workers``, from ``TF_CONFIG``): this process is one of W workers, each with its
  share of the units; the chief does all of the above, the others (:func:`follow`) write nothing."""
  total = validate_config(config)
  if workers is not None and not workers.is_chief:
    return follow(config, workdir, workers)
  cc.check_writable_dir(workdir)
  entry = registry.lookup(config)
  with workdir_lib.lock(workdir):
    config_dict = resolved_config(config)
    prepare_workdir(workdir, config_dict)
    message = entry.building_message(config)
    if console and message:
      print(message, flush=True)
    trainer = trainer_lib.MetaTrainer(config, workdir, workers=workers)
    record_config(workdir, config_dict, int(trainer.iteration.numpy()), total)
    steps_per_it = entry.env_steps_per_iteration(config, trainer.problems)
    shown_keys, prefix = entry.console, entry.prefix(config, trainer.problems)
    names = [p.name for p in trainer.problems]

    def shown(metrics):
      out = {f"{name} {label}": metrics[f"{name}/{key}"] for name in names for label, key in shown_keys.items()}
      out.update({"meta-loss": sum(metrics[f"{name}/meta_loss"] for name in names), "RSS GB": round(peak_rss_gb(), 2)})
      return out

    return drive(trainer,
                 workdir,
                 total,
                 steps_per_it,
                 shown,
                 prefix=prefix,
                 log_every=max(int(config.get("log_every", 1)), 1),
                 console=console,
                 progress_fn=progress_fn)


def follow(config, workdir, workers):
  """A worker other than the chief: the chief's run on its own share of the units, writing nothing (it
  reads the workdir's config and checkpoints). Returns {"iterations", "worker"}."""
  path = os.path.join(workdir, workdir_lib.CONFIG_NAME)
  if os.path.exists(path):  # the chief refuses a workdir of another config; so does this worker, read-only
    with open(path) as f:
      old = json.load(f)
    workdir_lib.raise_if_different(workdir, _upgrade_old_config(old), resolved_config(config), RESUMABLE_FIELDS)
  trainer = trainer_lib.MetaTrainer(config, workdir, workers=workers)
  with run_lifecycle.deferred_signals() as stop_fn:
    trainer.train(stop_fn=stop_fn)
  return {"iterations": int(trainer.iteration.numpy()), "worker": workers.index}


def drive(trainer, workdir, total, steps_per_it, shown, prefix="meta ", log_every=1, console=True, progress_fn=None):
  """Runs a built ``MetaTrainer`` (MetaA2C or MetaPPO) to ``total`` iterations with logging: TensorBoard
  and ``meta_metrics.csv`` every ``log_every`` iterations (plus speed and peak RSS), console progress
  showing ``shown(metrics)``, ``progress_fn(t, metrics)``; writes ``summary.json`` and returns its dict
  (phi_path, iterations, skipped, it_per_sec and env_steps_per_sec measured as the console's rate, from the
  first completed iteration on, first_iteration_secs (graph building and compilation included), peak_rss_gb,
  wall_secs, nonfinite, diverged; and the schema's status, summary, error, env_steps, planned_env_steps:
  :func:`optim4rl_tf.utils.run_lifecycle.write_summary`). With ``nonfinite="stop"`` a divergence writes
  summary.json (status "diverged", ``diverged: true``, ``diverged_at``: the iteration, ``phi_path``: null) and
  re-raises :class:`trainer.Diverged`; an interruption (status "interrupted", after the trainer saved) or an error
  ("failed") writes it too and is re-raised."""
  start_it = int(trainer.iteration.numpy())
  table = _MetricsCSV(os.path.join(workdir, "meta_metrics.csv"))
  table.truncate(start_it)
  # tb/ and the tasks' runs tb/task_<name>; the HParams summary is written again (tags: utils/logging.py).
  workdir_lib.truncate_tensorboard(os.path.join(workdir, "tb"), start_it, drop_hparams=True)
  logger = logging_lib.RunLogger(workdir, returns_csv=None)
  logger.hparams(
      logging_lib.flat_hparams(resolved_config(trainer.config), {"agent": registry.meta_agent(trainer.config)},
                               exclude=("sweep", "checkpoint_every", "log_every", "chunk_size")))
  task_names, last_runs = [p.name for p in trainer.problems], {}
  progress = logging_lib.Progress(
      total, every_secs=10.0, prefix=prefix, rate_scale=steps_per_it, rate_label="env steps/s") if console else None
  if console and start_it:
    how = (f" from {trainer_lib.META_STATE_NAME} (no checkpoint): phi and meta-Adam restored, the agents start "
           "fresh" if trainer.resumed_from_meta_state else "")
    print(f"resuming {workdir} at outer iteration {start_it}/{total}{how}", flush=True)
  t0 = time.time()
  last = {"t": time.time(), "it": start_it}
  first = {}  # the time and iteration of the first completed iteration (after graph compilation)

  def on_iteration(t, metrics):
    now = time.time()
    if not first:
      first.update(t=now, it=t)
    it_per_sec = (t - last["it"]) / max(now - last["t"], 1e-9)
    last.update(t=now, it=t)
    values = dict(metrics)
    values.update({
        "speed/outer_it_per_sec": it_per_sec,
        "speed/env_steps_per_sec": it_per_sec * steps_per_it,
        "memory/peak_rss_gb": peak_rss_gb()
    })
    if t % log_every == 0 or t == total:
      top, runs = logging_lib.meta_scalars(values, task_names)
      logger.scalars(t, top)
      logger.run_scalars(t, runs)
      last_runs.update(t=t, runs=runs)
      table.write({"iteration": t, **values})
    if progress is not None:
      progress.update(t, shown(metrics))
    if progress_fn is not None:
      progress_fn(t, values)

  error = None
  try:
    with run_lifecycle.deferred_signals() as stop_fn:
      trainer.train(on_iteration, stop_fn=stop_fn)
  except (KeyboardInterrupt, Exception) as e:  # Diverged (nonfinite="stop"), Interrupted (saved), failures:
    error = e  # recorded in summary.json, then re-raised
  diverged = error if isinstance(error, trainer_lib.Diverged) else None
  if isinstance(error, trainer_lib.Interrupted):
    status = "interrupted"
  else:
    status = run_lifecycle.outcome(None if diverged else error, diverged is not None)
  end = time.time()
  wall = end - t0
  done = int(trainer.iteration.numpy()) - start_it
  # Speed as the console shows it: from the first completed iteration on (compilation excluded);
  # one iteration in all (nothing to time after it) falls back to the wall time.
  steady_its = int(trainer.iteration.numpy()) - first.get("it", 0) if first else 0
  steady = end - first["t"] if first else 0.0
  rate = steady_its / steady if steady_its > 0 and steady > 0 else (done / wall if wall > 0 else float("nan"))
  phi_path = os.path.join(workdir, "phi.npz")
  result = {
      "phi_path": None if diverged or not os.path.exists(phi_path) else phi_path,
      "iterations": int(trainer.iteration.numpy()),
      "skipped": int(trainer.skipped_total.numpy()),
      "phi_iteration": trainer.applied_through,  # phi.npz holds phi after this outer iteration
      "it_per_sec": rate,
      "env_steps_per_sec": rate * steps_per_it,
      "first_iteration_secs": first["t"] - t0 if first else None,
      "peak_rss_gb": peak_rss_gb(),
      "wall_secs": wall,
      "nonfinite": trainer_lib.nonfinite_policy(trainer.config),
      "diverged": diverged is not None,
      "num_workers": trainer.workers.num_workers if trainer.workers is not None else 1,
      "units_restarted_at": list(trainer.units_restarted_at),
  }
  if diverged:
    result["diverged_at"] = diverged.iteration
  finals = {r: v.get(logging_lib.EPISODE_RETURN) for r, v in last_runs.get("runs", {}).items()}
  returns = [float(v) for v in finals.values() if v is not None]
  with contextlib.closing(logger):  # the final metrics: the HParams dashboard's metric columns
    logging_lib.log_final(logger, last_runs.get("t", result["iterations"]), result["env_steps_per_sec"],
                          sum(returns) / len(returns) if returns else None, finals)
  its = result["iterations"]
  summary = (f"meta-training done: {its} outer iterations ({result['skipped']} skipped), "
             f"{result['it_per_sec']:.3f} it/s, peak RSS {result['peak_rss_gb']:.2f} GB -> {result['phi_path']}")
  if status != "finished":
    summary = f"{status.upper()} at outer iteration {its} of {total}: " + (
        f"diverged at outer iteration {diverged.iteration}, no learned optimizer" if diverged else
        f"{run_lifecycle.describe_error(error)}; phi.npz holds phi after outer iteration {result['phi_iteration']}")
  wall = result.pop("wall_secs")
  try:
    result = run_lifecycle.write_summary(workdir, status, summary, wall, its * steps_per_it, total * steps_per_it,
                                         error, **result)
  except OSError as e:  # (a full disk: the run's own error, if any, is the one to report)
    if error is None:
      raise
    print(f"WARNING: no summary.json: {e}", flush=True)
  if error is not None:
    raise error
  if console:
    print(summary, flush=True)
  return result


EXIT_FAILED = 1


def cli_call(fn, *args, **kwargs):
  """Runs ``fn`` for a launcher (under ``optim4rl_tf.utils.cli.run``): known failures become one line
  ``error: ...`` on stderr and an exit status: 2 bad config or workdir, 1 the run diverged or could not
  write (disk full), 128 + signal when SIGINT/SIGTERM stopped it after saving."""
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  try:
    return fn(*args, **kwargs)
  except trainer_lib.Interrupted as e:
    cli.fail(e, code=e.exit_code)
  except ValueError as e:  # includes workdir_lib.WorkdirError
    cli.fail(e)
  except (trainer_lib.NonFiniteError, OSError) as e:  # OSError: includes CheckpointWriteError (disk full)
    cli.fail(e, code=EXIT_FAILED)
