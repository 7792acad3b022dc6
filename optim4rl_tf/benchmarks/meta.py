"""``launch/benchmark.py meta [--tasks=small_dense_long,big_dense_long] [--units=64,512] [--chunk=64]
[--allocators=glibc,bfc,tcmalloc]``: outer iterations/s, env steps/s and peak RSS of MetaA2C (Optim4RL,
M = 4), one fresh process per setting so peak RSS is per setting. ``--allocators`` repeats each row under
other memory allocators (see optim4rl_tf.utils.runtime): ``glibc`` (mallopt tuning only), ``bfc``
(TensorFlow's BFC pool for CPU tensors), ``tcmalloc`` (BFC + tcmalloc preloaded; the launchers' default when
the library is installed). A task is any variant of configs/meta_a2c.py: ``--tasks=grid6 --units=512
--mlp_dims=`` is the paper's grid6 recipe (six tasks x 512 units, head-free), its env steps and coordinates
summed over the tasks. Figures only; nothing is asserted.

``launch/benchmark.py meta --against=official --official_dir=DIR --official_python=PY --official_bench=SCRIPT
[--env=small_dense_long] [--units=64] [--pairs=2] [--duration=45]``: ours and the official JAX MetaA2C
(its timing script, 2 warm-up iterations then ``--duration`` seconds) alternately, each in its own process,
with the machine's load beside every figure (optim4rl_tf.benchmarks.against). ``--mlp_dims`` defaults to
the config's (head-free, as the official network) there and with ``--profile``.

``launch/benchmark.py meta --profile [--env=small_dense_long] [--units=64]``: seconds per outer iteration
split into its phases (optim4rl_tf.benchmarks.meta_profile).

``launch/benchmark.py meta --workers=2 [--tasks=catch] [--units=64] [--iterations=2]``: each row once in one
process and once on W worker processes on 127.0.0.1 (tf.distribute, TF_CONFIG; optim4rl_tf/meta/workers.py),
the chief's s/it and the scaling (one process's s/it / W workers'). On one machine the W workers share its
cores: the figure shows the collectives' overhead, not the speed-up W machines give."""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from optim4rl_tf.benchmarks import against


def measure(task, units, chunk, iterations, mlp_dims, duration=0.0, warmup=1, workers=None):
  """Runs in a child process: builds a trainer, runs ``warmup`` iterations (the first compiles), then times
  ``iterations`` iterations, or as many as fill ``duration`` seconds when that is > 0 (not with ``workers``,
  who must run the same number)."""
  from optim4rl_tf.benchmarks import meta_profile
  from optim4rl_tf.meta import estimators
  from optim4rl_tf.meta import run
  from optim4rl_tf.utils import runtime
  duration = 0.0 if workers is not None else duration
  config, trainer = meta_profile.make_trainer(task, units, chunk, mlp_dims,
                                              10**9 if duration > 0 else iterations + warmup, workers)
  t0 = time.time()
  times = []
  for _ in range(max(1, warmup)):
    t1 = time.time()
    trainer.run_iteration()
    times.append(time.time() - t1)
  compile_secs = time.time() - t0
  n, start = 0, time.time()
  while (n < iterations) if duration <= 0 else (n == 0 or time.time() - start < duration):
    trainer.run_iteration()
    n += 1
  secs = (time.time() - start) / n
  steps = len(trainer.tasks) * units * config.rollout_steps * (config.inner_updates + 1)  # all tasks (grid6: 6)
  net = trainer.tasks[0].net
  used = config.chunk_size or f"{estimators.REPLAY_CHUNK_COORDS} coords"
  return {
      "task": task,
      "units": units,
      "chunk": used,
      "mlp_dims": list(config.optimizer.mlp_dims),
      "allocator": runtime.allocator_summary(),
      "sec_per_it": secs,
      "it_per_sec": 1.0 / secs,
      "timed_iterations": n,
      "env_steps_per_sec": steps / secs,
      "peak_rss_gb": run.peak_rss_gb(),
      "first_it_secs": times[0],
      "warmup_secs": compile_secs,
      "coords": units * sum(t.net.num_params for t in trainer.tasks),
      "tasks": len(trainer.tasks),
      "loadavg": os.getloadavg(),
      "workers": 1 if workers is None else workers.num_workers
  }


