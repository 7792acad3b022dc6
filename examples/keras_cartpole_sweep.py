"""Sweep of examples/keras_cartpole.py: every (optimizer, learning rate, seed) cell, then a report.

  nohup .venv/bin/python examples/keras_cartpole_sweep.py --out=runs/keras_cartpole \\
      --results=results/keras_cartpole > runs/keras_cartpole.log 2>&1 &
  .venv/bin/python examples/keras_cartpole_sweep.py --report_only ...   # rewrite the report from --out
  .venv/bin/python examples/keras_cartpole_sweep.py --env=Acrobot-v1 --out=runs/keras_acrobot \\
      --results=results/keras_acrobot ...   # another gymnasium task; ratios count from --floor_return

The cells run one after another in this process (``keras_cartpole.main``; one TensorFlow import for all),
seed-major, so a partial sweep covers every cell. Each cell writes ``<out>/<optimizer>_lr<lr>_seed<seed>.json``
and a cell whose file exists is skipped: run the same command again to resume or to add seeds.

The report (``--results``): README.md (status, the optimizer x lr table of final returns, mean ± half-width
of the 90% bootstrap CI over seeds, best lr per optimizer and its ratio to Adam's best, the lr range where
each optimizer works), numbers.json (every cell's per-seed finals, budget, command, commit) and curves.png
(learning curves at each optimizer's best lr).
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import keras_cartpole  # noqa: E402
from optim4rl_tf import pretrained  # noqa: E402
from optim4rl_tf.optimizers import meta_params  # noqa: E402
from optim4rl_tf.utils import stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZERS = ("adam", "optim4rl:catch", "optim4rl:grid6", "optim4rl:small_dense_long")
CURVE_BIN = 4000  # env steps per point of the learning curves
# The return of a policy that never succeeds within the time limit (every step's reward -1 on Acrobot and
# MountainCar): ratios to Adam are of the return above it, (R - floor) / (R_Adam - floor).
FLOOR_RETURNS = {"CartPole-v1": 0.0, "Acrobot-v1": -500.0, "MountainCar-v0": -200.0}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/keras_cartpole", help="raw per-cell results (outside the repo)")
  p.add_argument("--env", default=keras_cartpole.DEFAULT_ENV, help="gymnasium task id (examples/keras_cartpole.py)")
  p.add_argument("--floor_return",
                 type=float,
                 default=None,
                 help="the return of a policy that learns nothing; ratios to Adam are of the return above it "
                 f"(default: {FLOOR_RETURNS})")
  p.add_argument("--results", default=os.path.join(ROOT, "results", "keras_cartpole"))
  p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  p.add_argument("--lrs", default="3e-4,1e-3,3e-3")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=80000)
  p.add_argument("--clipvalue", default="1.0")
  p.add_argument("--extra",
                 default="",
                 help="extra cells outside the fair lr grid, OPTIMIZER@LR,... (a separate table, not in 'best')")
  p.add_argument("--report_only", action="store_true")
  args = p.parse_args(argv)
  if args.floor_return is None:
    if args.env not in FLOOR_RETURNS:
      p.error(f"--floor_return is needed for --env={args.env} (the return of a policy that learns nothing; known: "
              f"{FLOOR_RETURNS})")
    args.floor_return = FLOOR_RETURNS[args.env]
  return args


def cell_file(out, optimizer, lr, seed):
  return os.path.join(out, f"{optimizer.replace(':', '-').replace(os.sep, '-')}_lr{lr:g}_seed{seed}.json")


def parse_extra(extra):
  return [keras_cartpole.parse_spec_at_lr(item, "every --extra item") for item in filter(None, extra.split(","))]


def run_cells(args, pairs, seeds):
  """Runs every (optimizer, lr) of ``pairs`` for every seed, seed-major, skipping cells already done."""
  os.makedirs(args.out, exist_ok=True)
  for seed in seeds:
    for optimizer, lr in pairs:
      path = cell_file(args.out, optimizer, lr, seed)
      if os.path.exists(path):
        continue
      keras_cartpole.main([
          f"--env={args.env}", f"--optimizer={optimizer}", f"--lr={lr}", f"--seed={seed}", f"--steps={args.steps}",
          f"--clipvalue={args.clipvalue}", f"--json={path}.tmp", "--log_every=20000"
      ])
      os.replace(f"{path}.tmp", path)


def curve(result, steps):
  """Mean return of the episodes that ended in each CURVE_BIN-step bin (carried forward over empty bins)."""
  edges = np.arange(CURVE_BIN, steps + 1, CURVE_BIN)
  ends, returns = np.asarray(result["episode_steps"]), np.asarray(result["episode_returns"])
  points, last = [], 0.0
  for hi in edges:
    inside = (ends > hi - CURVE_BIN) & (ends <= hi)
    last = float(returns[inside].mean()) if inside.any() else last
    points.append(last)
  return edges, np.asarray(points)


def git_commit():
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def file_meta(optimizer):
  """The recorded provenance of an ``optim4rl:NAME`` or ``optim4rl:PATH.npz`` optimizer."""
  name = optimizer.split(":", 1)[1]
  return meta_params.read_meta(name) if name.endswith(".npz") else pretrained.provenance(name)


def network(optimizer):
  if optimizer == "adam":
    return "-"
  meta = file_meta(optimizer)
  heads = "head-free (official HEAD)" if not meta["mlp_dims"] else f"{list(meta['mlp_dims'])} heads (paper)"
  return (f"Optim4RL, {heads}, GRU hidden {meta['hidden_size']}; meta-trained at commit "
          f"{str(meta.get('commit', 'unknown'))[:7]}")


def load(path, env=keras_cartpole.DEFAULT_ENV):
  """One cell's result; a cell of another task than ``env`` (an --out shared by two sweeps) is refused."""
  with open(path, encoding="utf-8") as f:
    result = json.load(f)
  if result.get("env", keras_cartpole.DEFAULT_ENV) != env:
    raise SystemExit(f"{path} is a run on {result.get('env', keras_cartpole.DEFAULT_ENV)}, not --env={env}: give "
                     "each task its own --out")
  return result


