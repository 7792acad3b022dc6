"""Gradient-distribution analysis of docs/fidelity.md §8: Fig. 1 (RL), Fig. 5 (MNIST) and Table 4.

  * the collected gradients (time-major store of :mod:`optim4rl_tf.analysis.collect`) are split into
    ``NUM_PARTS`` = 30 consecutive parts along time (``np.array_split`` sizes: they differ by at most one
    step, the longer parts first); "beginning / middle / end" are parts 1, 16 and 30 (1-based);
  * a part's distribution pools every collected coordinate of every unit (seed) and step in it;
  * histograms of log10(|g| + 1e-8) (the official plotting uses log10; the paper writes log), bins
    -9, -8.5, ..., 4.5 (``np.arange(-9, 5, 0.5)``), density=True, x-range [-9, 5];
  * Table 4: ``scipy.stats.wasserstein_distance`` between a part's values and all collected values, computed
    on the RAW gradient values g. The split and the WD are not in the official code; that the paper's WDs
    (~1e-4) were computed on raw values is an inference from their magnitude (docs/fidelity.md §8.2). The same distances
    on log10(|g| + 1e-8) are reported as well, for information.
"""

import json
import os

import numpy as np
from scipy import stats as sps

from optim4rl_tf.analysis import collect as collect_lib

NUM_PARTS = 30
PANELS = (("beginning", 1), ("middle", 16), ("end", 30))  # 1-based part numbers
LOG_EPS = 1e-8
HIST_BINS = np.arange(-9, 5, 0.5)  # edges -9 .. 4.5 (27 bins)
X_RANGE = (-9, 5)

# Paper Table 4 (docs/fidelity.md §9.5).
PAPER_TABLE4 = {
    "MNIST": (4.0642e-4, 0.7205e-4, 1.4204e-4),
    "big_dense_long": (7.1583e-4, 1.1726e-4, 6.7967e-4),
}
WD_NOTE = ("Wasserstein distances: scipy.stats.wasserstein_distance between the 1-D distribution of the raw "
           "gradient values g of a part (all collected coordinates, units and steps in it) and that of all "
           "collected gradients. That the paper computed them on raw g, not on log10(|g|+1e-8), is an "
           "inference from the magnitude of its numbers (docs/fidelity.md §8.2); the split, the panels and "
           "the WD are not in the official code.")


def part_bounds(num_steps, num_parts=NUM_PARTS):
  """[(start, stop)] of ``num_parts`` consecutive parts covering range(num_steps) (np.array_split sizes)."""
  num_steps, num_parts = int(num_steps), int(num_parts)
  if num_parts < 1:
    raise ValueError(f"num_parts must be positive, got {num_parts}")
  if num_steps < num_parts:
    raise ValueError(f"{num_steps} collected steps cannot be split into {num_parts} parts (need at least "
                     f"{num_parts} steps)")
  base, extra = divmod(num_steps, num_parts)
  sizes = [base + 1] * extra + [base] * (num_parts - extra)
  ends = np.cumsum(sizes)
  return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def split_parts(grads, num_parts=NUM_PARTS):
  """Splits an array [steps, ...] into ``num_parts`` consecutive parts along axis 0 (list of views)."""
  return [grads[a:b] for a, b in part_bounds(len(grads), num_parts)]


def log_abs(g):
  """log10(|g| + 1e-8) (float64)."""
  return np.log10(np.abs(np.asarray(g, np.float64)) + LOG_EPS)


def histogram(g):
  """(density [27], edges [28]) of log10(|g|+1e-8) with the §8 bins; values outside [-9, 4.5] are not
  counted (as in matplotlib's ``hist(..., bins, density=True)``)."""
  return np.histogram(log_abs(np.ravel(g)), bins=HIST_BINS, density=True)


def wasserstein(u, v):
  """1-D Wasserstein-1 distance between the empirical distributions of ``u`` and ``v`` (flattened)."""
  return float(sps.wasserstein_distance(np.ravel(u).astype(np.float64), np.ravel(v).astype(np.float64)))


