"""How far a shipped optimizer transfers: A2C with fixed learned optimizers vs Adam and RMSProp on every
gridworld and Catch (the paper's Figure 4 question, asked on the tasks this CPU can afford).

:func:`run` trains one A2C run (``num_seeds`` seeds as one graph) per (task, optimizer) cell and writes
``table.md`` (final return, mean ± 90% percentile-bootstrap CI over seeds), ``numbers.json`` (every seed's
final return, the budgets, the command, the commit) and ``generalisation.png`` into ``out_dir``. Each cell's
run directory under ``out_dir/runs`` is reused when it already holds a finished run of the same config, so
an interrupted call resumes cell by cell.
"""

import json
import os
import subprocess

import numpy as np

from optim4rl_tf.envs import registry
from optim4rl_tf.utils import stats

# Tasks the grid6 optimizer was meta-trained on, the two gridworlds it never saw, and Catch.
UNSEEN_GRIDS = tuple(name for name in registry.GRID_NAMES if name not in registry.GRID6_NAMES)
TASKS = registry.GRID6_NAMES + UNSEEN_GRIDS + ("catch",)
# Agent learning rates of the learned optimizers: grid6's per-task rates (configs/meta_a2c.py GRID6) on its
# tasks, 3e-3 on the unseen small grids (as on the seen small_dense_short), 1e-3 on Catch (the main job).
LEARNED_LR = {
    "small_dense_long": 1e-3,
    "small_dense_short": 3e-3,
    "big_sparse_short": 3e-3,
    "big_dense_short": 3e-3,
    "big_sparse_long": 1e-3,
    "big_dense_long": 3e-3,
    "small_sparse_short": 3e-3,
    "small_sparse_long": 3e-3,
    "catch": 1e-3
}
OPTIMIZERS = ("Optim4RL grid6", "Optim4RL catch", "Adam", "RMSProp")