def report(args, optimizers, lrs, seeds):
  cells, curves = {}, {}
  grid = [(o, lr) for o in optimizers for lr in lrs]
  for optimizer, lr in grid + [p for p in parse_extra(args.extra) if p not in grid]:
    paths = [cell_file(args.out, optimizer, lr, seed) for seed in seeds]
    results = [load(path, args.env) for path in paths if os.path.exists(path)]
    if not results:
      continue
    finals = [r["final_return"] for r in results]
    ci = stats.bootstrap_ci(finals)
    cells[(optimizer, lr)] = {
        "optimizer": optimizer,
        "lr": lr,
        "seeds": [r["seed"] for r in results],
        "finals": finals,
        "mean": ci.mean,
        "ci90": [ci.low, ci.high],
        "half_width": ci.half_width,
        "wall_secs": [r["wall_secs"] for r in results],
    }
    curves[(optimizer, lr)] = [curve(r, args.steps) for r in results]
    curve_means = [float(y.mean()) for _, y in curves[(optimizer, lr)]]
    area = stats.bootstrap_ci(curve_means)
    cells[(optimizer, lr)].update(curve_means=curve_means, curve_mean=area.mean, curve_half_width=area.half_width)
  if not cells:
    raise SystemExit(f"no results in {args.out}")
  best = {}
  for optimizer in optimizers:
    mine = [c for (o, lr), c in cells.items() if o == optimizer and lr in lrs]
    if mine:
      top = max(mine, key=lambda c: c["mean"])
      works = sorted(c["lr"] for c in mine if c["mean"] >= top["ci90"][0])
      best[optimizer] = {"lr": top["lr"], "mean": top["mean"], "ci90": top["ci90"], "works_at": works}
  adam_best = best.get("adam", {}).get("mean")
  for b in best.values():
    b["ratio_to_adam_best"] = stats.ratio_above_floor(b["mean"], adam_best, args.floor_return)

  commit = git_commit()
  results_arg = os.path.relpath(os.path.abspath(args.results), ROOT)  # as the repo's commands name it
  if results_arg.startswith(os.pardir):  # outside the repository: as given
    results_arg = args.results
  env_flags = "" if args.env == keras_cartpole.DEFAULT_ENV else f" --env={args.env}"
  if args.floor_return != FLOOR_RETURNS.get(args.env):
    env_flags += f" --floor_return={args.floor_return:g}"
  command = (f"python examples/keras_cartpole_sweep.py --out={args.out} --results={results_arg}{env_flags} "
             f"--optimizers={','.join(optimizers)} --lrs={args.lrs} --seeds={args.seeds} --steps={args.steps} "
             f"--clipvalue={args.clipvalue}" + (f" --extra={args.extra}" if args.extra else ""))
  os.makedirs(args.results, exist_ok=True)
  numbers = {
      "item": f"Shipped Optim4RL files vs Adam on gymnasium {args.env} (unseen task), A2C/GAE, Keras custom loop",
      "env": args.env,
      "floor_return": args.floor_return,
      "ratio": "(best - floor_return) / (Adam's best - floor_return)",
      "budget_env_steps": args.steps,
      "clipvalue": args.clipvalue,
      "final_return": "mean return of the last 20 finished episodes of each run",
      "ci": "90% percentile bootstrap over seeds (optim4rl_tf.utils.stats.bootstrap_ci)",
      "command": command,
      "commit": commit,
      "seeds": seeds,
      "networks": {
          o: network(o) for o in optimizers
      },
      "cells": {
          f"{o}_lr{lr:g}": c for (o, lr), c in cells.items()
      },
      "best": best,
      "mean_wall_secs": float(np.mean([w for c in cells.values() for w in c["wall_secs"]])),
      # the keys every results/*/numbers.json carries
      "status": status_line(optimizers, best),
      "budget": f"{args.steps} env steps per run, seeds {seeds}, lrs {args.lrs} per optimizer",
      "commands": {
          "sweep": {
              "command": command,
              "commit": commit,
              "png": "curves.png"
          }
      },
      "results": {
          "best": best
      },
      "mlp_dims": {
          o.split(":", 1)[1]: list(file_meta(o)["mlp_dims"]) for o in optimizers if o != "adam"
      },
  }
  with open(os.path.join(args.results, "numbers.json"), "w", encoding="utf-8") as f:
    json.dump(numbers, f, indent=1)
  plot(args, best, curves)
  with open(os.path.join(args.results, "README.md"), "w", encoding="utf-8") as f:
    f.write(readme(numbers, optimizers, lrs, cells, best))
  print(json.dumps(best, indent=1))
  return numbers


