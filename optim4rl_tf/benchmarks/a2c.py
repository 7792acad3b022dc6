"""A2C environment steps per second (``python launch/benchmark.py a2c [flags]``).

Measures whole A2C iterations (rollout of 20 steps with auto-reset, λ-returns, loss, gradient, RMSProp
update) on small_dense_long and big_dense_long with 512 envs per seed, for 1 seed and for 10 seeds trained
as one vectorised graph. Reported rate = env steps of all seeds per second, after warm-up (tracing).

Flags: --tasks=small_dense_long,big_dense_long  --seeds=1,10  --envs=512  --min_secs=3
       --conv_forms=auto  (comma list: auto,conv2d,im2col,shifted; big grids only)  --jit (XLA)

``--against=official --official_dir=DIR --official_python=PY --official_bench=SCRIPT [--env=small_dense_long]
[--pairs=2] [--duration=45]``: ours (1 seed, ``--envs`` envs, ``--duration`` seconds) and the official JAX A2C
(its timing script) alternately, each in its own process, with the machine's load beside every figure
(optim4rl_tf.benchmarks.against).
Reference (docs/fidelity.md §12 / issue 5): official JAX code on 2 CPU cores, 512 envs, RMSProp: 1.0-1.35e5 env steps/s
on small_dense_long, 4.6e3 on big_dense_long.
"""

import argparse
import json
import os
import time

from optim4rl_tf.benchmarks import against

OFFICIAL = {"small_dense_long": (1.0e5, 1.35e5), "big_dense_long": (4.6e3, 4.6e3)}


def measure(task, num_seeds, num_envs, min_secs=3.0, conv_form="auto", jit_compile=False, optimizer="rmsprop"):
  """Env steps/s (all seeds) of A2C iterations after warm-up; returns (rate, iterations timed)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().setLevel("ERROR")
  from optim4rl_tf import envs as envs_lib  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.agents import a2c  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.agents import networks  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.optimizers import transforms  # pylint: disable=import-outside-toplevel
  env = envs_lib.make(task, num_seeds * num_envs)
  net = networks.make_network(task, env.obs_shape, env.num_actions, conv_form=conv_form)
  opt = transforms.make_agent_optimizer(optimizer, 3e-3, grad_clip=1.0)
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, num_seeds, jit_compile=jit_compile)
  state = trainer.init(0)
  state, m = trainer.run(state, tf.constant(1))  # trace + warm-up
  m["loss"].numpy()
  t0 = time.time()
  state, m = trainer.run(state, tf.constant(1))
  m["loss"].numpy()
  per_iter = max(time.time() - t0, 1e-4)
  k = max(1, int(round(min_secs / per_iter)))
  t0 = time.time()
  state, m = trainer.run(state, tf.constant(k))
  m["loss"].numpy()
  dt = time.time() - t0
  return k * num_seeds * num_envs * 20 / dt, k


def run(argv_rest):
  p = argparse.ArgumentParser(prog="launch/benchmark.py a2c")
  p.add_argument("--tasks", default="small_dense_long,big_dense_long")
  p.add_argument("--seeds", default="1,10")
  p.add_argument("--envs", type=int, default=512)
  p.add_argument("--min_secs", type=float, default=3.0)
  p.add_argument("--conv_forms", default="auto")
  p.add_argument("--optimizer", default="rmsprop")
  p.add_argument("--jit", action="store_true")
  p.add_argument("--env", default="", help="with --against: the task (default: the first of --tasks)")
  p.add_argument("--json_out", default="", help="--against: also write the measurements as json here")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  against.add_flags(p, ("official",))
  args = p.parse_args(argv_rest)
  if args.child:
    rate, k = measure(args.child, 1, args.envs, args.min_secs, jit_compile=args.jit, optimizer=args.optimizer)
    print("RESULT " + json.dumps({
        "task": args.child,
        "envs": args.envs,
        "env_steps_per_sec": rate,
        "timed_iterations": k,
        "loadavg": os.getloadavg()
    }),
          flush=True)
    return 0
  if args.against:
    return against.main_guard(lambda: compare_official(args, args.env or args.tasks.split(",")[0]))
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  print(f"A2C env steps/s ({args.envs} envs per seed, rollout 20, {args.optimizer}; "
        f"TF {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads()})")
  for task in args.tasks.split(","):
    forms = args.conv_forms.split(",") if "big" in task else ["-"]
    for seeds in [int(s) for s in args.seeds.split(",")]:
      for form in forms:
        rate, k = measure(task,
                          seeds,
                          args.envs,
                          args.min_secs,
                          conv_form=form if form != "-" else "auto",
                          jit_compile=args.jit,
                          optimizer=args.optimizer)
        ref = OFFICIAL.get(task)
        vs = f"  ({rate / ref[1]:.1f}-{rate / ref[0]:.1f}x official 1-seed)" if ref else ""
        conv = f" conv={form}" if form != "-" else ""
        print(
            f"  {task:18s} seeds={seeds:<3d} envs={seeds * args.envs:<6d}{conv:14s} "
            f"{rate:12,.0f} env steps/s  ({k} iterations timed){vs}",
            flush=True)


def sides(args, task, environ=None):
  """(ours, official) :class:`against.Side`s of A2C on ``task``, 1 seed, ``--envs`` envs, RMSProp: env
  steps per second after warm-up, for ``--duration`` seconds."""
  official = against.official_side(args,
                                   "A2C",
                                   task,
                                   args.envs,
                                   lambda r: r["steps_per_s"],
                                   False,
                                   extra=["--optim", "RMSProp"] if args.optimizer == "rmsprop" else [],
                                   environ=environ)
  flags = [f"--child={task}", f"--envs={args.envs}", f"--min_secs={args.duration:g}", f"--optimizer={args.optimizer}"]
  ours = against.Side("ours", against.our_cmd("a2c", flags + (["--jit"] if args.jit else [])),
                      against.child_env(environ), lambda r: r["env_steps_per_sec"], False)
  return ours, official


def compare_official(args, task):
  ours, official = sides(args, task)
  against.compare(
      f"A2C {task}, 1 seed, {args.envs} envs, rollout 20, {args.optimizer}: env steps/s after warm-up, "
      f"{args.duration:g} s timed per measurement",
      ours,
      official,
      args.pairs,
      "env steps/s",
      timeout=args.child_timeout,
      json_out=args.json_out)