def analyze(grads, num_parts=NUM_PARTS):
  """Everything Table 4 and the figures need for one collection.

  grads: [steps, ...] (time on axis 0; other axes pooled).
  Returns dict: num_steps, values_per_step, bounds, and per panel name: part (1-based), steps (start, stop),
  values (flattened raw g), hist (density, edges), wd (raw g), wd_log (log10(|g|+1e-8)), and
  ``summary`` stats of all values.
  """
  grads = np.asarray(grads, np.float32)
  bounds = part_bounds(len(grads), num_parts)
  all_vals = grads.reshape(-1)
  all_log = log_abs(all_vals)
  out = dict(num_steps=int(len(grads)),
             values_per_step=int(all_vals.size // max(len(grads), 1)),
             num_parts=int(num_parts),
             bounds=bounds,
             panels={},
             summary=dict(min=float(all_vals.min()),
                          max=float(all_vals.max()),
                          mean=float(all_vals.mean()),
                          std=float(all_vals.std()),
                          log_mean=float(all_log.mean())))
  for name, part in PANELS:
    if part > num_parts:
      raise ValueError(f"panel {name} is part {part}, but there are only {num_parts} parts")
    a, b = bounds[part - 1]
    vals = grads[a:b].reshape(-1)
    out["panels"][name] = dict(part=part,
                               steps=(a, b),
                               values=vals,
                               hist=histogram(vals),
                               wd=wasserstein(vals, all_vals),
                               wd_log=float(sps.wasserstein_distance(log_abs(vals), all_log)))
  return out


def load_collection(path):
  """(GradientStore, grads [steps, units, coords]) from a run workdir or its grads/ directory."""
  for d in (path, os.path.join(path, "grads")):
    if os.path.isfile(os.path.join(d, collect_lib.INDEX)):
      store = collect_lib.GradientStore(d)
      return store, store.load()
  raise FileNotFoundError(f"no collected gradients in {path!r} (looked for {collect_lib.INDEX} there and in "
                          "its grads/); run launch/collect_gradients.py first")


def describe(store):
  """Short label of a collection for tables and titles."""
  ix = store.index
  if ix.get("kind") == "rl":
    return f"{ix.get('task')} (A2C, {ix.get('optimizer')} lr {ix.get('learning_rate'):g})"
  return ix.get("dataset_short") or ix.get("dataset") or ix.get("task", "supervised")


def paper_key(store):
  ix = store.index
  if ix.get("kind") == "rl":
    return ix.get("task") if ix.get("task") in PAPER_TABLE4 else None
  return None if ix.get("stand_in") else "MNIST"


def plot_figure(result, path, title):
  """Three panels (beginning / middle / end) of log10(|g|+1e-8) histograms, density, bins of §8."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8), dpi=100, sharey=True)
  for ax, (name, _) in zip(axes, PANELS):
    p = result["panels"][name]
    ax.hist(log_abs(p["values"]), bins=list(HIST_BINS), density=True, color="C0")
    ax.set_xlim(*X_RANGE)
    ax.set_xticks(list(np.arange(-9, 5, 2)))
    a, b = p["steps"]
    ax.set_title(f"{name}: part {p['part']}/{result['num_parts']} (steps {a}-{b - 1})", fontsize=10)
    ax.set_xlabel(r"$\log_{10}(|g|+10^{-8})$")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("probability density")
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _fmt(x):
  return f"{x:.4e}"


def table4_markdown(entries):
  """entries: list of (label, paper_key or None, result of :func:`analyze`, store) -> Markdown."""
  lines = [
      "# Table 4 — Wasserstein distance between a part of the collected gradients and all of them", "", WD_NOTE, "",
      f"Parts: the collection split into {NUM_PARTS} consecutive parts along time; beginning / middle / "
      "end = parts 1 / 16 / 30.", "",
      "| task | source | steps × values/step | WD(beginning, all) | WD(middle, all) | WD(end, all) |",
      "|---|---|---|---|---|---|"
  ]
  for label, key, res, _ in entries:
    wd = [res["panels"][n]["wd"] for n, _ in PANELS]
    lines.append(f"| {label} | measured here | {res['num_steps']} × {res['values_per_step']} | " +
                 " | ".join(_fmt(w) for w in wd) + " |")
    if key in PAPER_TABLE4:
      lines.append(f"| {key} | paper (Table 4) | – | " + " | ".join(_fmt(w) for w in PAPER_TABLE4[key]) + " |")
  shown = {k for _, k, _, _ in entries}
  for key, vals in PAPER_TABLE4.items():
    if key not in shown:
      lines.append(f"| {key} | paper (Table 4; not measured here) | – | " + " | ".join(_fmt(w) for w in vals) + " |")
  lines += [
      "", "For information, the same distances on log10(|g| + 1e-8) (the histograms' variable):", "",
      "| task | WD_log(beginning, all) | WD_log(middle, all) | WD_log(end, all) |", "|---|---|---|---|"
  ]
  for label, _, res, _ in entries:
    lines.append(f"| {label} | " + " | ".join(f"{res['panels'][n]['wd_log']:.4f}" for n, _ in PANELS) + " |")
  lines += ["", "Collections:", ""]
  for label, _, res, store in entries:
    ix = store.index
    s = res["summary"]
    lines.append(f"- {label}: {store.directory}; data {ix.get('dataset')}; kind {ix.get('kind')}; "
                 f"every {ix.get('every_nth')}th of "
                 f"{ix.get('num_params')} parameters ({ix.get('num_coords')} coordinates) × "
                 f"{ix.get('num_units')} unit(s); {res['num_steps']} steps" +
                 ("" if ix.get("complete") else " (INCOMPLETE run)") +
                 f"; g in [{s['min']:.3g}, {s['max']:.3g}], mean {s['mean']:.3g}, std {s['std']:.3g}" +
                 ("; STAND-IN data" if ix.get("stand_in") else ""))
  return "\n".join(lines) + "\n"


def run_analysis(paths, out_dir, num_parts=NUM_PARTS):
  """Analyses each collection in ``paths``; writes figures, table4.md and table4.json into ``out_dir``.

  Figures: ``fig1_<name>.png`` for RL collections (paper Fig. 1), ``fig5_<name>.png`` for supervised ones
  (paper Fig. 5), name = the collection directory's basename. Returns {"table": path, "figures": [...],
  "json": path, "entries": [...]}.
  """
  os.makedirs(out_dir, exist_ok=True)
  entries, figures, records = [], [], []
  for path in paths:
    store, grads = load_collection(path)
    res = analyze(grads, num_parts)
    label = describe(store)
    key = paper_key(store)
    entries.append((label, key, res, store))
    base = os.path.basename(os.path.normpath(path))
    if base == "grads":
      base = os.path.basename(os.path.dirname(os.path.normpath(path)))
    fig_no = 1 if store.index.get("kind") == "rl" else 5
    fig_path = os.path.join(out_dir, f"fig{fig_no}_{base}.png")
    paper_fig = "Fig. 1" if fig_no == 1 else "Fig. 5"
    plot_figure(res, fig_path, f"{paper_fig}: {label}" + ("" if store.index.get("complete") else " [incomplete run]"))
    figures.append(fig_path)
    records.append(
        dict(label=label,
             paper_key=key,
             directory=store.directory,
             kind=store.index.get("kind"),
             stand_in=bool(store.index.get("stand_in")),
             num_steps=res["num_steps"],
             values_per_step=res["values_per_step"],
             figure=fig_path,
             wd={
                 n: res["panels"][n]["wd"] for n, _ in PANELS
             },
             wd_log={
                 n: res["panels"][n]["wd_log"] for n, _ in PANELS
             },
             paper=None if key is None else dict(zip([n for n, _ in PANELS], PAPER_TABLE4[key])),
             hist={
                 n: res["panels"][n]["hist"][0].tolist() for n, _ in PANELS
             },
             bin_edges=HIST_BINS.tolist(),
             summary=res["summary"]))
  table = os.path.join(out_dir, "table4.md")
  with open(table, "w") as f:
    f.write(table4_markdown(entries))
  js = os.path.join(out_dir, "table4.json")
  with open(js, "w") as f:
    json.dump(dict(note=WD_NOTE, num_parts=num_parts, panels=dict(PANELS), entries=records), f, indent=1)
  return dict(table=table, figures=figures, json=js, entries=records)
