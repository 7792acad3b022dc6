"""Reports of sweeps the way the paper reports them (docs/fidelity.md §9): Figure 3/4 panels and Table 1.

Each panel or Table 1 cell shows the best configuration of each source (a workdir, sweep directory or glob,
read and ranked by :mod:`optim4rl_tf.eval.ranking`) beside what the paper reports.

* "±" is the half-width of the 90% percentile-bootstrap CI of the mean over runs (``stats.bootstrap_ci``);
  curve bands are the same CI per step on a common step grid (``plots.curves_on_grid``).
* :func:`write_report` writes one PNG per panel, one per figure (all its panels), ``report.md`` and
  ``report.json``; panels and Table 1 cells are given as specs (:func:`parse_panel`, :func:`parse_table1`).
"""

import json
import math
import os
import re

import numpy as np

from optim4rl_tf.envs import registry
from optim4rl_tf.eval import ranking
from optim4rl_tf.utils import plots
from optim4rl_tf.utils import stats

TASK_TITLES = {
    "catch": "Catch",
    "big_dense_long": "big_dense_long",
    "small_dense_long": "small_dense_long",
    "ant": "Ant",
    "humanoid": "Humanoid",
    "pendulum": "Inverted double pendulum",
    "inverted_double_pendulum": "Inverted double pendulum",
    "walker2d": "Walker2d"
}

# Table 1 of the paper: final return, 10 runs, ± 90% CI half-width (docs/fidelity.md §9.5).
PAPER_TABLE1 = {
    "with": {
        "small_dense_long": (32.22, 0.52),
        "big_dense_long": (23.10, 0.31),
        "ant": (6421, 355),
        "humanoid": (8440, 364)
    },
    "without": {
        "small_dense_long": (30.64, 0.69),
        "big_dense_long": (22.47, 0.51),
        "ant": (5038, 235),
        "humanoid": (6557, 1055)
    },
}
TABLE1_TASKS = ("small_dense_long", "big_dense_long", "ant", "humanoid")
TABLE1_ROWS = (("with", "With pipeline training"), ("without", "W.o. pipeline training"))

# The paper gives Figure 3/4 as curves only; its stated outcomes (docs/fidelity.md §9.5) go beside our numbers.
PAPER_FIGURE3 = {
    "catch": {
        "adam": "learns; slower than Optim4RL and STAR",
        "rmsprop": "learns; slower than Optim4RL and STAR",
        "optim4rl": "learns; faster than Adam/RMSProp",
        "star": "learns; faster than Adam/RMSProp",
        "linearoptim": "fails",
        "l2lgd2": "fails"
    },
    "big_dense_long": {
        "adam": "learns",
        "rmsprop": "learns",
        "optim4rl": "learns (≈ Adam/RMSProp)",
        "star": "fails",
        "linearoptim": "fails",
        "l2lgd2": "fails"
    },
    "ant": {
        "adam": "learns",
        "rmsprop": "learns",
        "optim4rl": "≈ Adam/RMSProp ≫ VeLO",
        "star": "≈ Adam/RMSProp ≫ VeLO",
        "linearoptim": "fails",
        "l2lgd2": "fails"
    },
    "humanoid": {
        "adam": "learns",
        "rmsprop": "learns",
        "optim4rl": "learns (≈ Adam/RMSProp)",
        "star": "unstable; crashes late in training",
        "linearoptim": "fails",
        "l2lgd2": "fails"
    },
}
PAPER_FIGURE4 = {
    task: {
        "adam":
            "learns",
        "rmsprop":
            "learns",
        "optim4rl":
            "competitive with Adam/RMSProp (trained on gridworlds only)" + ("; beats VeLO" if task == "ant" else "")
    } for task in ("ant", "humanoid", "pendulum", "inverted_double_pendulum", "walker2d")
}
PAPER_FIGURES = {"figure3": PAPER_FIGURE3, "figure4": PAPER_FIGURE4}
# The official code on a 2-core CPU (docs/fidelity.md §12), A2C on Catch, final (3e5 steps, 3 seeds).
OFFICIAL_CPU_NOTES = {
    "catch": "Official JAX code on this kind of machine (docs/fidelity.md §12), 3e5 steps: Adam 0.94/0.92/0.86, "
             "RMSProp 0.83/0.83/0.83; Optim4RL (meta lr 3e-3, global norm 0.5) 0.90/0.97 at 3e5.",
}


