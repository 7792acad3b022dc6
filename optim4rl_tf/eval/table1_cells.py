"""Table 1 (small_dense_long, pipeline-training ablation) as a sweep of resumable cells.

A *cell* is one point of the official Table 1 sweep: a row (``with`` or ``without`` pipeline training), the
meta learning rate, the meta-gradient treatment (``norm0.5``: global-norm clip 0.5; ``clip1.0``: elementwise
clip 1.0), the reset interval m (the ``with`` row only), the meta seed and the learned optimizer's network
(``mlp_dims``, head-free ``()`` by default as in the official release). Running a cell meta-trains Optim4RL
with MetaA2C on small_dense_long (512 units, 585 outer iterations by default) and tests the fixed optimizer
with A2C (10 seeds x 3e7 env steps by default, agent lr 3e-2, the meta-training one).

Each cell is a unit of work that outlives a session: its meta-training resumes from its checkpoints, a
finished test is not rerun, and its outcome is written as ``<results>/cells/<cell name>.json`` as soon as it
finishes. :func:`collect` turns whatever cells are there into ``cells.json`` and ``cells.md``: best-of-N
against best-of-N with equal N, the mean over cells and the spread over meta seeds.

  python launch/table1_cells.py --cells=with:1e-3,without:1e-3 --workdir=runs/t1 --results=results/table1_sdl
"""

import dataclasses
import json
import math
import os
import subprocess

import numpy as np

from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import workdir as workdir_lib

ROWS = ("with", "without")
META_CLIPS = {
    "norm0.5": dict(meta_grad_norm=0.5, meta_grad_clip=-1.0),
    "clip1.0": dict(meta_grad_norm=-1.0, meta_grad_clip=1.0)
}
TASK = "small_dense_long"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of the Table 1 sweep."""
  row: str  # "with" | "without" pipeline training
  meta_lr: float = 1e-3
  meta_clip: str = "norm0.5"  # a key of META_CLIPS
  reset_interval: int = 72  # m; only meaningful for the "with" row
  meta_seed: int = 0
  mlp_dims: tuple = ()

  def __post_init__(self):
    if self.row not in ROWS:
      raise ValueError(f"cell row must be one of {ROWS}, got {self.row!r}")
    if not (math.isfinite(self.meta_lr) and self.meta_lr > 0):
      raise ValueError(f"cell meta_lr must be a positive number, got {self.meta_lr!r}")
    if self.meta_clip not in META_CLIPS:
      raise ValueError(f"cell meta_clip must be one of {sorted(META_CLIPS)}, got {self.meta_clip!r}")
    if self.row == "with" and self.reset_interval <= 0:
      raise ValueError(f"cell reset_interval must be > 0 for the 'with' row, got {self.reset_interval}")
    if self.meta_seed < 0:
      raise ValueError(f"cell meta_seed must be >= 0, got {self.meta_seed}")

  @property
  def name(self):
    net = "headfree" if not self.mlp_dims else "mlp" + "x".join(str(d) for d in self.mlp_dims)
    m = f"_m{self.reset_interval}" if self.row == "with" else ""
    return f"{self.row}{m}_lr{self.meta_lr:g}_{self.meta_clip}_seed{self.meta_seed}_{net}"

  def record(self):
    return dict(row=self.row,
                mlp_dims=list(self.mlp_dims),
                meta_lr=self.meta_lr,
                meta_clip=self.meta_clip,
                reset_interval=self.reset_interval if self.row == "with" else None,
                meta_seed=self.meta_seed)


def parse_cell(spec):
  """'ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]]' -> Cell; MLP is '16x16' or '' (head-free). Example: 'with:1e-3'."""
  parts = spec.strip().split(":")
  if not parts[0] or len(parts) > 6:
    raise ValueError(f"cell spec {spec!r} is not ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]]")
  kw = dict(row=parts[0])
  try:
    if len(parts) > 1 and parts[1]:
      kw["meta_lr"] = float(parts[1])
    if len(parts) > 2 and parts[2]:
      kw["meta_clip"] = parts[2]
    if len(parts) > 3 and parts[3]:
      kw["reset_interval"] = int(parts[3])
    if len(parts) > 4 and parts[4]:
      kw["meta_seed"] = int(parts[4])
    if len(parts) > 5 and parts[5]:
      kw["mlp_dims"] = tuple(int(d) for d in parts[5].split("x"))
  except ValueError as e:
    raise ValueError(f"cell spec {spec!r}: {e}") from None
  return Cell(**kw)


def meta_config(cell, meta_units=512, meta_iterations=585):
  """The configs/meta_a2c.py config of ``cell``'s meta-training."""
  from optim4rl_tf.configs import meta_a2c
  config = meta_a2c.get_config(TASK if cell.row == "with" else TASK + "_nopipe")
  config.optimizer.mlp_dims = tuple(cell.mlp_dims)
  config.meta_lr = cell.meta_lr
  config.update(META_CLIPS[cell.meta_clip])
  if cell.row == "with":
    config.reset_interval = cell.reset_interval
  config.seed = cell.meta_seed
  config.num_units = meta_units
  config.num_iterations = meta_iterations
  return config


