"""PPO env steps/s: TF PPO through both Brax bridges vs Brax's own JAX trainer, in one run.

  python launch/benchmark.py ppo [--env ant] [--envs 256] [--batch 256] [--minibatches 8] [--unroll 5]
                                 [--epochs 4] [--min_secs 20] [--bridges graph,numpy] [--no_brax] [--jit]

Same work on both sides: the given number of envs, minibatch size (trajectories), minibatches, unroll and
update epochs; Brax spring backend; policy (32,)x4 and value (256,)x5 swish MLPs; observation
normalisation; Adam lr 3e-4 (TF: with elementwise clip 1 as in the paper's configs). Reported rate = env
steps per second of TRAINING (rollout + normaliser + SGD epochs), after warm-up, excluding compilation
and evaluation:
  * TF: two warm-up calls of one training step each (Brax's step is traced on its first two calls), then
    as many training steps as fill ``--min_secs`` (one ``tf.function`` call for the graph bridge);
  * Brax: ``brax.training.agents.ppo.train`` with num_evals=3 (2 training epochs); its own
    ``training/sps`` of the SECOND epoch (the first includes compilation).
Compilation of Ant takes minutes on 2 CPU cores (JAX step, TF step, Brax trainer each), so a full run
takes about 5-10 minutes. Reference (issue 7): Brax's own trainer ran Ant (spring, 256 envs, batch 256,
8 minibatches, unroll 5) at about 1.6e4 env steps/s on this kind of machine.

``--against=brax --brax_python=PY --brax_bench=SCRIPT [--pairs=2] [--duration=45] [--brax_timesteps=3e5]
[--brax_evals=6]``: instead of the in-process Brax trainer above, ours (the first of ``--bridges``, timed
for ``--duration`` seconds) and Brax's own ``ppo.train`` (the timing script ``bench_brax_ppo.py`` in its
own venv: steady-state env steps/s from Brax's per-epoch wall time, the first 2 epochs excluded)
alternately, each in its own process, with the machine's load beside every figure
(optim4rl_tf.benchmarks.against). Same sizes on both sides (--envs, --batch, --minibatches, --unroll,
--epochs).
"""

import argparse
import contextlib
import io
import json
import os
import time
import warnings

from optim4rl_tf.benchmarks import against


def tf_config(args, bridge):
  from optim4rl_tf.configs import ppo as ppo_configs  # the checkout's configs/ (launch/benchmark.py runs from it)
  c = ppo_configs.get_config(f"{args.env}_cpu" if args.env != "inverted_pendulum" else args.env)
  c.env.num_envs = args.envs
  c.env.bridge = bridge
  c.batch_size = args.batch
  c.num_minibatches = args.minibatches
  c.unroll_length = args.unroll
  c.update_epochs = args.epochs
  c.num_eval_envs = 1
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 3e-4
  c.network.policy_hidden = (32,) * 4
  c.network.value_hidden = (256,) * 5
  c.jit_compile = bool(args.jit)
  c.train_steps = 10**9
  return c


