"""How far a shipped optimizer transfers: A2C with fixed learned optimizers vs Adam and RMSProp on every
gridworld and Catch (the paper's Figure 4 question, asked on the tasks this CPU can afford).

Every optimizer, learned or not, runs at each learning rate of one grid (:data:`lr_choice.LRS`,
{3e-4, 1e-3, 3e-3}) and is reported at its best rate per task (:func:`lr_choice.choose`), so the comparison is
fair and each learned optimizer's card can state where it works. The gradient clip is the A2C config's
(elementwise 1.0 on gridworlds, off on Catch) for every optimizer.

:func:`run` trains one A2C run (``num_seeds`` seeds as one graph) per (task, optimizer, lr) cell and writes
``table.md`` (each optimizer's final return at its best rate, mean ± 90% percentile-bootstrap CI over seeds,
and its ratio to Adam's best), ``numbers.json`` (every seed's final return at every rate, the choices, the
budgets, the command, the commit) and ``generalisation.png`` into ``out_dir``. Each cell's run directory
under ``out_dir/runs`` is reused when it already holds a finished run of the same config, so an interrupted
call resumes cell by cell.
"""

import json
import os
import subprocess

import numpy as np

from optim4rl_tf.envs import registry
from optim4rl_tf.eval import lr_choice

# Tasks the grid6 optimizer was meta-trained on, the two gridworlds it never saw, and Catch.
UNSEEN_GRIDS = tuple(name for name in registry.GRID_NAMES if name not in registry.GRID6_NAMES)
TASKS = registry.GRID6_NAMES + UNSEEN_GRIDS + ("catch",)
BASELINES = ("Adam", "RMSProp")
OPTIMIZERS = ("Optim4RL grid6", "Optim4RL catch", "Optim4RL inverted_pendulum") + BASELINES

LEARNED_PREFIX = "Optim4RL "


def learned_name(optimizer):
  """'Optim4RL NAME' or 'Optim4RL PATH.npz' -> NAME or PATH; None for any other label (a baseline)."""
  return optimizer[len(LEARNED_PREFIX):] if optimizer.startswith(LEARNED_PREFIX) else None


def learned_file(optimizer):
  """The meta-parameter file of learned optimizer ``optimizer``: 'Optim4RL NAME' -> the shipped file NAME,
  'Optim4RL PATH.npz' -> PATH (a phi of one's own, e.g. a meta-training's ``phi.npz``)."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  name = learned_name(optimizer)
  return pretrained.path(name) if name in pretrained.available() else name


def check_optimizer(optimizer):
  """ValueError naming the valid choices unless ``optimizer`` is a baseline, 'Optim4RL <shipped name>' or
  'Optim4RL <path to an Optim4RL .npz file>'."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.optimizers import meta_params  # pylint: disable=import-outside-toplevel
  if optimizer in BASELINES:
    return
  name = learned_name(optimizer)
  if name in pretrained.available():
    return
  if name is not None and name.endswith(".npz"):
    if not os.path.isfile(name):
      raise ValueError(f"{optimizer!r}: meta-parameter file not found: {name!r}")
    made_for = meta_params.read_meta(name).get("optimizer")
    if made_for != "optim4rl":
      raise ValueError(f"{optimizer!r}: {name!r} is a file of optimizer {made_for!r}, not of Optim4RL")
    return
  raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(BASELINES)}, 'Optim4RL NAME' with NAME one "
                   f"of the pretrained names shipped here ({', '.join(pretrained.available())}) or "
                   f"'Optim4RL PATH.npz' with PATH an Optim4RL meta-parameter file")


def cell_config(task, optimizer, steps, num_seeds, learning_rate, seed=0):
  """The A2C config of one cell: ``optimizer`` ('Adam', 'RMSProp', 'Optim4RL NAME' with NAME a shipped file or
  'Optim4RL PATH.npz') at ``learning_rate`` with the config's gradient clip."""
  from optim4rl_tf.configs import a2c  # pylint: disable=import-outside-toplevel
  check_optimizer(optimizer)
  c = a2c.get_config(task)
  if optimizer.startswith(LEARNED_PREFIX):
    c.optimizer.name = "optim4rl"
    c.optimizer.meta_params = learned_file(optimizer)
  else:
    c.optimizer.name = optimizer.lower()
  c.optimizer.learning_rate = float(learning_rate)
  c.train_steps = float(steps)
  c.num_seeds = num_seeds
  c.seed = seed
  c.save_params = False
  c.plot = False
  return c


def _cell_dir(out_dir, task, optimizer, learning_rate):
  """One flat folder per cell (a file path in the label becomes part of the name: no nested folders)."""
  label = optimizer.replace(" ", "_").replace(os.sep, "-")
  return os.path.join(out_dir, "runs", f"{task}__{label}__lr{learning_rate:g}")


