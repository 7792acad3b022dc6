"""Runs of trainer workdirs, grouped into configurations and ranked the way the official analysis does
(docs/fidelity.md §9.3); what :mod:`optim4rl_tf.eval.report` puts in its panels and tables.

Input: workdirs written by the trainers (``optim4rl_tf/agents/a2c_train.py``, ``ppo_train.py``): each holds
``config.json`` (resolved config) and ``returns.csv`` (``step,seed,return``: A2C logged returns of
docs/fidelity.md §4.3; for PPO the evaluation returns, one row per evaluation), optionally ``summary.json``
(its ``seeds`` list names seeds that logged nothing) and ``sweep_run.json`` (written by ``launch/sweep.py``:
the swept values). A path may be one workdir, a sweep directory (searched recursively) or a glob.

* A run = one (workdir, seed). Its final performance = mean of its last 20 logged returns (A2C) or of its
  last 2 evaluations (PPO), ``stats.final_performance``.
* Runs are grouped by configuration: the resolved config without the seed and logging/machinery fields.
* Configurations are ranked like the official analysis: mean final performance over runs descending, ties
  broken by the standard error (ascending; pandas ``sem(ddof=0)``); configurations with a non-finite run
  (diverged) rank last. The shown configuration of each optimizer is the first.
* A configuration's CI is the 90% percentile-bootstrap CI of the mean over its runs (``stats.bootstrap_ci``).
"""

import glob as glob_lib
import json
import math
import os
import re
from typing import Any, NamedTuple

import numpy as np

from optim4rl_tf.utils import plots
from optim4rl_tf.utils import stats
from optim4rl_tf.utils import workdir as workdir_lib

# Fields that do not define a configuration (seeds, logging, machinery).
IGNORED_FIELDS = ("seed", "num_seeds", "plot", "save_params", "console_every_secs", "log_every", "iterations_per_call",
                  "chunk_secs", "jit_compile", "conv_form", "sweep", "collect", "checkpoint_every")
BRAX_TASKS = ("ant", "humanoid", "inverted_double_pendulum", "pendulum", "walker2d", "halfcheetah", "fetch", "grasp",
              "hopper", "reacher")
FINAL_WINDOW = {"a2c": 20, "ppo": 2}

# ----------------------------------------------------------------------------------------------------
# Reading workdirs.


class RunCurve(NamedTuple):
  workdir: str
  seed: int
  steps: np.ndarray
  returns: np.ndarray
  config: dict
  swept: dict  # values of sweep_run.json (may be empty)
  env_steps: Any  # env steps of the run (summary.json), or None


def _natural_key(s):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


STALE = re.compile(r"\.stale-\d+$")  # a run moved aside by reproduce.py (kept, never counted)


def find_workdirs(path):
  """Workdirs (directories holding returns.csv) under ``path`` (a workdir, a sweep dir or a glob); runs
  moved aside (``<workdir>.stale-N``) are left out of a search."""
  if glob_lib.has_magic(path):
    roots = sorted((r for r in glob_lib.glob(path) if not STALE.search(os.path.normpath(r))), key=_natural_key)
  else:
    roots = [path]
  found = []
  for root in roots:
    if os.path.isfile(os.path.join(root, "returns.csv")):
      found.append(root)
      continue
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames[:] = sorted((d for d in dirnames if not STALE.search(d)), key=_natural_key)
      if "returns.csv" in filenames:
        found.append(dirpath)
        dirnames[:] = []  # a workdir's subdirectories (tb/ ...) hold no other runs
  return sorted(set(found), key=_natural_key)


def load_workdir(workdir):
  """All runs (one per seed) of one workdir."""
  config = workdir_lib.read_json_dict(os.path.join(workdir, "config.json"))
  sweep_run = workdir_lib.read_json_dict(os.path.join(workdir, "sweep_run.json")) or {}
  if config is None:
    config = sweep_run.get("config")
  if config is None:
    raise ValueError(f"{workdir}: no config.json (nor sweep_run.json) to tell its configuration")
  summary = workdir_lib.read_json_dict(os.path.join(workdir, "summary.json")) or {}
  curves = plots.read_returns_csv(os.path.join(workdir, "returns.csv"))
  seeds = list(curves)
  for s in summary.get("seeds") or []:
    if int(s) not in curves:
      seeds.append(int(s))
  runs = []
  for s in sorted(seeds):
    steps, rets = curves.get(s, (np.zeros(0), np.zeros(0)))
    runs.append(
        RunCurve(workdir=workdir,
                 seed=int(s),
                 steps=np.asarray(steps, np.float64),
                 returns=np.asarray(rets, np.float64),
                 config=config,
                 swept=dict(sweep_run.get("values") or {}),
                 env_steps=summary.get("env_steps")))
  return runs


