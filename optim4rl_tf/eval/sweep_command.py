"""The sweep command (``optim4rl-sweep``, launch/sweep.py): expands a config's sweep grid into runs and runs a
launcher for each, in a local process pool or on Ray (optim4rl_tf.eval.sweep: the index mapping;
optim4rl_tf.eval.sweep_runner: the runs and the files written).

  # meta-train Optim4RL on Catch over the §5.7 grid (20 configurations), 2 at a time:
  python launch/sweep.py --launcher=launch/meta_train.py --config=configs/meta_a2c.py:catch \
      --sweep_dir=runs/meta_rl_catch --workers=2
  # the index table only (configuration index -> values, docs/fidelity.md §9.2):
  python launch/sweep.py --launcher=launch/meta_train.py --config=configs/meta_a2c.py:catch \
      --sweep_dir=runs/meta_rl_catch --list
  # test every meta-trained phi with A2C (lopt_rl_catch): one configuration per phi file, 10 seeds each
  python launch/sweep.py --launcher=launch/train.py --config=configs/a2c.py:catch \
      --config.optimizer.name=optim4rl --config.num_seeds=10 --use_config_sweep=false \
      --grid='optimizer.meta_params=glob:runs/meta_rl_catch/*/phi.npz' --sweep_dir=runs/lopt_rl_catch

On Ray (``pip install 'optim4rl-tf[ray]'``; the lock requirements.txt has it), the same runs and files:

  # a local Ray runtime started for the sweep, 2 runs at a time (num_cpus = workers x cpus_per_run):
  python launch/sweep.py --backend=ray --workers=2 --launcher=launch/train.py --config=configs/a2c.py:big_dense_long \
      --sweep_dir=runs/a2c_grid_lr
  # on a cluster: `ray start --head` on one node, `ray start --address=<head>:6379` on the others, then from
  # any node (the checkout, the venv and --sweep_dir at the same paths on every node, e.g. on NFS):
  python launch/sweep.py --backend=ray --ray_address=auto --launcher=... --config=... --sweep_dir=/shared/runs/x

Every ``--config.<field>=<value>`` given here is applied to all runs (and forwarded to the launcher). Runs k
and k + N (N configurations) share a configuration and differ in the seed (``--repeats``). Each run's workdir
is ``<sweep_dir>/<k>``; runs with results (``done`` or ``summary.json``) are skipped, so re-running the same
command resumes a sweep. Runs start in :data:`ROOT` (the checkout's root).

Exit status: 0 every run succeeded, 1 some run failed, 2 a usage or grid error (one line).
"""

