"""Compare optimizers tested on one task: overlaid learning curves and a Markdown table of final returns.

  png, md = compare_runs({"optim4rl": "runs/main/test_optim4rl", "adam": ..., "rmsprop": ...}, out_dir)

Each run directory is an A2C workdir (``returns.csv`` with one column of returns per seed). Final
performance of a seed = mean of its last 20 logged returns (docs/fidelity.md §4.3); the table gives the mean over
seeds with a 90% percentile-bootstrap CI (docs/fidelity.md §9.3), plus the mean return at a few step marks.
"""

import os

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optim4rl_tf.utils import plots  # noqa: E402
from optim4rl_tf.utils import stats  # noqa: E402


def load_runs(run_dirs):
  """{name: {seed: (steps, returns)}} from each directory's returns.csv."""
  out = {}
  for name, d in run_dirs.items():
    path = os.path.join(d, "returns.csv")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{name}: no returns.csv in {d!r}")
    out[name] = plots.read_returns_csv(path)
  return out


def compare_runs(run_dirs, out_dir, title="", marks=(1e5, 2e5, 3e5), confidence=0.9):
  """Writes ``learning_curves.png`` and ``final_returns.md`` into ``out_dir``; returns their paths."""
  runs = load_runs(run_dirs)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
  rows = []
  for name, seeds in runs.items():
    grid, vals = plots.curves_on_grid(seeds, num_points=200, smooth=5)
    ci = stats.bootstrap_ci(vals, confidence=confidence, num_resamples=2000, seed=0, axis=1)
    ax.plot(grid, ci.mean, label=f"{name} ({vals.shape[1]} seeds)")
    ax.fill_between(grid, ci.low, ci.high, alpha=0.25)
    finals, final_ci = stats.summarize_final([r for _, r in seeds.values()], last=20, confidence=confidence)
    at = []
    for m in marks:
      if grid[0] <= m <= 1.01 * grid[-1]:  # the last logged step of a 3e5-step run is 299,520
        at.append(f"{float(np.mean([np.interp(min(m, grid[-1]), s, r) for s, r in seeds.values()])):.2f}")
      else:
        at.append("–")
    rows.append((name, final_ci, len(finals), at))
  ax.set_xlabel("environment steps (per seed)")
  ax.set_ylabel("return")
  ax.set_title(title or "fixed-optimizer test")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  png = os.path.join(out_dir, "learning_curves.png")
  fig.savefig(png)
  plt.close(fig)
  head = " | ".join(f"return @{m:.0e}" for m in marks)
  lines = [
      f"| optimizer | final return (mean of last 20, ±{int(confidence * 100)}% CI half-width) | "
      f"90% CI | seeds | {head} |", "|---|---|---|---|" + "---|" * len(marks)
  ]
  for name, ci, n, at in rows:
    lines.append(f"| {name} | {ci.mean:.3f} ± {ci.half_width:.3f} | [{ci.low:.3f}, {ci.high:.3f}] | {n} | " +
                 " | ".join(at) + " |")
  md = os.path.join(out_dir, "final_returns.md")
  with open(md, "w") as f:
    f.write((f"# {title}\n\n" if title else "") + "\n".join(lines) + "\n")
  return png, md