def canonical_task(name):
  key = str(name).strip().lower()
  return registry.ALIASES.get(key, key)


def canonical_optimizer(label):
  """'L2LGD²' -> 'l2lgd2', 'LinearOptim' / 'linear_optim' -> 'linearoptim', 'Optim4RL' -> 'optim4rl'."""
  key = str(label).lower().replace("²", "2")
  key = re.sub(r"[^a-z0-9]", "", key)
  return {"lin": "linearoptim", "l2l": "l2lgd2", "rl": "optim4rl"}.get(key, key)


# ----------------------------------------------------------------------------------------------------
# Figures and tables.


def _pm(ci, digits=None):
  if ci is None:
    return "diverged"
  if digits is None:
    scale = max(abs(ci.mean), 1e-12)
    digits = 2 if scale < 100 else 0
  return f"{ci.mean:.{digits}f} ± {ci.half_width:.{digits}f}"


def plot_panel(sources, path, title, confidence=0.9, num_points=200, smooth=1, num_resamples=1000, seed=0, ax=None):
  """Learning curves (mean over the runs of each source's best configuration) with CI bands."""
  import matplotlib.pyplot as plt  # plots.py selected the Agg backend
  own = ax is None
  if own:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for src in sources:
    best = src.ranked[0]
    runs = {(r.workdir, r.seed): (r.steps, r.returns) for r in best.runs if len(r.steps)}
    if not runs:
      continue
    grid, vals = plots.curves_on_grid(runs, num_points=num_points, smooth=smooth)
    if not np.all(np.isfinite(vals)):
      keep = np.all(np.isfinite(vals), axis=0)
      vals = vals[:, keep]
      if vals.shape[1] == 0:
        continue
    ci = stats.bootstrap_ci(vals, confidence=confidence, num_resamples=num_resamples, seed=seed, axis=1)
    line, = ax.plot(grid, ci.mean, label=f"{src.label} ({vals.shape[1]} runs)")
    ax.fill_between(grid, ci.low, ci.high, alpha=0.25, color=line.get_color())
  ax.set_xlabel("environment steps")
  ax.set_ylabel("return")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  if own:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
  return path


def panel_markdown(figure, task, sources, image, top=5):
  """Markdown section of one panel: image, the selected configurations and the paper's outcome."""
  paper = PAPER_FIGURES.get(figure, {}).get(canonical_task(task), {})
  fig_name = re.sub(r"^(figure|table)(\d+)$", lambda m: f"{m.group(1).capitalize()} {m.group(2)}", figure)
  title = f"{fig_name} — {TASK_TITLES.get(canonical_task(task), task)}"
  lines = [
      f"### {title}", "", f"![{title}]({os.path.basename(image)})", "",
      "| optimizer | selected configuration | runs | env steps | final return (± 90% CI) | 90% CI | "
      "paper |", "|---|---|---|---|---|---|---|"
  ]
  for src in sources:
    best = src.ranked[0]
    ci = best.ci
    low_high = "—" if ci is None else f"[{ci.low:.4g}, {ci.high:.4g}]"
    steps = "—" if best.env_steps is None else f"{best.env_steps:,}"
    claim = paper.get(canonical_optimizer(src.label), "—")
    lines.append(f"| {src.label} | {best.label} (best of {len(src.ranked)}) | {len(best.runs)} | {steps} | "
                 f"{_pm(ci)} | {low_high} | {claim} |")
  note = OFFICIAL_CPU_NOTES.get(canonical_task(task)) if figure == "figure3" else None
  if note:
    lines += ["", f"Reference: {note}"]
  ranked_rows = [(src, c) for src in sources if len(src.ranked) > 1 for c in src.ranked[:top]]
  if ranked_rows:
    lines += [
        "", "<details><summary>Configuration ranking (top "
        f"{top} per optimizer; mean final return, ties by standard error)</summary>", "",
        "| optimizer | rank | configuration | runs | final return (± 90% CI) | SE |", "|---|---|---|---|---|---|"
    ]
    for src in sources:
      for i, c in enumerate(src.ranked[:top]):
        if len(src.ranked) > 1:
          se = "—" if not math.isfinite(c.se) else f"{c.se:.3g}"
          lines.append(f"| {src.label} | {i + 1} | {c.label} | {len(c.runs)} | {_pm(c.ci)} | {se} |")
    lines += ["", "</details>"]
  return "\n".join(lines) + "\n"


