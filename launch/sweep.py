"""Expands a config's sweep grid into runs and runs a launcher for each (local process pool or Ray).

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
command resumes a sweep. See optim4rl_tf/eval/sweep.py for the index mapping and
optim4rl_tf/eval/sweep_runner.py for the files written.
"""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from optim4rl_tf.eval import sweep as sweep_lib  # noqa: E402  (standard library only: no TensorFlow here)
from optim4rl_tf.eval import sweep_runner  # noqa: E402  (the same)
from optim4rl_tf.utils import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config",
                                          None, "Config file with variant, e.g. "
                                          "configs/meta_a2c.py:catch.",
                                          lock_config=False)
_LAUNCHER = flags.DEFINE_string(
    "launcher", None, "Launcher script run for each run, e.g. launch/train.py "
    "or launch/meta_train.py (called with --config=... --workdir=...).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory of the sweep (one workdir per run index).")
_WORKERS = flags.DEFINE_integer(
    "workers", 1, "Runs at a time: the local pool's size, or with --backend=ray and "
    "no --ray_address the CPUs (x --cpus_per_run) of the local Ray runtime started for the sweep.")
_BACKEND = flags.DEFINE_enum("backend", "local", ["local", "ray"],
                             "Where runs execute: a local process pool or Ray tasks (the same runs and files).")
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "Address of a running Ray cluster ('auto' on one of its "
    "nodes, or <head>:6379); default: a local Ray runtime for this sweep.")
_CPUS_PER_RUN = flags.DEFINE_float("cpus_per_run", 1.0, "Ray: CPUs reserved per run.")
_GPUS_PER_RUN = flags.DEFINE_float("gpus_per_run", 0.0, "Ray: GPUs reserved per run (Ray sets CUDA_VISIBLE_DEVICES).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs per configuration (seeds differ).")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "Extra grid axis key=v1,v2 or key=glob:PATTERN (files, "
    "natural order); varies faster than the config's sweep keys.")
_USE_CONFIG_SWEEP = flags.DEFINE_bool("use_config_sweep", True, "Include the config's own sweep grid.")
_SEED_FIELD = flags.DEFINE_string("seed_field", "seed", "Config field receiving each run's seed ('' = none).")
_SEED_STRIDE = flags.DEFINE_integer("seed_stride", 0, "Seed step between repeats (0: config.num_seeds or 1).")
_ONLY = flags.DEFINE_string("only", "", "Run indices to run, e.g. 1-20,25 (default: all).")
_LIST = flags.DEFINE_bool("list", False, "Print the run/configuration index table and exit.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands and exit.")
_RERUN = flags.DEFINE_bool("rerun", False, "Run again even where results exist.")
_TIMEOUT = flags.DEFINE_integer("timeout", 0, "Seconds per run before it is killed (0: none).")
_THREADS = flags.DEFINE_integer("threads_per_run", 0, "TF intra/inter-op threads per run (0: TF default).")


def _base_overrides(argv):
  """The --config.<field>=<value> arguments given to the sweep itself (forwarded to every run)."""
  return [a for a in argv if a.startswith("--config.")]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/meta_a2c.py:catch")
  if not _LAUNCHER.value or not _SWEEP_DIR.value:
    raise app.UsageError("--launcher and --sweep_dir are required")

  config = _CONFIG.value
  config_spec = config_flags.get_config_filename(flags.FLAGS["config"])
  path, sep, variant = config_spec.partition(":")
  config_spec = os.path.abspath(path) + sep + variant  # runs start in the repository root
  try:
    extra = [sweep_lib.parse_grid_arg(g) for g in _GRID.value]
    grid = sweep_lib.sweep_grid(config, extra, _USE_CONFIG_SWEEP.value)
    runs = sweep_lib.expand(config,
                            os.path.abspath(_SWEEP_DIR.value),
                            grid=grid,
                            repeats=_REPEATS.value,
                            seed_field=_SEED_FIELD.value or None,
                            seed_stride=_SEED_STRIDE.value or None)
    all_runs = runs
    if _ONLY.value:
      keep = set(sweep_lib.parse_ranges(_ONLY.value, len(runs)))
      runs = [r for r in runs if r.index in keep]
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  n = sweep_lib.num_configs(grid)
  print(f"[sweep] {config_spec}: {n} configurations x {_REPEATS.value} repeats = {n * _REPEATS.value} runs; "
        f"grid (first key fastest): " + (", ".join(f"{k}[{len(v)}]" for k, v in grid) or "none"))
  if _LIST.value:
    for r in runs:
      print(f"{r.index:5d}  config {r.config_index:4d}  repeat {r.repeat}  {sweep_lib.describe(r)}")
    return
  launcher = _LAUNCHER.value
  if not os.path.exists(launcher):
    print(f"error: launcher {launcher!r} does not exist", file=sys.stderr)
    sys.exit(2)
  cmd_fn = functools.partial(sweep_lib.command,
                             launcher=os.path.abspath(launcher),
                             config_spec=config_spec,
                             base_args=_base_overrides(sys.argv[1:]))
  if _DRY_RUN.value:
    for r in runs:
      print(" ".join(cmd_fn(r)))
    return
  env = dict(TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))  # on top of each run's environment
  if _THREADS.value > 0:
    env.update(TF_NUM_INTRAOP_THREADS=str(_THREADS.value),
               TF_NUM_INTEROP_THREADS=str(_THREADS.value),
               OMP_NUM_THREADS=str(_THREADS.value))
  try:
    result = sweep_runner.run_sweep(runs,
                                    config,
                                    cmd_fn,
                                    os.path.abspath(_SWEEP_DIR.value),
                                    workers=_WORKERS.value,
                                    backend=_BACKEND.value,
                                    skip_existing=not _RERUN.value,
                                    env=env,
                                    cwd=ROOT,
                                    timeout=_TIMEOUT.value or None,
                                    ray_address=_RAY_ADDRESS.value,
                                    cpus_per_run=_CPUS_PER_RUN.value,
                                    gpus_per_run=_GPUS_PER_RUN.value,
                                    all_runs=all_runs,
                                    meta=dict(config=config_spec,
                                              launcher=launcher,
                                              grid=grid,
                                              repeats=_REPEATS.value,
                                              num_configs=n,
                                              base_overrides=_base_overrides(sys.argv[1:])))
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  sys.exit(1 if result.failed else 0)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