def measure_tf(args, bridge):
  """(env steps/s, training steps timed, secs) of TF PPO with one bridge."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().setLevel("ERROR")
  from optim4rl_tf.agents import ppo_train  # pylint: disable=import-outside-toplevel
  c = tf_config(args, bridge)
  schedule = ppo_train.validate_config(c)
  trainer = ppo_train.build(c, schedule)
  per_step = schedule.env_steps_per_train_step
  t0 = time.time()
  state = trainer.init()
  state, _ = trainer.run(state, 1)
  state, _ = trainer.run(state, 1)
  compile_secs = time.time() - t0
  t0 = time.time()
  state, m = trainer.run(state, 1)
  per = max(time.time() - t0, 1e-3)
  k = max(1, int(round(args.min_secs / per)))
  t0 = time.time()
  state, m = trainer.run(state, k)
  dt = time.time() - t0
  return k * per_step / dt, k, dt, compile_secs


def measure_brax(args):
  """(env steps/s of Brax's 2nd training epoch, training steps per epoch, compile+1st epoch secs)."""
  with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from brax import envs
    from brax.training.agents.ppo import train as brax_ppo
    env = envs.get_environment(args.env, backend="spring")
  per_step = args.batch * args.minibatches * args.unroll
  # Training steps per epoch such that an epoch lasts about min_secs at ~1e4 env steps/s.
  steps_per_epoch = max(2, int(round(args.min_secs * args.brax_guess / per_step)))
  num_timesteps = 2 * steps_per_epoch * per_step
  log = []
  t_start = time.time()

  def progress(step, metrics):
    log.append((time.time() - t_start, step, dict(metrics)))

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    brax_ppo.train(environment=env,
                   num_timesteps=num_timesteps,
                   episode_length=1000,
                   num_envs=args.envs,
                   batch_size=args.batch,
                   num_minibatches=args.minibatches,
                   unroll_length=args.unroll,
                   num_updates_per_batch=args.epochs,
                   learning_rate=3e-4,
                   entropy_cost=1e-2,
                   discounting=0.97,
                   reward_scaling=10.0,
                   normalize_observations=True,
                   num_evals=3,
                   num_eval_envs=16,
                   seed=0,
                   progress_fn=progress)
  sps = [m["training/sps"] for _, _, m in log if "training/sps" in m]
  return (sps[-1] if sps else float("nan")), steps_per_epoch, log


def run(argv_rest):
  p = argparse.ArgumentParser(prog="launch/benchmark.py ppo")
  p.add_argument("--env", default="ant")
  p.add_argument("--envs", type=int, default=256)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--minibatches", type=int, default=8)
  p.add_argument("--unroll", type=int, default=5)
  p.add_argument("--epochs", type=int, default=4)
  p.add_argument("--min_secs", type=float, default=20.0)
  p.add_argument("--bridges", default="graph,numpy")
  p.add_argument("--no_brax", action="store_true")
  p.add_argument("--jit", action="store_true", help="XLA for TF's SGD epochs")
  p.add_argument("--brax_guess", type=float, default=1e4, help="expected Brax env steps/s (epoch sizing)")
  p.add_argument("--brax_timesteps", type=float, default=3e5, help="--against=brax: Brax's num_timesteps")
  p.add_argument("--brax_evals", type=int, default=6, help="--against=brax: Brax's num_evals (epochs)")
  p.add_argument("--json_out", default="", help="--against: also write the measurements as json here")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  against.add_flags(p, ("brax",))
  args = p.parse_args(argv_rest)
  if args.child:
    rate, k, dt, comp = measure_tf(args, args.child)
    print("RESULT " + json.dumps({
        "bridge": args.child,
        "env_steps_per_sec": rate,
        "training_steps": k,
        "timed_s": dt,
        "compile_s": comp,
        "loadavg": os.getloadavg()
    }),
          flush=True)
    return 0
  if args.against:
    return against.main_guard(lambda: compare_brax(args))
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  per_step = args.batch * args.minibatches * args.unroll
  print(
      f"PPO training env steps/s on {args.env} (spring): {args.envs} envs, minibatch {args.batch} "
      f"trajectories x {args.minibatches} minibatches, unroll {args.unroll}, {args.epochs} epochs "
      f"({per_step:,} env steps per training step); TF {tf.__version__}, "
      f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads()}",
      flush=True)
  results = {}
  for bridge in [b for b in args.bridges.split(",") if b]:
    rate, k, dt, comp = measure_tf(args, bridge)
    results[f"tf-{bridge}"] = rate
    print(
        f"  TF PPO, {bridge:5s} bridge{' (XLA SGD)' if args.jit else ''}: {rate:10,.0f} env steps/s  "
        f"({k} training steps in {dt:.1f} s; compile + warm-up {comp:.0f} s)",
        flush=True)
  if not args.no_brax:
    t0 = time.time()
    rate, spe, log = measure_brax(args)
    results["brax"] = rate
    print(
        f"  Brax ppo.train (JAX):      {rate:10,.0f} env steps/s  (2nd epoch of {spe} training steps; "
        f"whole call {time.time() - t0:.0f} s incl. compile and 3 evals)",
        flush=True)
    for name, r in results.items():
      if name != "brax" and rate == rate and rate > 0:
        print(f"  {name} / brax = {r / rate:.2f}")
  return results


def sides(args, environ=None):
  """(ours, brax) :class:`against.Side`s: TF PPO (first of --bridges) and Brax's own ppo.train, env steps/s."""
  py, bench = against.resolve_brax(args, environ)
  cmd = [
      py, bench, "--env", args.env, "--num_envs",
      str(args.envs), "--batch_size",
      str(args.batch), "--num_minibatches",
      str(args.minibatches), "--unroll_length",
      str(args.unroll), "--num_updates_per_batch",
      str(args.epochs), "--num_timesteps", f"{args.brax_timesteps:g}", "--num_evals",
      str(args.brax_evals)
  ]
  brax = against.Side("brax", cmd, against.child_env(environ), lambda r: r["steady_sps"], False)
  bridge = [b for b in args.bridges.split(",") if b][0]
  flags = [
      f"--child={bridge}", f"--env={args.env}", f"--envs={args.envs}", f"--batch={args.batch}",
      f"--minibatches={args.minibatches}", f"--unroll={args.unroll}", f"--epochs={args.epochs}",
      f"--min_secs={args.duration:g}"
  ] + (["--jit"] if args.jit else [])
  ours = against.Side("ours", against.our_cmd("ppo", flags), against.child_env(environ),
                      lambda r: r["env_steps_per_sec"], False)
  return ours, brax


def compare_brax(args):
  ours, brax = sides(args)
  against.compare(
      f"PPO {args.env} (spring): {args.envs} envs, minibatch {args.batch} x {args.minibatches}, unroll "
      f"{args.unroll}, {args.epochs} epochs: training env steps/s after warm-up",
      ours,
      brax,
      args.pairs,
      "env steps/s",
      timeout=args.child_timeout,
      json_out=args.json_out)