def table1_markdown(cells):
  """Table 1 (pipeline ablation): ``cells`` {(row 'with'|'without', task): ranking.ConfigStats or None}."""
  header = "| method | " + " | ".join(TASK_TITLES[t] for t in TABLE1_TASKS) + " |"
  lines = [
      "### Table 1 — final return with and without pipeline training", "",
      "Ours: best configuration of each sweep (mean of the last 20 logged returns for A2C, last 2 "
      "evaluations for PPO; ± = 90% bootstrap CI half-width over runs; n = runs, env steps per run). "
      "Paper: 10 runs, 3e7 (gridworlds) / 1e8 (Brax) env steps.", "", header, "|---" * (len(TABLE1_TASKS) + 1) + "|"
  ]
  for row, name in TABLE1_ROWS:
    ours = []
    for task in TABLE1_TASKS:
      c = cells.get((row, task))
      if c is None:
        ours.append("—")
      else:
        steps = "" if c.env_steps is None else f", {c.env_steps:.3g} steps"
        ours.append(f"{_pm(c.ci)} (n={len(c.runs)}{steps})")
    paper = []
    for task in TABLE1_TASKS:
      m, h = PAPER_TABLE1[row][task]
      digits = 2 if abs(m) < 100 else 0
      paper.append(f"{m:.{digits}f} ± {h:.{digits}f}")
    lines.append(f"| {name} (ours) | " + " | ".join(ours) + " |")
    lines.append(f"| {name} (paper) | " + " | ".join(paper) + " |")
  return "\n".join(lines) + "\n"


def _ci_json(c):
  return None if c is None else dict(mean=c.mean, low=c.low, high=c.high, half_width=c.half_width)


def _stats_json(c):
  return dict(configuration=c.label,
              runs=len(c.runs),
              mean=None if not math.isfinite(c.mean) else c.mean,
              se=None if not math.isfinite(c.se) else c.se,
              ci=_ci_json(c.ci),
              env_steps=c.env_steps,
              finals=[None if not math.isfinite(f) else float(f) for f in c.finals],
              workdirs=sorted({r.workdir for r in c.runs}))


def parse_panel(spec):
  """'[figure4/]TASK:LABEL=PATH[,LABEL=PATH...]' -> (figure, task, [(label, path)])."""
  head, sep, rest = spec.partition(":")
  if not sep or not rest:
    raise ValueError(f"panel spec {spec!r} is not [FIGURE/]TASK:LABEL=PATH[,LABEL=PATH...]")
  figure, _, task = head.rpartition("/")
  figure = figure or "figure3"
  items = []
  for part in rest.split(","):
    label, eq, path = part.partition("=")
    if not eq or not label.strip() or not path.strip():
      raise ValueError(f"panel spec {spec!r}: {part!r} is not LABEL=PATH")
    items.append((label.strip(), path.strip()))
  return figure.lower(), task.strip(), items


