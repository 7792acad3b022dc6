"""The shipped-optimizer command (``optim4rl-make-pretrained``, launch/make_pretrained.py): meta-trains one of
the shipped optimizers by its recipe and writes optim4rl_tf/pretrained/<name>.npz.

  python launch/make_pretrained.py --name=grid6 --workdir=runs/pretrained/grid6
  python launch/make_pretrained.py --name=catch --workdir=runs/pretrained/catch
  python launch/make_pretrained.py --name=inverted_pendulum   # MetaPPO on Brax, from the shipped catch file

Recipes (meta-training config + documented reductions) are in optim4rl_tf/pretrained/__init__.py. The run
resumes from --workdir; the written file carries its provenance in ``__meta__`` (recipe, exact config,
version, commit, outer iterations, units, seed, final meta-loss, this command). With the same commit the
same command writes the same arrays for every recipe (MetaPPO's too since the launchers switch off grappler's
free-RAM-dependent AddN rewrite, ``utils.runtime.fix_graph_rewrites``). The shipped MetaPPO file was made before
that fix, so its remake is another draw of the recipe, not the same file (README, "Trained optimizers that ship
with the package").

This module imports no TensorFlow (meta-training is imported by :func:`main`), so that :func:`console` sets the
process up before TensorFlow loads.
"""

import csv
import os
import subprocess

from absl import flags
from absl import logging as absl_logging

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_string("name",
                      None,
                      "Recipe name (catch, grid6, inverted_pendulum, small_dense_long).",
                      flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "Meta-training run directory (resumed if present).", flag_values=flag_values)
  flags.DEFINE_string("out", "", "Where to write the file (default: inside the package).", flag_values=flag_values)
  flags.DEFINE_string("plot_dir",
                      "results/pretrained",
                      "Where the meta-training curves go ('' : none).",
                      flag_values=flag_values)
  flags.DEFINE_bool("plot_only", False, "Only redraw the curves from an existing --workdir.", flag_values=flag_values)


def plot_meta_training(workdir, name, out_dir):
  """PNG of each task's agent return and meta-loss over outer iterations (moving average of 20)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, "meta_metrics.csv")) as f:
    rows = list(csv.DictReader(f))
  it = np.array([float(r["iteration"]) for r in rows])
  tasks = [k[:-len("/agent_return")] for k in rows[0] if k.endswith("/agent_return")]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
  smooth = lambda y: np.convolve(y, np.ones(20) / 20, mode="valid") if len(y) >= 20 else y
  for task in tasks:
    ret = np.array([float(r[f"{task}/agent_return"]) for r in rows])
    loss = np.array([float(r[f"{task}/meta_loss"]) for r in rows])
    x = it[len(it) - len(smooth(ret)):]
    scale = max(np.abs(smooth(ret)).max(), 1e-9)
    axes[0].plot(x, smooth(ret) / scale, label=task, lw=1)
    axes[1].plot(x, smooth(loss), label=task, lw=1)
  axes[0].set(xlabel="outer iteration", ylabel="agent return / max |.| (moving avg 20)")
  axes[1].set(xlabel="outer iteration", ylabel="meta-loss (moving avg 20)", yscale="symlog")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"meta-training of the shipped '{name}' optimizer", fontsize=10)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}_meta_training.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _commit():
  """The checkout's commit (git rev-parse HEAD), or 'unknown'."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def final_meta_loss(workdir):
  """Sum over tasks of the meta-loss logged at the last iteration (meta_metrics.csv)."""
  with open(os.path.join(workdir, "meta_metrics.csv")) as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return float("nan")
  return float(sum(float(v) for k, v in rows[-1].items() if k.endswith("/meta_loss")))


def _units_per_task(config):
  """{env name: units} of a meta-training config: MetaA2C's ``num_units`` (or each task's own), MetaPPO's
  ``num_units``."""
  if "tasks" in config:
    return {t.env_name: int(config.num_units or t.num_units) for t in config.tasks}
  return {config.env.name: int(config.num_units)}


def main(argv, flag_values):
  """The command: meta-trains recipe ``--name`` in ``--workdir`` (resumed), writes the file with its provenance
  and the curves; ``--plot_only`` only redraws the curves. An unknown recipe: one line, exit 2."""
  absl_logging.set_verbosity(absl_logging.WARNING)  # TensorFlow's checkpoint INFO lines off the console
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from optim4rl_tf import pretrained
  from optim4rl_tf.meta import run
  from optim4rl_tf.optimizers import meta_params
  name = flag_values.name
  if name not in pretrained.RECIPES:
    cli.fail(f"--name must be one of {', '.join(pretrained.names())}, got {name!r}")
  workdir = flag_values.workdir or os.path.join("runs", "pretrained", name)
  if flag_values.plot_only:
    print(f"wrote {plot_meta_training(workdir, name, flag_values.plot_dir)}")
    return
  config = pretrained.config(name)
  commit = _commit()  # the code that trains (taken before, not after, the long run)
  result = run.cli_call(run.meta_train, config, workdir)
  meta, arrays = meta_params.load(result["phi_path"])
  core, _ = meta_params.resolve(meta["optimizer"], result["phi_path"])
  provenance = {
      "recipe": name,
      "description": pretrained.describe(name),
      "config": run.resolved_config(config),
      "commit": commit,
      "outer_iterations": result["iterations"],
      "skipped_iterations": result["skipped"],
      "units_per_task": _units_per_task(config),
      "seed": int(config.seed),
      "final_meta_loss": final_meta_loss(workdir),
      "command": f"python launch/make_pretrained.py --name={name}",
  }
  out = flag_values.out or pretrained.path(name)
  meta_params.save(out, core, arrays, extra_meta=provenance)
  if flag_values.plot_dir:
    plot_meta_training(workdir, name, flag_values.plot_dir)
  print(f"wrote {out} ({result['iterations']} outer iterations, final meta-loss "
        f"{provenance['final_meta_loss']:.4g}, commit {provenance['commit'][:10]})")


def console():
  """The ``optim4rl-make-pretrained`` console script (and launch/make_pretrained.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
