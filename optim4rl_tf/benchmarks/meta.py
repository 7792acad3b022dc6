"""``launch/benchmark.py meta [--tasks=small_dense_long,big_dense_long] [--units=64,512] [--chunk=64]
[--allocators=glibc,bfc,tcmalloc]``: outer iterations/s, env steps/s and peak RSS of MetaA2C (Optim4RL,
M = 4), one fresh process per setting so peak RSS is per setting. ``--allocators`` repeats each row under
other memory allocators (see optim4rl_tf.utils.runtime): ``glibc`` (mallopt tuning only), ``bfc``
(TensorFlow's BFC pool for CPU tensors), ``tcmalloc`` (BFC + tcmalloc preloaded; the launchers' default when
the library is installed). Figures only; nothing is asserted."""

import argparse
import json
import os
import subprocess
import sys
import time


def measure(task, units, chunk, iterations, mlp_dims):
  """Runs in a child process: builds a trainer, warms up (compile), times ``iterations`` iterations."""
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.meta import run
  from optim4rl_tf.meta import trainer as trainer_lib
  config = meta_a2c.get_config(task)
  config.num_units = units
  config.chunk_size = chunk
  config.optimizer.mlp_dims = mlp_dims
  config.num_iterations = iterations + 1
  t0 = time.time()
  trainer = trainer_lib.MetaTrainer(config)
  trainer.run_iteration()
  compile_secs = time.time() - t0
  start = time.time()
  for _ in range(iterations):
    trainer.run_iteration()
  secs = (time.time() - start) / iterations
  steps = units * config.rollout_steps * (config.inner_updates + 1)
  from optim4rl_tf.meta import meta_a2c
  net = trainer.tasks[0].net
  used = config.chunk_size or meta_a2c.auto_chunk(units, net.num_params)
  from optim4rl_tf.utils import runtime
  return {
      "task": task,
      "units": units,
      "chunk": used,
      "allocator": runtime.allocator_summary(),
      "sec_per_it": secs,
      "it_per_sec": 1.0 / secs,
      "env_steps_per_sec": steps / secs,
      "peak_rss_gb": run.peak_rss_gb(),
      "first_it_secs": compile_secs,
      "coords": units * trainer.tasks[0].net.num_params
  }


def run(argv):
  p = argparse.ArgumentParser(prog="benchmark.py meta")
  p.add_argument("--tasks", default="small_dense_long,big_dense_long")
  p.add_argument("--units", default="64,512")
  p.add_argument("--chunk", type=int, default=0, help="units per meta-gradient chunk (0: auto)")
  p.add_argument("--iterations", type=int, default=2)
  p.add_argument("--mlp_dims", default="16,16")
  p.add_argument("--allocators",
                 default="default",
                 help="comma list of default (as the launchers set up), glibc, bfc, tcmalloc")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  dims = tuple(int(d) for d in args.mlp_dims.split(",") if d)
  if args.child:
    task, units = args.child.split(":")
    print("RESULT " + json.dumps(measure(task, int(units), args.chunk, args.iterations, dims)), flush=True)
    return
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  print(f"MetaA2C, Optim4RL heads {list(dims)}, M = 4, rollout 20; {args.iterations} timed iterations "
        "after one warm-up (compile) iteration; one process per row")
  print(f"{'task':18s} {'units':>5s} {'chunk':>5s} {'coords':>11s} {'allocator':>16s} {'s/it':>7s} "
        f"{'it/s':>7s} {'env steps/s':>11s} {'peak RSS':>9s} {'1st it':>7s}")
  for task in args.tasks.split(","):
    for units in (int(u) for u in args.units.split(",")):
      for allocator in args.allocators.split(","):
        cmd = [
            sys.executable,
            os.path.join(root, "launch", "benchmark.py"), "meta", f"--child={task}:{units}", f"--chunk={args.chunk}",
            f"--iterations={args.iterations}", f"--mlp_dims={args.mlp_dims}"
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=allocator_env(allocator))
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
          print(f"{task:18s} {units:5d} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
          continue
        r = json.loads(lines[0][7:])
        print(
            f"{task:18s} {units:5d} {r['chunk']:5d} {r['coords']:11,d} {r['allocator']:>16s} "
            f"{r['sec_per_it']:7.2f} {r['it_per_sec']:7.3f} {r['env_steps_per_sec']:11,.0f} "
            f"{r['peak_rss_gb']:7.2f}GB {r['first_it_secs']:6.0f}s",
            flush=True)


def allocator_env(name):
  """The child's environment for one allocator setting (runtime.configure_process reads it)."""
  env = dict(os.environ)
  env.pop("LD_PRELOAD", None)
  if name == "glibc":
    env.update(TF_CPU_ALLOCATOR_USE_BFC="false", OPTIM4RL_TF_TCMALLOC="0")
  elif name == "bfc":
    env.update(TF_CPU_ALLOCATOR_USE_BFC="true", OPTIM4RL_TF_TCMALLOC="0")
  elif name == "tcmalloc":
    env.update(TF_CPU_ALLOCATOR_USE_BFC="true", OPTIM4RL_TF_TCMALLOC="1")
  elif name != "default":
    raise SystemExit(f"unknown allocator {name!r}; valid: default, glibc, bfc, tcmalloc")
  return env