def test_config(phi_path, learning_rate, num_seeds=10, test_steps=3e7, test_seed=1000):
  """The configs/a2c.py config of a cell's test: A2C on small_dense_long with the fixed phi (every cell is
  tested on the same seeds, so cells are compared on equal terms)."""
  from optim4rl_tf.configs import a2c
  config = a2c.get_config(TASK)
  config.optimizer.name = "optim4rl"
  config.optimizer.meta_params = phi_path
  config.optimizer.learning_rate = learning_rate
  config.num_seeds = num_seeds
  config.seed = test_seed
  config.train_steps = test_steps
  config.save_params = False
  return config


def _commit():
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


_CODE_COMMIT = []


def _code_commit():
  """The checkout's commit when this module was first asked (the code a long process runs is the code it
  imported, not what HEAD says when a cell finishes hours later)."""
  if not _CODE_COMMIT:
    _CODE_COMMIT.append(_commit())
  return _CODE_COMMIT[0]


def test_stats(test_dir):
  """Final returns of a finished test workdir: {finals, mean, ci_low, ci_high, ci_half_width, env_steps}."""
  from optim4rl_tf.eval import ranking
  [c] = ranking.summarize(ranking.load_workdir(test_dir))
  finals = [float(f) for f in c.finals]
  out = dict(finals=finals, seeds=len(finals), mean=c.mean, env_steps=c.env_steps)
  if c.ci is not None:
    out.update(ci_low=c.ci.low, ci_high=c.ci.high, ci_half_width=c.ci.half_width)
  return out


def run_cell(cell, root, results_dir, meta_units=512, meta_iterations=585, num_seeds=10, test_steps=3e7):
  """Meta-trains and tests ``cell`` in ``root/<cell name>/{meta,test}`` (resuming whatever is there) and writes
  its record to ``results_dir/cells/<cell name>.json``; returns the record. A cell whose record there is
  finished with the same iterations, seeds and test steps is returned as it is, nothing run or rewritten."""
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.meta import run
  from optim4rl_tf.meta import trainer as trainer_lib
  path = os.path.join(results_dir, "cells", cell.name + ".json")
  done = workdir_lib.read_json_dict(path)
  if done and done.get("test") and (done.get("meta_iterations"), done["test"].get("seeds"),
                                    done["test"].get("test_steps")) == (meta_iterations, num_seeds, test_steps):
    return done  # a finished cell keeps the record, commit included, of the run that made it
  _code_commit()  # before anything runs
  base = os.path.join(root, cell.name)
  meta_dir, test_dir = os.path.join(base, "meta"), os.path.join(base, "test")
  config = meta_config(cell, meta_units, meta_iterations)
  meta_summary = run_lifecycle.read_summary(meta_dir)
  diverged = run_lifecycle.summary_status(meta_summary) == "diverged"
  if not diverged and meta_summary.get("iterations") != meta_iterations:
    try:
      run.meta_train(config, meta_dir)
    except trainer_lib.Diverged as e:  # recorded in its summary.json; the cell has no optimizer to test
      print(f"[table1 {cell.name}] {e}", flush=True)
    meta_summary = run_lifecycle.read_summary(meta_dir)
    diverged = run_lifecycle.summary_status(meta_summary) == "diverged"
  record = dict(cell.record(), name=cell.name, task=TASK, meta_units=meta_units, meta_iterations=meta_iterations)
  record["meta"] = {k: meta_summary.get(k) for k in ("iterations", "skipped", "diverged", "it_per_sec", "peak_rss_gb")}
  phi = os.path.join(meta_dir, "phi.npz")
  if diverged or not os.path.exists(phi):
    record["test"] = None
  else:
    if run_lifecycle.summary_status(run_lifecycle.read_summary(test_dir)) != "finished":
      a2c_train.train(test_config(phi, config.tasks[0].learning_rate, num_seeds, test_steps), test_dir)
    record["test"] = test_stats(test_dir)
    record["test"].update(test_steps=test_steps, agent_lr=config.tasks[0].learning_rate)
  record["commit"] = _code_commit()
  os.makedirs(os.path.join(results_dir, "cells"), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)
  return record


def load_cells(results_dir):
  """The cell records in ``results_dir/cells`` with a finished test, sorted by name."""
  out = []
  cells_dir = os.path.join(results_dir, "cells")
  for name in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
    rec = workdir_lib.read_json_dict(os.path.join(cells_dir, name))
    if name.endswith(".json") and rec and rec.get("test"):
      out.append(rec)
  return out


