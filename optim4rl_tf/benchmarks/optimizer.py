"""``launch/benchmark.py optimizer``: a Keras ``fit`` epoch of an MLP 64-256-256-1 (batch 256) with Adam and
with the learned optimizers, in one process, ``jit_compile`` off and on; prints milliseconds per step, the
ratio to Adam under the same ``jit_compile``, and the machine's load beside the figures.

  python launch/benchmark.py optimizer [--names=adam,optim4rl_headfree,optim4rl_16x16] [--jit=off,on] [--rounds=3]

Every candidate is compiled and warmed up once per ``jit_compile`` setting; then ``--rounds`` rounds each time
one epoch of every candidate in turn (interleaved, so a change of load hits all of them alike), and a
candidate's figure is its best epoch. Each candidate's model starts from the same weights (seed 0).
"""

import argparse
import datetime
import os
import time
import warnings

import keras
import numpy as np

import optim4rl_tf
from optim4rl_tf.benchmarks import against
from optim4rl_tf.optimizers import keras_optimizers

INPUT_DIM, STEPS, BATCH = 64, 50, 256
CANDIDATES = {
    "adam": lambda: keras.optimizers.Adam(1e-3, epsilon=1e-8),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-3, rho=0.9, epsilon=1e-8),
    "optim4rl_16x16": lambda: optim4rl_tf.Optim4RL(1e-3, mlp_dims=(16, 16)),
    "optim4rl_headfree": lambda: optim4rl_tf.Optim4RL(1e-3, mlp_dims=()),
    "linear_optim": lambda: optim4rl_tf.LinearOptim(1e-3),
    "l2lgd2": lambda: optim4rl_tf.L2LGD2(1e-3),
}


def _model():
  return keras.Sequential([
      keras.Input((INPUT_DIM,)),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(1)
  ])


def _data():
  rng = np.random.RandomState(0)
  x = rng.randn(STEPS * BATCH, INPUT_DIM).astype(np.float32)
  y = (np.sin(x[:, :1]) + 0.1 * rng.randn(STEPS * BATCH, 1)).astype(np.float32)
  return x, y


def compiled_model(make_optimizer, jit_compile, x, y):
  """A seed-0 model compiled with the optimizer and ``jit_compile``, warmed up by one epoch."""
  keras.utils.set_random_seed(0)
  model = _model()
  with warnings.catch_warnings():  # phi fresh from its seed: the speed does not depend on its values
    warnings.simplefilter("ignore", keras_optimizers.UntrainedMetaParamsWarning)
    optimizer = make_optimizer()
  model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
  model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
  return model


def epoch_seconds_per_step(model, x, y):
  start = time.perf_counter()
  model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
  return (time.perf_counter() - start) / STEPS


def time_fits(names, jit_settings, rounds):
  """{(name, jit): best seconds per step over ``rounds`` interleaved epochs}."""
  x, y = _data()
  models = {(n, j): compiled_model(CANDIDATES[n], j, x, y) for j in jit_settings for n in names}
  best = {k: float("inf") for k in models}
  for _ in range(rounds):
    for k, model in models.items():
      best[k] = min(best[k], epoch_seconds_per_step(model, x, y))
  return best


def _parse(argv):
  p = argparse.ArgumentParser(prog="launch/benchmark.py optimizer")
  p.add_argument("--names", default=",".join(CANDIDATES), help=f"of {', '.join(CANDIDATES)} (adam is always in)")
  p.add_argument("--jit", default="off,on", help="jit_compile settings to measure: off, on or off,on")
  p.add_argument("--rounds", type=int, default=3, help="interleaved timed epochs per candidate (best counts)")
  args = p.parse_args(argv)
  names = ["adam"] + [n for n in args.names.split(",") if n and n != "adam"]
  unknown = [n for n in names if n not in CANDIDATES]
  if unknown:
    p.error(f"--names: unknown optimizer(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
  jit = {"off": False, "on": True}
  if not args.jit or any(s not in jit for s in args.jit.split(",")):
    p.error(f"--jit={args.jit!r}: give off, on or off,on")
  if args.rounds < 1:
    p.error(f"--rounds={args.rounds} must be at least 1")
  return names, [jit[s] for s in args.jit.split(",")], args.rounds


def run(argv):
  names, jit_settings, rounds = _parse(argv)
  before, t0 = os.getloadavg(), time.time()
  total0, own0 = against.machine_cpu_seconds(), against.own_cpu_seconds()
  best = time_fits(names, jit_settings, rounds)
  after, seconds, total1 = os.getloadavg(), time.time() - t0, against.machine_cpu_seconds()
  others = None if total0 is None or total1 is None else max(0.0, (total1 - total0 -
                                                                   (against.own_cpu_seconds() - own0)) / seconds)
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  params = _model().count_params()
  print(f"Keras fit, MLP {INPUT_DIM}-256-256-1 ({params} params), batch {BATCH}: best of {rounds} interleaved "
        f"epochs of {STEPS} steps per optimizer")
  print(f"  {now}; commit {against.commit_of()}; {os.cpu_count()} CPUs; load {before[0]:.2f}->{after[0]:.2f} "
        f"(1-min); others used {'?' if others is None else f'{others:.1f}'} cores")
  for jit in jit_settings:
    print(f"  jit_compile={jit}")
    for name in names:
      sec = best[(name, jit)]
      print(f"    {name:16s} {1e3 * sec:8.2f} ms/step   {sec / best[('adam', jit)]:5.2f}x Adam")
  return 0