import functools
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from optim4rl_tf.eval import sweep as sweep_lib  # (standard library only: no TensorFlow here)
from optim4rl_tf.eval import sweep_runner  # (the same)
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv``: where ml_collections reads ``--config.*``
  overrides; None: ``sys.argv``)."""
  cli.define_config_flag(flag_values, argv, "configs/meta_a2c.py:catch", lock_config=False)
  flags.DEFINE_string("launcher",
                      None, "Launcher script run for each run, e.g. launch/train.py "
                      "or launch/meta_train.py (called with --config=... --workdir=...).",
                      flag_values=flag_values)
  flags.DEFINE_string("sweep_dir", None, "Directory of the sweep (one workdir per run index).", flag_values=flag_values)
  flags.DEFINE_integer("workers",
                       1, "Runs at a time: the local pool's size, or with --backend=ray and "
                       "no --ray_address the CPUs (x --cpus_per_run) of the local Ray runtime started for the sweep.",
                       flag_values=flag_values)
  flags.DEFINE_enum("backend",
                    "local", ["local", "ray"],
                    "Where runs execute: a local process pool or Ray tasks (the same runs and files).",
                    flag_values=flag_values)
  flags.DEFINE_string("ray_address",
                      None, "Address of a running Ray cluster ('auto' on one of its "
                      "nodes, or <head>:6379); default: a local Ray runtime for this sweep.",
                      flag_values=flag_values)
  flags.DEFINE_float("cpus_per_run", 1.0, "Ray: CPUs reserved per run.", flag_values=flag_values)
  flags.DEFINE_float("gpus_per_run",
                     0.0,
                     "Ray: GPUs reserved per run (Ray sets CUDA_VISIBLE_DEVICES).",
                     flag_values=flag_values)
  flags.DEFINE_integer("repeats", 1, "Runs per configuration (seeds differ).", flag_values=flag_values)
  flags.DEFINE_multi_string("grid", [], "Extra grid axis key=v1,v2 or key=glob:PATTERN (files, "
                            "natural order); varies faster than the config's sweep keys.",
                            flag_values=flag_values)
  flags.DEFINE_bool("use_config_sweep", True, "Include the config's own sweep grid.", flag_values=flag_values)
  flags.DEFINE_string("seed_field",
                      "seed",
                      "Config field receiving each run's seed ('' = none).",
                      flag_values=flag_values)
  flags.DEFINE_integer("seed_stride",
                       0,
                       "Seed step between repeats (0: config.num_seeds or 1).",
                       flag_values=flag_values)
  flags.DEFINE_string("only", "", "Run indices to run, e.g. 1-20,25 (default: all).", flag_values=flag_values)
  flags.DEFINE_bool("list", False, "Print the run/configuration index table and exit.", flag_values=flag_values)
  flags.DEFINE_bool("dry_run", False, "Print the commands and exit.", flag_values=flag_values)
  flags.DEFINE_bool("rerun", False, "Run again even where results exist.", flag_values=flag_values)
  flags.DEFINE_integer("timeout", 0, "Seconds per run before it is killed (0: none).", flag_values=flag_values)
  flags.DEFINE_integer("threads_per_run",
                       0,
                       "TF intra/inter-op threads per run (0: TF default).",
                       flag_values=flag_values)


def base_overrides(flag_values):
  """The --config.<field>=<value> arguments given to the sweep itself, as written (forwarded to every run)."""
  return [a for a in cli.config_argv(flag_values)[1:] if a.startswith("--config.")]


def main(argv, flag_values):
  """The command: expands the grid into runs, then lists them (``--list``), prints their commands
  (``--dry_run``) or runs them; exits 1 when a run failed."""
  fv = flag_values
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if fv.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/meta_a2c.py:catch")
  if not fv.launcher or not fv.sweep_dir:
    raise app.UsageError("--launcher and --sweep_dir are required")

  config = fv.config
  config_spec = config_flags.get_config_filename(fv["config"])
  path, sep, variant = config_spec.partition(":")
  config_spec = os.path.abspath(path) + sep + variant  # runs start in the repository root
  try:
    extra = [sweep_lib.parse_grid_arg(g) for g in fv.grid]
    grid = sweep_lib.sweep_grid(config, extra, fv.use_config_sweep)
    runs = sweep_lib.expand(config,
                            os.path.abspath(fv.sweep_dir),
                            grid=grid,
                            repeats=fv.repeats,
                            seed_field=fv.seed_field or None,
                            seed_stride=fv.seed_stride or None)
    all_runs = runs
    if fv.only:
      keep = set(sweep_lib.parse_ranges(fv.only, len(runs)))
      runs = [r for r in runs if r.index in keep]
  except ValueError as e:
    cli.fail(e)
  n = sweep_lib.num_configs(grid)
  print(f"[sweep] {config_spec}: {n} configurations x {fv.repeats} repeats = {n * fv.repeats} runs; "
        f"grid (first key fastest): " + (", ".join(f"{k}[{len(v)}]" for k, v in grid) or "none"))
  if fv.list:
    for r in runs:
      print(f"{r.index:5d}  config {r.config_index:4d}  repeat {r.repeat}  {sweep_lib.describe(r)}")
    return
  launcher = fv.launcher
  if not os.path.exists(launcher):
    cli.fail(f"launcher {launcher!r} does not exist")
  cmd_fn = functools.partial(sweep_lib.command,
                             launcher=os.path.abspath(launcher),
                             config_spec=config_spec,
                             base_args=base_overrides(fv))
  if fv.dry_run:
    for r in runs:
      print(" ".join(cmd_fn(r)))
    return
  env = dict(TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))  # on top of each run's environment
  if fv.threads_per_run > 0:
    env.update(TF_NUM_INTRAOP_THREADS=str(fv.threads_per_run),
               TF_NUM_INTEROP_THREADS=str(fv.threads_per_run),
               OMP_NUM_THREADS=str(fv.threads_per_run))
  try:
    result = sweep_runner.run_sweep(runs,
                                    config,
                                    cmd_fn,
                                    os.path.abspath(fv.sweep_dir),
                                    workers=fv.workers,
                                    backend=fv.backend,
                                    skip_existing=not fv.rerun,
                                    env=env,
                                    cwd=ROOT,
                                    timeout=fv.timeout or None,
                                    ray_address=fv.ray_address,
                                    cpus_per_run=fv.cpus_per_run,
                                    gpus_per_run=fv.gpus_per_run,
                                    all_runs=all_runs,
                                    meta=dict(config=config_spec,
                                              launcher=launcher,
                                              grid=grid,
                                              repeats=fv.repeats,
                                              num_configs=n,
                                              base_overrides=base_overrides(fv)))
  except RuntimeError as e:
    cli.fail(e)
  return 1 if result.failed else 0


def console():
  """The ``optim4rl-sweep`` console script (and launch/sweep.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
