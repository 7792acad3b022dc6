"""Learning-curve plots (matplotlib, Agg backend): mean over seeds with a 90% bootstrap CI band.

Shared by the trainers (``returns.png`` of a run) and the reports (``eval/``), so it sits below both (see
tests/test_layers.py).
"""

import csv
import os

import numpy as np

try:
  import matplotlib
except ImportError as e:
  raise ImportError("optim4rl_tf.utils.plots (learning curves, returns.png, reports) needs matplotlib: "
                    "pip install 'optim4rl-tf[plots]' (or [train], which has it)") from e

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optim4rl_tf.utils import stats  # noqa: E402


def read_returns_csv(path):
  """returns.csv (step,seed,return) -> {seed: (steps array, returns array)} in file order."""
  runs = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      s = int(row["seed"])
      runs.setdefault(s, ([], []))
      runs[s][0].append(float(row["step"]))
      runs[s][1].append(float(row["return"]))
  return {s: (np.array(a), np.array(b)) for s, (a, b) in runs.items()}


def curves_on_grid(runs, num_points=200, smooth=1):
  """Interpolates every run onto a common step grid (between the largest first step and the smallest
  last step of the runs). runs: {seed: (steps, returns)}. Returns (grid [P], values [P, num_runs])."""
  runs = {s: r for s, r in runs.items() if len(r[0])}
  if not runs:
    raise ValueError("no logged returns to plot")
  lo = max(r[0][0] for r in runs.values())
  hi = min(r[0][-1] for r in runs.values())
  if hi < lo:
    lo, hi = min(r[0][0] for r in runs.values()), max(r[0][-1] for r in runs.values())
  grid = np.linspace(lo, hi, num_points) if hi > lo else np.array([lo])
  cols = []
  for steps, rets in runs.values():
    if smooth > 1 and len(rets) >= smooth:
      kernel = np.ones(smooth) / smooth
      rets = np.convolve(rets, kernel, mode="valid")
      steps = steps[smooth - 1:]
    cols.append(np.interp(grid, steps, rets))
  return grid, np.stack(cols, axis=1)


def plot_returns(runs,
                 path,
                 title="",
                 confidence=0.9,
                 num_points=200,
                 smooth=1,
                 label="mean",
                 num_resamples=1000,
                 seed=0):
  """Writes a PNG of the mean return over runs with a percentile-bootstrap CI band vs env steps.

  runs: {seed: (steps, returns)} (e.g. from :func:`read_returns_csv`) or a path to returns.csv.
  """
  if isinstance(runs, (str, os.PathLike)):
    runs = read_returns_csv(runs)
  grid, vals = curves_on_grid(runs, num_points=num_points, smooth=smooth)
  ci = stats.bootstrap_ci(vals, confidence=confidence, num_resamples=num_resamples, seed=seed, axis=1)
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  ax.plot(grid, ci.mean, label=f"{label} ({vals.shape[1]} seeds)")
  ax.fill_between(grid, ci.low, ci.high, alpha=0.3, label=f"{int(round(confidence * 100))}% CI")
  ax.set_xlabel("environment steps")
  ax.set_ylabel("return")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc="best")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