def load_runs(path):
  """All runs under ``path``: one path (a workdir, a sweep dir or a glob) or a list of them."""
  paths = [path] if isinstance(path, str) else list(path)
  dirs = sorted({d for p in paths for d in find_workdirs(p)}, key=_natural_key)
  if not dirs:
    raise ValueError(f"no workdir with returns.csv found under {path!r}")
  runs = []
  for d in dirs:
    runs += load_workdir(d)
  return runs


def detect_agent(config):
  """'ppo' for Brax tasks or an explicit ``agent`` field, else 'a2c'."""
  agent = str(config.get("agent", "") or "").lower()
  if agent:
    return "ppo" if "ppo" in agent else "a2c"
  env = config.get("env")
  name = env.get("name") if isinstance(env, dict) else config.get("env_name", env)
  return "ppo" if str(name).lower() in BRAX_TASKS else "a2c"


def config_key(config):

  def strip(node):
    if isinstance(node, dict):
      return {k: strip(v) for k, v in node.items() if k not in IGNORED_FIELDS}
    return node

  return json.dumps(strip(config), sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------------
# Statistics and selection.


class ConfigStats(NamedTuple):
  key: str
  label: str
  runs: list  # RunCurve
  finals: np.ndarray  # per-run final performance
  mean: float  # mean over runs (NaN if any run is not finite)
  se: float  # standard error (std ddof=0 / sqrt(n))
  ci: Any  # stats.CI, or None if a run is not finite
  env_steps: Any


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _labels(groups):
  """A short label per group: its swept values, else the config fields that differ between groups."""
  labels = {}
  for key, runs in groups.items():
    swept = runs[0].swept
    if swept:
      labels[key] = ", ".join(f"{k}={_fmt_value(v)}" for k, v in swept.items())
  if len(labels) == len(groups):
    return labels
  flat = {
      key: _flatten({
          k: v for k, v in runs[0].config.items() if k not in IGNORED_FIELDS
      }) for key, runs in groups.items()
  }
  fields = sorted({f for d in flat.values() for f in d})
  varying = [f for f in fields if len({json.dumps(d.get(f), default=str) for d in flat.values()}) > 1]
  for key in groups:
    if key not in labels:
      labels[key] = ", ".join(f"{f}={_fmt_value(flat[key].get(f))}" for f in varying) or "default"
  return labels


def _fmt_value(v):
  if isinstance(v, str) and (os.sep in v):
    parent = os.path.basename(os.path.dirname(v))
    return f"{parent}/{os.path.basename(v)}" if parent else os.path.basename(v)
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)


def summarize(runs, agent="auto", confidence=0.9, num_resamples=10000, seed=0):
  """Groups runs by configuration; returns [ConfigStats] ranked best first (docs/fidelity.md §9.3)."""
  groups = {}
  for r in runs:
    groups.setdefault(config_key(r.config), []).append(r)
  labels = _labels(groups)
  out = []
  for key, members in groups.items():
    kind = detect_agent(members[0].config) if agent == "auto" else agent
    finals = np.array([stats.final_performance(r.returns, FINAL_WINDOW[kind]) for r in members])
    ok = bool(np.all(np.isfinite(finals)))
    mean = float(np.mean(finals)) if ok else float("nan")
    se = float(np.std(finals) / math.sqrt(len(finals))) if ok else float("nan")
    ci = stats.bootstrap_ci(finals, confidence, num_resamples, seed) if ok else None
    steps = [r.env_steps for r in members if r.env_steps is not None]
    out.append(
        ConfigStats(key=key,
                    label=labels[key],
                    runs=members,
                    finals=finals,
                    mean=mean,
                    se=se,
                    ci=ci,
                    env_steps=max(steps) if steps else None))
  return rank(out)


def rank(config_stats):
  """Sort by mean descending, then standard error ascending; non-finite means last."""

  def sort_key(c):
    finite = math.isfinite(c.mean)
    return (0 if finite else 1, -c.mean if finite else 0.0, c.se if math.isfinite(c.se) else math.inf)

  return sorted(config_stats, key=sort_key)


class Source(NamedTuple):
  label: str  # legend / row label (optimizer name)
  path: Any  # workdir, sweep dir or glob, or a list of them
  ranked: list  # [ConfigStats], best first


def load_source(label, path, agent="auto", confidence=0.9, num_resamples=10000, seed=0):
  return Source(label=label, path=path, ranked=summarize(load_runs(path), agent, confidence, num_resamples, seed))