def best_of(records, n):
  """The best (highest mean test return) of the first ``n`` records in sweep order (meta seed 0 only)."""
  pool = [r for r in records if r["meta_seed"] == 0][:n]
  return max(pool, key=lambda r: r["test"]["mean"]) if pool else None


def summarize_cells(records):
  """Per row: the cells, best-of-N with the same N for both rows, the mean over cells and the meta-seed
  spread of the best cell; plus the verdict on whether pipeline training helps."""
  rows = {row: [r for r in records if r["row"] == row] for row in ROWS}
  seed0 = {row: [r for r in rs if r["meta_seed"] == 0] for row, rs in rows.items()}
  n = min(len(seed0["with"]), len(seed0["without"]))
  out = dict(equal_n=n, rows={})
  for row, rs in rows.items():
    best = best_of(rs, n) if n else None
    means = [r["test"]["mean"] for r in seed0[row]]
    same = [r for r in rs if best and _same_cell_but_seed(r, best)]
    out["rows"][row] = dict(
        cells=len(rs),
        best_of_n=None if best is None else dict(
            name=best["name"], mean=best["test"]["mean"], ci_half_width=best["test"].get("ci_half_width")),
        mean_over_cells=float(np.mean(means)) if means else None,
        best_cell_meta_seeds={str(r["meta_seed"]): r["test"]["mean"] for r in same})
  w, wo = out["rows"]["with"]["best_of_n"], out["rows"]["without"]["best_of_n"]
  if not n:
    out["verdict"] = "undecided: no pair of rows measured yet"
  else:
    gap = w["mean"] - wo["mean"]
    hw = (w["ci_half_width"] or 0) + (wo["ci_half_width"] or 0)
    if abs(gap) <= hw:
      word = "does not separate the rows (the gap is within the two CIs)"
    else:
      word = "helps" if gap > 0 else "hurts"
    out["verdict"] = f"pipeline training {word}: best-of-{n} with {w['mean']:.2f} vs without {wo['mean']:.2f}"
  return out


def _same_cell_but_seed(a, b):
  keys = ("row", "mlp_dims", "meta_lr", "meta_clip", "reset_interval")
  return all(a[k] == b[k] for k in keys)


def cells_markdown(records, summary):
  """The per-cell table and the summary as markdown."""
  lines = [
      "| row | m | meta lr | meta-gradient | meta seed | network | final return (± 90% CI) | seeds | test steps |",
      "|---|---|---|---|---|---|---|---|---|"
  ]
  for r in sorted(records,
                  key=lambda r: (r["row"], r["meta_clip"], r["meta_lr"], r["reset_interval"] or 0, r["meta_seed"])):
    t = r["test"]
    net = "head-free" if not r["mlp_dims"] else str(tuple(r["mlp_dims"]))
    ci = f"{t['mean']:.2f} ± {t.get('ci_half_width', float('nan')):.2f}"
    lines.append(f"| {r['row']} | {r['reset_interval'] or '—'} | {r['meta_lr']:g} | {r['meta_clip']} | "
                 f"{r['meta_seed']} | {net} | {ci} | {t['seeds']} | {t['env_steps']:.3g} |")
  lines += ["", f"Best-of-N with equal N = {summary['equal_n']} (meta seed 0 cells, sweep order):", ""]
  for row in ROWS:
    s = summary["rows"][row]
    best = s["best_of_n"]
    best_txt = "—" if best is None else f"{best['mean']:.2f} ({best['name']})"
    mean_txt = "—" if s["mean_over_cells"] is None else f"{s['mean_over_cells']:.2f}"
    seeds = ", ".join(f"seed {k}: {v:.2f}" for k, v in sorted(s["best_cell_meta_seeds"].items())) or "—"
    lines.append(f"- **{row}** ({s['cells']} cells): best {best_txt}; mean over cells {mean_txt}; "
                 f"best cell by meta seed: {seeds}")
  lines += ["", f"**Verdict:** {summary['verdict']}."]
  return "\n".join(lines) + "\n"


def collect(results_dir):
  """Writes ``cells.json`` (every cell with its numbers and the summary) and ``cells.md`` into ``results_dir``;
  returns the summary."""
  records = load_cells(results_dir)
  summary = summarize_cells(records)
  data = dict(item="Table 1, small_dense_long, cell by cell",
              command="python launch/table1_cells.py --cells=ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]],... "
              "--workdir=runs/table1_cells --results=results/table1_sdl",
              cells=records,
              summary=summary)
  with open(os.path.join(results_dir, "cells.json"), "w") as f:
    json.dump(data, f, indent=1)
  with open(os.path.join(results_dir, "cells.md"), "w") as f:
    f.write("# Table 1, small_dense_long: the sweep cell by cell\n\n" + cells_markdown(records, summary))
  return summary