def target_return(adam_mean, floor):
  """The return at 0.8x Adam's best, counted above ``floor`` (``stats.ratio_above_floor``)."""
  return floor + 0.8 * (adam_mean - floor)


def verdict(optimizers, best):
  """(learned optimizers with a best cell, those whose best reaches 0.8x Adam's best, those that do not)."""
  learned = [o for o in optimizers if o != "adam" and o in best]
  reach = [o for o in learned if (best[o]["ratio_to_adam_best"] or 0.0) >= 0.8]
  return learned, reach, [o for o in learned if o not in reach]


def status_line(optimizers, best):
  """Each learned optimizer's best as a ratio to Adam's best and whether it reaches 0.8x."""
  if "adam" not in best:
    return "measured; no Adam in this sweep, so no verdict against it"
  learned, reach, miss = verdict(optimizers, best)
  ratios = ", ".join(f"{o.split(':')[-1]} {ratio_text(best[o], 2)}" for o in learned)
  return (f"measured; best / Adam's best: {ratios}; reach 0.8x: {', '.join(reach) or 'none'}; do not: "
          f"{', '.join(miss) or 'none'}")


def plain(best, learned, lrs, floor):
  """One plain paragraph: does each shipped file reach 0.8x Adam's best, and where does it work."""
  adam = best.get("adam")
  if not adam:
    return ""
  target = target_return(adam["mean"], floor)
  parts = []
  for o in learned:
    b = best[o]
    if b["mean"] >= target:
      verdict = "reaches 0.8x Adam's best"
    elif b["ci90"][1] >= target:
      verdict = "falls short of 0.8x Adam's best, though its 90% CI reaches it"
    else:
      verdict = "falls short of 0.8x Adam's best (its whole 90% CI is below it)"
    parts.append(f"`{o.split(':')[-1]}` {verdict} ({fmt(b['mean'])} vs {fmt(target)}) and was measured to work at lr "
                 f"{', '.join(f'{lr:g}' for lr in b['works_at'])} of {{{', '.join(f'{lr:g}' for lr in lrs)}}}")
  above = "" if floor == 0 else f" (counted above {fmt(floor)}, the return of a policy that learns nothing)"
  return (f"Plainly: on this unseen task Adam's best is {fmt(adam['mean'])} (lr {adam['lr']:g}), so 0.8x{above} is "
          f"{fmt(target)}. " + "; ".join(parts) + ". Adam itself works at lr " +
          ", ".join(f"{lr:g}" for lr in adam["works_at"]) + ".")


