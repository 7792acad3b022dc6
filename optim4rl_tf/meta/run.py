"""A meta-training run as users launch it: config checks, logs, progress, outputs.

  result = meta_train(config, workdir)     # resumes from workdir/checkpoints if present

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard: meta-loss, meta-gradient
norm, per-task agent returns, statistics of the learned optimizer's updates, outer iterations/s, env
steps/s, peak RSS), ``meta_metrics.csv`` (one row per outer iteration), ``checkpoints/`` (every
``checkpoint_every`` iterations), ``phi.npz`` (the meta-parameters, readable by
``optim4rl_tf.Optim4RL(meta_params=...)``) and ``summary.json``.
"""

import csv
import os
import resource
import time

from optim4rl_tf import envs as envs_lib
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.optimizers import cores
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib


def peak_rss_gb():
  """Peak resident set size of this process in GB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def check_meta_fields(config):
  """Checks shared by every meta-training config (MetaA2C and MetaPPO): meta-optimizer, returns,
  checkpoints, NaN guard, pipeline and the optional starting phi."""
  cc.check_positive("meta_lr", config.meta_lr)
  cc.check_unit_interval("discount", config.discount)
  cc.check_unit_interval("gae_lambda", config.gae_lambda)
  cc.check_positive_int("checkpoint_every", config.checkpoint_every)
  cc.check_positive_int("max_nonfinite", config.max_nonfinite)
  if config.pipeline:
    cc.check_positive_int("reset_interval", config.reset_interval)
  if config.optimizer.init_meta_params:
    cc.check_file("optimizer.init_meta_params", config.optimizer.init_meta_params)


def validate_config(config):
  """One clear ValueError per bad field; returns the number of outer iterations."""
  cc.check_choice("optimizer.name", config.optimizer.name, cores.LEARNED_NAMES + ("star",))
  if config.optimizer.name == "star" and len(config.tasks) > 1:
    raise ValueError("STAR meta-training is single-task (as in the official MetaA2Cstar)")
  if not config.tasks:
    raise ValueError("config.tasks is empty: give at least one task")
  for i, task in enumerate(config.tasks):
    cc.check_choice(f"tasks[{i}].env_name", task.env_name, envs_lib.ENV_NAMES)
    cc.check_positive_int(f"tasks[{i}].num_units", trainer_lib.task_units(config, task))
    cc.check_positive(f"tasks[{i}].learning_rate", task.learning_rate)
    cc.check_positive(f"tasks[{i}].reward_scale", task.reward_scale)
    chunk = int(config.chunk_size)
    n = trainer_lib.task_units(config, task)
    if 0 < chunk < n and n % chunk:
      raise ValueError(f"chunk_size={chunk} must divide the number of units of tasks[{i}] ({n})")
  cc.check_positive_int("rollout_steps", config.rollout_steps)
  cc.check_positive_int("inner_updates", config.inner_updates)
  cc.check_nonnegative_int("chunk_size", config.chunk_size)
  check_meta_fields(config)
  iterations = trainer_lib.num_iterations(config)
  if iterations < 1:
    raise ValueError(f"train_steps={config.train_steps} is less than one outer iteration; "
                     "raise train_steps or set num_iterations")
  return iterations


class _MetricsCSV:
  """meta_metrics.csv: one row per outer iteration (columns fixed by the first row)."""

  def __init__(self, path):
    self.path = path
    self.columns = None
    if os.path.exists(path):
      with open(path) as f:
        header = f.readline().strip()
      self.columns = header.split(",") if header else None

  def write(self, row):
    new = self.columns is None
    if new:
      self.columns = list(row)
    with open(self.path, "a", newline="") as f:
      w = csv.writer(f)
      if new:
        w.writerow(self.columns)
      w.writerow([row.get(c, "") for c in self.columns])


def meta_train(config, workdir, console=True, progress_fn=None):
  """Meta-trains (or resumes) and returns a dict: phi_path, iterations, skipped, it_per_sec,
  env_steps_per_sec, peak_rss_gb, wall_secs."""
  total = validate_config(config)
  cc.check_writable_dir(workdir)
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  trainer = trainer_lib.MetaTrainer(config, workdir)
  steps_per_it = sum(trainer_lib.task_units(config, t) * config.rollout_steps * (config.inner_updates + 1)
                     for t in config.tasks)

  def shown(metrics):
    out = {f"{task.env_name} return": metrics[f"{task.env_name}/agent_return"] for task in config.tasks}
    out.update({"meta-loss": sum(metrics[f"{task.env_name}/meta_loss"] for task in config.tasks),
                "RSS GB": round(peak_rss_gb(), 2)})
    return out

  return drive(trainer, workdir, total, steps_per_it, shown, prefix="meta ",
               log_every=max(int(config.log_every), 1), console=console, progress_fn=progress_fn)


def drive(trainer, workdir, total, steps_per_it, shown, prefix="meta ", log_every=1, console=True,
          progress_fn=None):
  """Runs a built ``MetaTrainer`` (MetaA2C or MetaPPO) to ``total`` iterations with logging: TensorBoard
  and ``meta_metrics.csv`` every ``log_every`` iterations (plus speed and peak RSS), console progress
  showing ``shown(metrics)``, ``progress_fn(t, metrics)``; writes ``summary.json`` and returns its dict
  (phi_path, iterations, skipped, it_per_sec, env_steps_per_sec, peak_rss_gb, wall_secs)."""
  start_it = int(trainer.iteration.numpy())
  logger = logging_lib.RunLogger(workdir, returns_csv=None)
  table = _MetricsCSV(os.path.join(workdir, "meta_metrics.csv"))
  progress = logging_lib.Progress(total, every_secs=10.0, prefix=prefix, rate_scale=steps_per_it,
                                  rate_label="env steps/s") if console else None
  if console and start_it:
    print(f"resuming {workdir} at outer iteration {start_it}/{total}", flush=True)
  t0 = time.time()
  last = {"t": time.time(), "it": start_it}

  def on_iteration(t, metrics):
    now = time.time()
    it_per_sec = (t - last["it"]) / max(now - last["t"], 1e-9)
    last.update(t=now, it=t)
    values = dict(metrics)
    values.update({"speed/outer_it_per_sec": it_per_sec, "speed/env_steps_per_sec": it_per_sec * steps_per_it,
                   "memory/peak_rss_gb": peak_rss_gb()})
    if t % log_every == 0 or t == total:
      logger.scalars(t, values)
      table.write({"iteration": t, **values})
    if progress is not None:
      progress.update(t, shown(metrics))
    if progress_fn is not None:
      progress_fn(t, values)

  try:
    trainer.train(on_iteration)
  finally:
    logger.close()
  wall = time.time() - t0
  done = int(trainer.iteration.numpy()) - start_it
  result = {
      "phi_path": os.path.join(workdir, "phi.npz"),
      "iterations": int(trainer.iteration.numpy()),
      "skipped": int(trainer.skipped_total.numpy()),
      "it_per_sec": done / wall if wall > 0 else float("nan"),
      "env_steps_per_sec": done * steps_per_it / wall if wall > 0 else float("nan"),
      "peak_rss_gb": peak_rss_gb(),
      "wall_secs": wall,
  }
  logging_lib.write_json(os.path.join(workdir, "summary.json"), result)
  if console:
    print(f"meta-training done: {result['iterations']} outer iterations ({result['skipped']} skipped), "
          f"{result['it_per_sec']:.3f} it/s, peak RSS {result['peak_rss_gb']:.2f} GB -> {result['phi_path']}",
          flush=True)
  return result