def parse_table1(spec):
  """'TASK:with=PATH,without=PATH' -> (task, {'with': path, 'without': path})."""
  task, sep, rest = spec.partition(":")
  task = canonical_task(task)
  if not sep or task not in TABLE1_TASKS:
    raise ValueError(f"table1 spec {spec!r}: TASK must be one of {', '.join(TABLE1_TASKS)} (or sdl, bdl)")
  out = {}
  for part in rest.split(","):
    row, eq, path = part.partition("=")
    row = row.strip().lower()
    row = {"wo": "without", "w.o.": "without", "nopipe": "without", "pipe": "with"}.get(row, row)
    if not eq or row not in ("with", "without"):
      raise ValueError(f"table1 spec {spec!r}: {part!r} is not with=PATH or without=PATH")
    out[row] = path.strip()
  return task, out


def write_report(out_dir,
                 panels=(),
                 table1=(),
                 agent="auto",
                 confidence=0.9,
                 num_resamples=10000,
                 num_points=200,
                 smooth=1,
                 seed=0,
                 top=5,
                 title="Optim4RL-TF reproduction report"):
  """Writes the report into ``out_dir``: one PNG per panel, one PNG per figure (all its panels),
  ``report.md`` and ``report.json``. ``panels``: specs for :func:`parse_panel` or parsed tuples;
  ``table1``: specs for :func:`parse_table1`. Returns the path of report.md."""
  import matplotlib.pyplot as plt
  os.makedirs(out_dir, exist_ok=True)
  kw = dict(agent=agent, confidence=confidence, num_resamples=num_resamples, seed=seed)
  sections, data = [f"# {title}", ""], {"panels": [], "table1": {}}
  by_figure = {}
  for spec in panels:
    figure, task, items = parse_panel(spec) if isinstance(spec, str) else spec
    sources = [ranking.load_source(label, path, **kw) for label, path in items]
    by_figure.setdefault(figure, []).append((task, sources))
  for figure, entries in by_figure.items():
    for task, sources in entries:
      name = f"{figure}_{re.sub(r'[^A-Za-z0-9_]+', '_', canonical_task(task))}.png"
      title_ = f"{TASK_TITLES.get(canonical_task(task), task)}"
      plot_panel(sources, os.path.join(out_dir, name), title_, confidence, num_points, smooth, seed=seed)
      sections.append(panel_markdown(figure, task, sources, name, top))
      data["panels"].append(
          dict(figure=figure,
               task=task,
               image=name,
               sources=[
                   dict(label=s.label, path=s.path, selected=_stats_json(s.ranked[0]), num_configurations=len(s.ranked))
                   for s in sources
               ]))
    if len(entries) > 1:
      fig, axes = plt.subplots(1, len(entries), figsize=(5 * len(entries), 4), dpi=100, squeeze=False)
      for ax, (task, sources) in zip(axes[0], entries):
        plot_panel(sources,
                   None,
                   TASK_TITLES.get(canonical_task(task), task),
                   confidence,
                   num_points,
                   smooth,
                   seed=seed,
                   ax=ax)
      fig.tight_layout()
      combined = f"{figure}.png"
      fig.savefig(os.path.join(out_dir, combined))
      plt.close(fig)
      sections.insert(2, f"![{figure}]({combined})\n")
  if table1:
    cells = {}
    for spec in table1:
      task, rows = parse_table1(spec) if isinstance(spec, str) else spec
      for row, path in rows.items():
        best = ranking.load_source(row, path, **kw).ranked[0]
        cells[(row, task)] = best
        data["table1"][f"{row}/{task}"] = dict(path=path, **_stats_json(best))
    sections.append(table1_markdown(cells))
  data["paper_table1"] = {row: {t: list(v) for t, v in d.items()} for row, d in PAPER_TABLE1.items()}
  md_path = os.path.join(out_dir, "report.md")
  with open(md_path, "w") as f:
    f.write("\n".join(sections))
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(data, f, indent=2, default=str)
  return md_path