def _train_cell(config, workdir):
  """Final returns per seed (NaN for a diverged seed), training unless the workdir holds a finished run of
  the same config and, for a learned optimizer, the same phi (a shipped file remade at the same path is a
  new optimizer: its cells are trained again)."""
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
  done = os.path.join(workdir, "cell.json")
  phi = reproduce.phi_digest(config.optimizer.meta_params)
  if os.path.exists(done):
    with open(done) as f:
      saved = json.load(f)
    if _without_path(saved["config"]) == _without_path(json.loads(config.to_json())) and saved.get("phi") == phi:
      return saved["final"]
  if os.path.isdir(workdir):
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(workdir)
  result = a2c_train.train(config, workdir, console=False)
  final = [float(x) for x in np.asarray(result["final"], np.float64)]
  with open(done, "w") as f:
    json.dump({"config": json.loads(config.to_json()), "phi": phi, "final": final}, f)
  return final


def _without_path(config):
  """A cell's config without the file path of its phi (the phi's digest stands for it: an installation
  elsewhere reuses the same cells)."""
  return dict(config, optimizer={k: v for k, v in config["optimizer"].items() if k != "meta_params"})


def _commit():
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"],
                          cwd=os.path.dirname(os.path.abspath(__file__)),
                          capture_output=True,
                          text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _choice_json(choice, adam_best):
  ci = choice.ci
  return {
      "lr": choice.lr,
      "mean": None if ci is None else ci.mean,
      "low": None if ci is None else ci.low,
      "high": None if ci is None else ci.high,
      "diverged": choice.diverged,
      "works_at": list(choice.works_at),
      # No ratio from a rate with diverged seeds (its mean is of the survivors only), nor to such an Adam.
      "ratio_to_adam_best": None if choice.diverged or ci is None else lr_choice.ratio(ci.mean, adam_best),
  }


def run(out_dir,
        small_steps,
        big_steps,
        catch_steps,
        num_seeds,
        tasks=TASKS,
        optimizers=OPTIMIZERS,
        lrs=lr_choice.LRS,
        command="",
        progress=print):
  """Trains every (task, optimizer, lr) cell and writes the table, numbers and figure. Returns the numbers
  dict: ``final_per_seed[task][optimizer][f"{lr:g}"]``, ``best[task][optimizer]`` (lr, mean, low, high,
  diverged, works_at, ratio_to_adam_best)."""
  for optimizer in optimizers:
    check_optimizer(optimizer)
  lrs = lr_choice.check_grid(lrs)
  os.makedirs(out_dir, exist_ok=True)
  finals, best = {}, {}
  for task in tasks:
    steps = catch_steps if task == "catch" else small_steps if task.startswith("small") else big_steps
    for optimizer in optimizers:
      by_lr = {}
      for lr in lrs:
        config = cell_config(task, optimizer, steps, num_seeds, lr)
        by_lr[lr] = _train_cell(config, _cell_dir(out_dir, task, optimizer, lr))
        ok = np.asarray(by_lr[lr])
        mean = np.mean(ok[np.isfinite(ok)]) if np.isfinite(ok).any() else np.nan
        progress(f"{task:18s} {optimizer:15s} lr {lr:<7g} final {mean:9.3f} ({np.isnan(ok).sum()} diverged)")
      finals.setdefault(task, {})[optimizer] = {f"{lr:g}": v for lr, v in by_lr.items()}
      best.setdefault(task, {})[optimizer] = lr_choice.choose(by_lr)
  numbers = {
      "tasks": list(tasks),
      "optimizers": list(optimizers),
      "learning_rates": list(lrs),
      "final_per_seed": finals,
      "steps_per_seed": {
          "small grids": small_steps,
          "big grids": big_steps,
          "catch": catch_steps
      },
      "num_seeds": num_seeds,
      "final_return": "mean of the last 20 logged returns of each seed",
      "ci": "90% percentile bootstrap of the mean over the finite seeds",
      "command": command,
      "commit": _commit(),
      "best": {}
  }
  for task in tasks:
    adam = best[task].get("Adam")
    adam_best = adam.ci.mean if adam is not None and adam.ci is not None and not adam.diverged else None
    numbers["best"][task] = {o: _choice_json(best[task][o], adam_best) for o in optimizers}
  with open(os.path.join(out_dir, "numbers.json"), "w") as f:
    json.dump(numbers, f, indent=1)
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(table_markdown(numbers))
  plot(numbers, os.path.join(out_dir, "generalisation.png"))
  return numbers


