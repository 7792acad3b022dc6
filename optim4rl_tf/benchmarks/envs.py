"""Environment throughput: env steps/s under a uniform random policy inside one tf.function loop.

``launch/benchmark.py envs [--steps N] [--envs big_dense_long,catch] [--num-envs 512,4096] [--no-xla]``
"""

from __future__ import annotations

import argparse
import time

import tensorflow as tf

from optim4rl_tf.envs import make


def _rollout_fn(env, num_steps: int, jit_compile: bool):
  """A compiled loop of ``num_steps`` random-policy steps; returns a checksum so nothing is pruned."""

  def body(i, state, seed, acc):
    s = tf.random.experimental.stateless_fold_in(seed, i)
    ks = tf.random.experimental.stateless_split(s, num=2)
    action = tf.random.stateless_uniform([env.num_envs], ks[0], minval=0, maxval=env.num_actions, dtype=tf.int32)
    state, obs, reward, done = env.step(state, action, ks[1])
    acc = acc + tf.reduce_sum(reward) + tf.reduce_sum(done) + tf.reduce_sum(obs[:, -1])
    return i + 1, state, seed, acc

  @tf.function(jit_compile=jit_compile)
  def rollout(seed):
    state = env.reset(tf.random.experimental.stateless_fold_in(seed, -1))
    _, state, _, acc = tf.while_loop(
        lambda i, *_: i < num_steps,
        body,
        (tf.constant(0), state, seed, tf.constant(0.0)),
    )
    return acc

  return rollout


def measure(name: str, num_envs: int, num_steps: int, jit_compile: bool, repeats: int = 2) -> float:
  env = make(name, num_envs)
  rollout = _rollout_fn(env, num_steps, jit_compile)
  rollout(tf.constant([0, 0])).numpy()  # trace / compile
  best = float("inf")
  for r in range(repeats):
    t0 = time.perf_counter()
    rollout(tf.constant([1, r])).numpy()
    best = min(best, time.perf_counter() - t0)
  return num_envs * num_steps / best


def run(argv_rest) -> None:
  parser = argparse.ArgumentParser(prog="benchmark.py envs", description=__doc__)
  parser.add_argument("--envs", default="big_dense_long,catch")
  parser.add_argument("--num-envs", default="512,4096")
  parser.add_argument("--steps", type=int, default=200, help="steps per timed loop")
  parser.add_argument("--no-xla", action="store_true", help="only the non-XLA graph")
  parser.add_argument("--xla-only", action="store_true", help="only the XLA-compiled graph")
  args = parser.parse_args(list(argv_rest))
  modes = [False, True]
  if args.no_xla:
    modes = [False]
  if args.xla_only:
    modes = [True]
  print(f"env steps/s, uniform random policy, {args.steps} steps per tf.while_loop "
        f"(best of 2, after a warm-up call); TF {tf.__version__}, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)")
  print(f"{'env':<18} {'num_envs':>8} {'xla':>5} {'steps/s':>14}")
  for name in args.envs.split(","):
    for n in [int(x) for x in args.num_envs.split(",")]:
      for jit in modes:
        sps = measure(name, n, args.steps, jit)
        print(f"{name:<18} {n:>8} {str(jit):>5} {sps:>14,.0f}", flush=True)


if __name__ == "__main__":
  import sys

  run(sys.argv[1:])
