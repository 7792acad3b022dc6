"""What each update does on CartPole-v1: the size of the parameter change, the gradient and the policy's entropy over
a run, Adam beside a learned optimizer (``examples/keras_cartpole.py --log_updates``, one run per optimizer and seed).

  .venv/bin/python examples/cartpole_update_sizes.py --out=runs/cartpole_updates \\
      --results=results/optimizer_response --optimizers=adam@3e-3,optim4rl:inverted_pendulum@1e-4 --seeds=0,1,2,3,4

Each run writes ``<out>/<optimizer>_lr<lr>_seed<seed>.json`` (a run whose file exists is reused). Into
``--results``: ``cartpole_updates.json`` (per optimizer, the seed-mean of every logged column at each update,
the update RMS divided by the learning rate, the final returns, the command and commit) and
``cartpole_updates.png`` (return, update RMS / lr of the policy and value networks, clipped gradient RMS and
entropy against env steps).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import keras_cartpole  # noqa: E402
from examples import keras_cartpole_sweep  # noqa: E402


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/cartpole_updates", help="raw per-run results (outside the repo)")
  p.add_argument("--results", required=True, help="folder for cartpole_updates.json and .png")
  p.add_argument("--optimizers", default="adam@3e-3,optim4rl:inverted_pendulum@1e-4", help="OPTIMIZER@LR,...")
  p.add_argument("--seeds", default="0,1,2,3,4")
  p.add_argument("--steps", type=int, default=80000)
  p.add_argument("--clipvalue", default="1.0")
  return p.parse_args(argv)


def run(args, optimizer, lr, seed):
  """One logged run (reused if its file exists); returns its result dict."""
  path = keras_cartpole_sweep.cell_file(args.out, optimizer, lr, seed)
  if not os.path.exists(path):
    os.makedirs(args.out, exist_ok=True)
    keras_cartpole.main([
        f"--optimizer={optimizer}", f"--lr={lr}", f"--seed={seed}", f"--steps={args.steps}",
        f"--clipvalue={args.clipvalue}", "--log_updates", "--log_every=20000", f"--json={path}.tmp"
    ])
    os.replace(f"{path}.tmp", path)
  return keras_cartpole_sweep.load(path)


def summarise(runs, lr, steps):
  """Seed-means of the logged columns per update, update RMS / lr, and the final returns."""
  cols = runs[0]["update_columns"]
  rows = np.mean([np.asarray(r["updates"]) for r in runs], axis=0)  # [updates, columns]
  out = {c: rows[:, i].tolist() for i, c in enumerate(cols)}
  for c in ("policy_update_rms", "value_update_rms"):
    out[f"{c}_over_lr"] = (rows[:, cols.index(c)] / lr).tolist()
  out["env_steps"] = (np.arange(1, len(rows) + 1) * steps / len(rows)).astype(int).tolist()
  out["final_returns"] = [r["final_return"] for r in runs]
  curves = [keras_cartpole_sweep.curve(r, steps) for r in runs]
  out["return_curve_steps"] = curves[0][0].tolist()
  out["return_curve"] = np.mean([points for _, points in curves], axis=0).tolist()
  return {k: v if k == "env_steps" else [float(f"{x:.4g}") for x in v] for k, v in out.items()}  # 4 digits


def plot(summary, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
  for name, s in summary.items():
    x = np.asarray(s["env_steps"])
    line = axes[0].plot(s["return_curve_steps"], s["return_curve"], label=name)[0]
    axes[1].plot(x, s["policy_update_rms_over_lr"], color=line.get_color(), label=f"{name} policy")
    axes[1].plot(x, s["value_update_rms_over_lr"], color=line.get_color(), ls="--", label=f"{name} value")
    axes[2].plot(x, s["policy_grad_rms"], color=line.get_color(), label=f"{name} policy")
    axes[2].plot(x, s["value_grad_rms"], color=line.get_color(), ls="--", label=f"{name} value")
    axes[3].plot(x, s["entropy"], color=line.get_color(), label=name)
  titles = ("return", "update RMS / lr", "gradient RMS (after clip)", "policy entropy")
  for ax, title in zip(axes, titles):
    ax.set_title(title)
    ax.set_xlabel("env steps")
  for ax in axes[1:3]:
    ax.set_yscale("log")
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  summary = {}
  for item in args.optimizers.split(","):
    optimizer, lr = keras_cartpole.parse_spec_at_lr(item, "every --optimizers item")
    runs = [run(args, optimizer, lr, s) for s in seeds]
    summary[f"{optimizer} @ {lr:g}"] = summarise(runs, lr, args.steps)
  os.makedirs(args.results, exist_ok=True)
  record = {
      "command": "python examples/cartpole_update_sizes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
      "commit": keras_cartpole_sweep.git_commit(),
      "seeds": seeds,
      "steps": args.steps,
      "clipvalue": args.clipvalue,
      "optimizers": summary
  }
  with open(os.path.join(args.results, "cartpole_updates.json"), "w", encoding="utf-8") as f:
    json.dump(record, f)
  plot(summary, os.path.join(args.results, "cartpole_updates.png"))
  for name, s in summary.items():
    n = len(s["policy_update_rms_over_lr"])
    print(f"{name}: final return {np.mean(s['final_returns']):.1f}; policy update RMS / lr at updates "
          f"1, {n // 10}, {n // 2}, {n}: " +
          ", ".join(f"{s['policy_update_rms_over_lr'][i]:.3g}" for i in (0, n // 10 - 1, n // 2 - 1, n - 1)))


if __name__ == "__main__":
  main()