def fmt(x):
  return f"{x:.1f}"


def ratio_text(best_cell, digits):
  """``best_cell``'s ratio to Adam's best as "0.57x"; "no Adam" when the sweep ran without Adam."""
  ratio = best_cell["ratio_to_adam_best"]
  return "no Adam" if ratio is None else f"{ratio:.{digits}f}x"


def readme(numbers, optimizers, lrs, cells, best):
  """The results README: status, the table, best lrs, ratios, lr ranges, provenance."""
  seeds, env, floor = numbers["seeds"], numbers["env"], numbers["floor_return"]
  adam = best.get("adam")
  learned, reach, miss = verdict(optimizers, best)
  ratios = ", ".join(f"{o.split(':')[-1]} {ratio_text(best[o], 3)}" for o in learned)
  lines = [
      f"# Shipped learned optimizers vs Adam on {env} (a task outside the paper's suites)",
      "",
      f"**Status: measured ({len(seeds)} seeds, {numbers['budget_env_steps']:g} env steps, each optimizer at its "
      f"best lr of {{{', '.join(f'{lr:g}' for lr in lrs)}}}). Ratio of each shipped file's best to Adam's best: "
      f"{ratios}. " + (f"Reach 0.8x Adam's best: {', '.join(reach) or 'none'}; do not: {', '.join(miss) or 'none'}.**"
                       if adam else "No Adam in this sweep, so no verdict against it.**"),
      "",
      plain(best, learned, lrs, floor),
      "",
      ("A2C on CartPole is unstable: a run that reaches 500 can collapse later (see the per-seed finals), so the "
       "final-return intervals are wide, Adam's most of all; the mean return over the whole run (second table) "
       "is the steadier comparison." if env == keras_cartpole.DEFAULT_ENV else
       f"Ratios to Adam are of the return above {fmt(floor)}, the return of a policy that never succeeds within "
       f"{env}'s time limit: (R - ({fmt(floor)})) / (R_Adam - ({fmt(floor)})). The mean return over the whole run "
       "(second table) is the steadier comparison."),
      "",
      "Agent: A2C with GAE (gamma 0.99, lambda 0.95), entropy bonus 0.01, value coefficient 0.5, 8 sync "
      f"{env} envs, 16-step rollouts (one update per 128 env steps), two `keras.Sequential` 64-64 tanh "
      "MLPs (policy, value) trained by `tf.GradientTape` + `optimizer.apply_gradients` in a `tf.function` "
      f"(`examples/keras_cartpole.py`). Gradient clip: `clipvalue="
      f"{numbers['clipvalue']}` (elementwise) passed explicitly to every optimizer, Adam included. Learned "
      "optimizers: `optim4rl_tf.Optim4RL.from_pretrained(name, learning_rate=lr, clipvalue=...)`.",
      "",
      "Final return = mean return of the last 20 finished episodes of a run" +
      (" (CartPole-v1's maximum is 500); " if env == keras_cartpole.DEFAULT_ENV else "; ") +
      f"± = half-width of the 90% percentile bootstrap CI of the mean over seeds {seeds}. Bold: each "
      "optimizer's best lr.",
      "",
      "| optimizer | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr | best / Adam's best | works at "
      "(mean within the best's CI) |",
      "|---" * (len(lrs) + 4) + "|",
  ]
  for o in optimizers:
    if o not in best:
      continue
    row = []
    for lr in lrs:
      c = cells.get((o, lr))
      text = f"{fmt(c['mean'])} ± {fmt(c['half_width'])}" if c else "-"
      row.append(f"**{text}**" if c and lr == best[o]["lr"] else text)
    b = best[o]
    lines.append(f"| {o} | " + " | ".join(row) + f" | {b['lr']:g} | {ratio_text(b, 2)} | "
                 f"{', '.join(f'{lr:g}' for lr in b['works_at'])} |")
  lines += [
      "", "Secondary measure, less noisy than the final return: the mean return over the whole run (the mean "
      f"of the learning curve's {CURVE_BIN}-step bins), mean ± 90% CI half-width over seeds:", "",
      "| optimizer | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"
  ]
  for o in optimizers:
    row = [cells.get((o, lr)) for lr in lrs]
    if any(row):
      lines.append(f"| {o} | " +
                   " | ".join(f"{fmt(c['curve_mean'])} ± {fmt(c['curve_half_width'])}" if c else "-" for c in row) +
                   " |")
  extra = [(o, lr) for (o, lr) in cells if lr not in lrs]
  if extra:
    lines += [
        "", "Outside the fair grid (not used for the best lr or the ratios; e.g. the lr a file was "
        "meta-trained with):", "", "| optimizer | lr | final return | seeds |", "|---|---|---|---|"
    ]
    lines += [
        f"| {o} | {lr:g} | {fmt(cells[(o, lr)]['mean'])} ± {fmt(cells[(o, lr)]['half_width'])} | "
        f"{cells[(o, lr)]['seeds']} |" for o, lr in extra
    ]
  lines += ["", "Per-seed finals:", ""]
  for (o, lr), c in cells.items():
    lines.append(f"* {o}, lr {lr:g}: {', '.join(fmt(x) for x in c['finals'])}")
  lines += [
      "", "![learning curves at each optimizer's best lr](curves.png)", "",
      "**Networks of the shipped files** (`optim4rl_tf.pretrained.provenance(name)`):", ""
  ]
  for o in learned:
    name = o.split(":", 1)[1]
    settings = "" if name.endswith(".npz") else f"; meta-trained with agent settings {pretrained.agent_settings(name)}"
    lines.append(f"* `{name}`: {numbers['networks'][o]}{settings}")
  lines += [
      "", "## Command", "", "```bash", numbers["command"], "```", "",
      f"Commit: {numbers['commit']} (the example and this folder are added by the commit after it). Every cell's per-seed finals, the budget and the command are in "
      "[`numbers.json`](numbers.json). Cells run one after another in one process on a 2-core CPU shared "
      f"with other jobs ({numbers['mean_wall_secs']:.0f} s per run on average).", ""
  ]
  return "\n".join(lines)


def plot(args, best, curves):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for optimizer, b in best.items():
    runs = curves[(optimizer, b["lr"])]
    steps = runs[0][0]
    ys = np.stack([y for _, y in runs])
    mean = ys.mean(axis=0)
    ax.plot(steps, mean, label=f"{optimizer} (lr {b['lr']:g})")
    if len(runs) > 1:
      ci = stats.bootstrap_ci(ys, axis=0)
      ax.fill_between(steps, ci.low, ci.high, alpha=0.2)
  ax.set_xlabel("env steps")
  ax.set_ylabel(f"episode return (mean per {CURVE_BIN} steps)")
  ax.set_title(f"{args.env}, A2C, each optimizer at its best lr ({len(runs)} seeds, 90% CI)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(args.results, "curves.png"), dpi=110)
  plt.close(fig)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  optimizers = args.optimizers.split(",")
  lrs = [float(x) for x in args.lrs.split(",")]
  seeds = [int(x) for x in args.seeds.split(",")]
  if not args.report_only:
    run_cells(args, [(o, lr) for o in optimizers for lr in lrs] + parse_extra(args.extra), seeds)
  return report(args, optimizers, lrs, seeds)


if __name__ == "__main__":
  main()