def seen_tasks(optimizer):
  """The tasks a learned optimizer ('Optim4RL NAME') was meta-trained on, from its shipped file's recorded
  config (else its recipe); for 'Optim4RL PATH.npz', from the config the file records (a shipped file's
  provenance), else () (a meta-training's ``phi.npz`` records none: every task counts as unseen); () for a
  baseline."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.optimizers import meta_params  # pylint: disable=import-outside-toplevel
  if optimizer in BASELINES:
    return ()
  name = learned_name(optimizer)
  if name not in pretrained.names():
    return pretrained.tasks_of(meta_params.read_meta(name).get("config") or {}) if os.path.isfile(name) else ()
  try:
    recorded = pretrained.provenance(name).get("config") or {}
  except ValueError:  # not shipped in this installation
    recorded = {}
  return pretrained.tasks_of(recorded) or pretrained.tasks_of(pretrained.config(name))


def _cell_text(b):
  if b["mean"] is None:
    return "diverged"
  text = f"{b['mean']:.3g} ± {(b['high'] - b['low']) / 2:.2g} @ {b['lr']:g}"
  if b["ratio_to_adam_best"] is not None:
    text += f" ({b['ratio_to_adam_best']:.2f}x)"
  return text + (f" ({b['diverged']} diverged)" if b["diverged"] else "")


def table_markdown(numbers):
  """Rows: tasks (with the learned optimizers that were meta-trained on them); columns: optimizers, each at
  its best rate: mean ± half-width of the 90% CI @ lr (ratio to Adam's best where Adam's best is positive);
  then, per learned optimizer, its ratios on the tasks it never saw and the rates where it works."""
  opts = numbers["optimizers"]
  learned = [o for o in opts if o not in BASELINES]
  seen = {o: seen_tasks(o) for o in learned}
  lines = ["| task | meta-trained on it | " + " | ".join(opts) + " |", "|---|---|" + "---|" * len(opts)]
  for task in numbers["tasks"]:
    cells = [_cell_text(numbers["best"][task][o]) for o in opts]
    by = ", ".join(learned_name(o) for o in learned if task in seen[o]) or "-"
    lines.append(f"| {task} | {by} | " + " | ".join(cells) + " |")
  lines += [
      "", "On the tasks each learned optimizer never saw (ratio = its best / Adam's best; a task whose Adam "
      "best is not positive or has diverged seeds is not counted; a learned optimizer with diverged seeds at its "
      "best rate counts as ratio 0):", ""
  ]
  lines += [
      "| optimizer | unseen tasks | at >= 0.8x Adam's best | median ratio | works at (per task) |",
      "|---|---|---|---|---|"
  ]
  for o in learned:
    unseen = [t for t in numbers["tasks"] if t not in seen[o]]
    ratios = []
    for t in unseen:
      adam = numbers["best"][t].get("Adam")
      if adam is None or adam["mean"] is None or adam["diverged"] or adam["mean"] <= 0:
        continue  # no reference
      ratios.append(numbers["best"][t][o]["ratio_to_adam_best"] or 0.0)
    good = sum(r >= 0.8 for r in ratios)
    works = "; ".join(f"{t}: {lr_choice.lr_text(numbers['best'][t][o]['works_at']) or '-'}" for t in unseen)
    median = f"{np.median(ratios):.2f}x" if ratios else "-"
    lines.append(f"| {o} | {len(unseen)} | {good} of {len(ratios)} | {median} | {works} |")
  return "\n".join(lines) + "\n"


def plot(numbers, path):
  """Grouped bars: per task, each optimizer's final return at its best rate, normalised by the largest
  |mean| on that task, with its 90% CI."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  tasks, opts = numbers["tasks"], numbers["optimizers"]
  fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 3.6))
  width = 0.8 / len(opts)
  for j, optimizer in enumerate(opts):
    means, errs = [], []
    for task in tasks:
      b = numbers["best"][task][optimizer]
      scale = max([abs(numbers["best"][task][o]["mean"]) for o in opts if numbers["best"][task][o]["mean"] is not None]
                  or [1.0]) or 1.0
      ok = b["mean"] is not None
      means.append(b["mean"] / scale if ok else np.nan)
      errs.append([(b["mean"] - b["low"]) / scale if ok else 0, (b["high"] - b["mean"]) / scale if ok else 0])
    ax.bar(np.arange(len(tasks)) + j * width, means, width, yerr=np.asarray(errs).T, label=optimizer, capsize=2)
  ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
  ax.set_xticklabels([t.replace("_", "\n") for t in tasks], fontsize=7)
  ax.axhline(0, color="k", lw=0.5)
  ax.set_ylabel("final return / |best mean|")
  lrs = lr_choice.lr_text(numbers["learning_rates"])
  ax.set_title(f"A2C final return, each optimizer at its best lr of {{{lrs}}} (90% CI)", fontsize=9)
  ax.legend(fontsize=7, ncol=len(opts))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