def cell_config(task, optimizer, steps, num_seeds, seed=0):
  """The A2C config of one cell. Adam/RMSProp use the configs' defaults (lr 3e-3 with elementwise clip 1.0
  on gridworlds, lr 1e-3 on Catch); learned optimizers :data:`LEARNED_LR`."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.configs import a2c  # pylint: disable=import-outside-toplevel
  c = a2c.get_config(task)
  base_lr = c.optimizer.learning_rate
  if optimizer.startswith("Optim4RL"):
    c.optimizer.name = "optim4rl"
    c.optimizer.meta_params = pretrained.path(optimizer.split()[1])
    c.optimizer.learning_rate = LEARNED_LR[task]
  else:
    c.optimizer.name = optimizer.lower()
    c.optimizer.learning_rate = base_lr
  c.train_steps = float(steps)
  c.num_seeds = num_seeds
  c.seed = seed
  c.save_params = False
  c.plot = False
  return c


def _cell_dir(out_dir, task, optimizer):
  return os.path.join(out_dir, "runs", f"{task}__{optimizer.replace(' ', '_')}")


def _train_cell(config, workdir):
  """Final returns per seed (NaN for a diverged seed), training if the workdir has no finished run."""
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  done = os.path.join(workdir, "cell.json")
  if os.path.exists(done):
    with open(done) as f:
      saved = json.load(f)
    if saved["config"] == json.loads(config.to_json()):
      return saved["final"]
  if os.path.isdir(workdir):
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(workdir)
  result = a2c_train.train(config, workdir, console=False)
  final = [float(x) for x in np.asarray(result["final"], np.float64)]
  with open(done, "w") as f:
    json.dump({"config": json.loads(config.to_json()), "final": final}, f)
  return final


def _commit():
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"],
                          cwd=os.path.dirname(os.path.abspath(__file__)),
                          capture_output=True,
                          text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def run(out_dir,
        small_steps,
        big_steps,
        catch_steps,
        num_seeds,
        tasks=TASKS,
        optimizers=OPTIMIZERS,
        command="",
        progress=print):
  """Trains every cell and writes the table, numbers and figure. Returns the numbers dict."""
  os.makedirs(out_dir, exist_ok=True)
  finals = {}
  for task in tasks:
    steps = catch_steps if task == "catch" else small_steps if task.startswith("small") else big_steps
    for optimizer in optimizers:
      config = cell_config(task, optimizer, steps, num_seeds)
      finals.setdefault(task, {})[optimizer] = _train_cell(config, _cell_dir(out_dir, task, optimizer))
      ok = np.asarray(finals[task][optimizer])
      progress(f"{task:18s} {optimizer:15s} final {np.nanmean(ok):9.3f} ({np.isnan(ok).sum()} diverged)")
  numbers = {
      "tasks": list(tasks),
      "optimizers": list(optimizers),
      "final_per_seed": finals,
      "steps_per_seed": {
          "small grids": small_steps,
          "big grids": big_steps,
          "catch": catch_steps
      },
      "num_seeds": num_seeds,
      "learned_lr": LEARNED_LR,
      "command": command,
      "commit": _commit(),
      "ci": {}
  }
  for task in tasks:
    for optimizer in optimizers:
      x = np.asarray(finals[task][optimizer], np.float64)
      x = x[np.isfinite(x)]
      ci = stats.bootstrap_ci(x) if x.size else None
      numbers["ci"].setdefault(task, {})[optimizer] = (None if ci is None else {
          "mean": ci.mean,
          "low": ci.low,
          "high": ci.high,
          "diverged": int(len(finals[task][optimizer]) - x.size)
      })
  with open(os.path.join(out_dir, "numbers.json"), "w") as f:
    json.dump(numbers, f, indent=1)
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(table_markdown(numbers))
  plot(numbers, os.path.join(out_dir, "generalisation.png"))
  return numbers


def table_markdown(numbers):
  """Rows: tasks (marked seen by grid6 / unseen); columns: optimizers; mean ± half-width of the 90% CI."""
  opts = numbers["optimizers"]
  lines = ["| task | grid6 saw it | " + " | ".join(opts) + " |", "|---|---|" + "---|" * len(opts)]
  for task in numbers["tasks"]:
    cells = []
    for optimizer in opts:
      ci = numbers["ci"][task][optimizer]
      if ci is None:
        cells.append("diverged")
        continue
      text = f"{ci['mean']:.3g} ± {(ci['high'] - ci['low']) / 2:.2g}"
      cells.append(text + (f" ({ci['diverged']} diverged)" if ci["diverged"] else ""))
    seen = "yes" if task in registry.GRID6_NAMES else "no"
    lines.append(f"| {task} | {seen} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(numbers, path):
  """Grouped bars: per task, each optimizer's final return normalised by the best mean on that task."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  tasks, opts = numbers["tasks"], numbers["optimizers"]
  fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 3.6))
  width = 0.8 / len(opts)
  for j, optimizer in enumerate(opts):
    means, errs = [], []
    for task in tasks:
      ci = numbers["ci"][task][optimizer]
      scale = max(abs(numbers["ci"][task][o]["mean"]) for o in opts if numbers["ci"][task][o]) or 1.0
      means.append(ci["mean"] / scale if ci else np.nan)
      errs.append([(ci["mean"] - ci["low"]) / scale if ci else 0, (ci["high"] - ci["mean"]) / scale if ci else 0])
    ax.bar(np.arange(len(tasks)) + j * width, means, width, yerr=np.asarray(errs).T, label=optimizer, capsize=2)
  ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
  ax.set_xticklabels([t.replace("_", "\n") for t in tasks], fontsize=7)
  ax.axhline(0, color="k", lw=0.5)
  ax.set_ylabel("final return / |best mean|")
  ax.set_title("A2C final return per optimizer (90% CI)", fontsize=9)
  ax.legend(fontsize=7, ncol=len(opts))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