def _dims(text):
  return None if text is None else tuple(int(d) for d in text.split(",") if d)


def run(argv):
  p = argparse.ArgumentParser(prog="benchmark.py meta")
  p.add_argument("--tasks", default="small_dense_long,big_dense_long")
  p.add_argument("--units", default="64,512")
  p.add_argument("--chunk", type=int, default=0, help="units per meta-gradient chunk (0: auto)")
  p.add_argument("--iterations", type=int, default=2)
  p.add_argument("--mlp_dims",
                 default=None,
                 help="learned optimizer heads (default 16,16; with --against "
                 "or --profile: the config's, head-free)")
  p.add_argument("--allocators",
                 default="default",
                 help="comma list of default (as the launchers set up), glibc, bfc, tcmalloc")
  p.add_argument("--env", default="", help="with --against/--profile: the task (default: the first of --tasks)")
  p.add_argument("--profile", action="store_true", help="time each phase of an outer iteration (meta_profile)")
  p.add_argument("--repeats", type=int, default=5, help="--profile: timed calls per phase (median)")
  p.add_argument("--json_out", default="", help="--against: also write the measurements as json here")
  p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  p.add_argument("--workers", type=int, default=0, help="each row in 1 process and on this many workers")
  against.add_flags(p, ("official",))
  args = p.parse_args(argv)
  if args.child:
    from optim4rl_tf.meta import workers  # pylint: disable=import-outside-toplevel
    group = workers.from_environment()  # TF_CONFIG (--workers): before any other TensorFlow op
    task, units = args.child.split(":")
    result = measure(task, int(units), args.chunk, args.iterations, _dims(args.mlp_dims), args.seconds, args.warmup,
                     group)
    print("RESULT " + json.dumps(result), flush=True)
    return 0
  task = args.env or args.tasks.split(",")[0]
  units = int(args.units.split(",")[0])
  if args.profile:
    from optim4rl_tf.benchmarks import meta_profile
    meta_profile.run_profile(task, units, args.chunk, _dims(args.mlp_dims), repeats=args.repeats)
    return 0
  if args.against:
    return against.main_guard(lambda: compare_official(args, task, units))
  if args.workers > 0:
    return scaling(args)
  dims = _dims("16,16" if args.mlp_dims is None else args.mlp_dims)
  print(f"MetaA2C, Optim4RL heads {list(dims)}, M = 4, rollout 20; {args.iterations} timed iterations "
        "after one warm-up (compile) iteration; one process per row")
  print(f"{'task':18s} {'units':>5s} {'chunk':>12s} {'coords':>11s} {'allocator':>16s} {'s/it':>7s} "
        f"{'it/s':>7s} {'env steps/s':>11s} {'peak RSS':>9s} {'1st it':>7s}")
  for task in args.tasks.split(","):
    for units in (int(u) for u in args.units.split(",")):
      for allocator in args.allocators.split(","):
        cmd = against.our_cmd("meta", [
            f"--child={task}:{units}", f"--chunk={args.chunk}", f"--iterations={args.iterations}",
            f"--mlp_dims={','.join(map(str, dims))}"
        ])
        out = subprocess.run(cmd, capture_output=True, text=True, env=allocator_env(allocator))
        r = against.parse_result(out.stdout)
        if r is None:
          print(f"{task:18s} {units:5d} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
          continue
        print(
            f"{task:18s} {units:5d} {str(r['chunk']):>12s} {r['coords']:11,d} {r['allocator']:>16s} "
            f"{r['sec_per_it']:7.2f} {r['it_per_sec']:7.3f} {r['env_steps_per_sec']:11,.0f} "
            f"{r['peak_rss_gb']:7.2f}GB {r['first_it_secs']:6.0f}s",
            flush=True)
  return 0


def _worker_envs(num_workers):
  """The environments of ``num_workers`` worker processes on 127.0.0.1 (TF_CONFIG, free ports)."""
  socks = [socket.socket() for _ in range(num_workers)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  hosts = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
  for s in socks:
    s.close()
  return [
      dict(allocator_env("default"),
           TF_CONFIG=json.dumps({
               "cluster": {
                   "worker": hosts
               },
               "task": {
                   "type": "worker",
                   "index": i
               }
           })) for i in range(num_workers)
  ]


def scaling(args):
  """``--workers=W``: every (task, units) row in one process, then on W worker processes (the chief's s/it)."""
  w = args.workers
  print(f"MetaA2C, Optim4RL, M = 4, rollout 20; {args.iterations} timed iterations after one warm-up iteration; "
        f"1 process vs {w} worker processes on this machine ({os.cpu_count()} CPUs; tf.distribute, TF_CONFIG)")
  print(f"{'task':18s} {'units':>5s} {'workers':>7s} {'s/it':>7s} {'env steps/s':>11s} {'peak RSS':>9s} "
        f"{'1st it':>7s} {'scaling':>7s}")
  for task in args.tasks.split(","):
    for units in (int(u) for u in args.units.split(",")):
      flags = [f"--child={task}:{units}", f"--chunk={args.chunk}", f"--iterations={args.iterations}"]
      if args.mlp_dims is not None:
        flags.append(f"--mlp_dims={args.mlp_dims}")
      cmd = against.our_cmd("meta", flags)
      env = {k: v for k, v in allocator_env("default").items() if k != "TF_CONFIG"}
      one = against.parse_result(subprocess.run(cmd, capture_output=True, text=True, env=env).stdout)
      procs = [
          subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
          for e in _worker_envs(w)
      ]
      outs = [p.communicate() for p in procs]
      many = against.parse_result(outs[0][0])
      for r, n, err in ((one, 1, ""), (many, w, outs[0][1])):
        if r is None:
          print(f"{task:18s} {units:5d} {n:7d} failed: {err.strip().splitlines()[-1:]}", flush=True)
          continue
        ratio = f"{one['sec_per_it'] / r['sec_per_it']:6.2f}x" if one is not None else "-"
        print(
            f"{task:18s} {units:5d} {n:7d} {r['sec_per_it']:7.2f} {r['env_steps_per_sec']:11,.0f} "
            f"{r['peak_rss_gb']:7.2f}GB {r['first_it_secs']:6.0f}s {ratio:>7s}",
            flush=True)
  return 0


def sides(args, task, units, environ=None):
  """(ours, official) :class:`against.Side`s of MetaA2C on ``task`` with ``units`` units: both warm up two
  outer iterations, then time ``--duration`` seconds; the figure is seconds per outer iteration."""
  from optim4rl_tf.configs import meta_a2c
  config = meta_a2c.get_config(task)
  official = against.official_side(args,
                                   "MetaA2C",
                                   task,
                                   units,
                                   lambda r: 1.0 / r["outer_iters_per_s"],
                                   True,
                                   extra=["--reset_interval", str(config.reset_interval)],
                                   environ=environ)
  flags = [f"--child={task}:{units}", f"--chunk={args.chunk}", f"--seconds={args.duration:g}", "--warmup=2"]
  if args.mlp_dims is not None:
    flags.append(f"--mlp_dims={args.mlp_dims}")
  ours = against.Side("ours", against.our_cmd("meta", flags), allocator_env("default"), lambda r: r["sec_per_it"], True)
  return ours, official


def compare_official(args, task, units):
  ours, official = sides(args, task, units)
  heads = args.mlp_dims if args.mlp_dims is not None else "config's (head-free)"
  against.compare(
      f"MetaA2C {task}, {units} units, M = 4, rollout 20, Optim4RL heads {heads}: s/it after 2 "
      f"warm-up iterations, {args.duration:g} s timed per measurement",
      ours,
      official,
      args.pairs,
      "s/it",
      timeout=args.child_timeout,
      json_out=args.json_out)


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
