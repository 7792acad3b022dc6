"""``launch/benchmark.py optimizer``: a Keras ``fit`` epoch of an MLP 2x256 (batch 256) with Adam and with
the learned optimizers, in one process; prints seconds per step and the ratio to Adam."""

import time

import keras
import numpy as np

import optim4rl_tf

INPUT_DIM, STEPS, BATCH = 64, 50, 256


def _model():
  return keras.Sequential([
      keras.Input((INPUT_DIM,)),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(1)
  ])


def time_fit(make_optimizer, x, y, epochs=3):
  """Returns the best seconds-per-step over ``epochs`` timed epochs (after a warm-up epoch)."""
  keras.utils.set_random_seed(0)
  model = _model()
  model.compile(optimizer=make_optimizer(), loss="mse")
  model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
  best = float("inf")
  for _ in range(epochs):
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    best = min(best, (time.perf_counter() - start) / STEPS)
  return best, model.count_params()


def run(argv):
  del argv
  rng = np.random.RandomState(0)
  x = rng.randn(STEPS * BATCH, INPUT_DIM).astype(np.float32)
  y = (np.sin(x[:, :1]) + 0.1 * rng.randn(STEPS * BATCH, 1)).astype(np.float32)
  candidates = {
      "adam": lambda: keras.optimizers.Adam(1e-3, epsilon=1e-8),
      "rmsprop": lambda: keras.optimizers.RMSprop(1e-3, rho=0.9, epsilon=1e-8),
      "optim4rl[16,16]": lambda: optim4rl_tf.Optim4RL(1e-3),
      "optim4rl[]": lambda: optim4rl_tf.Optim4RL(1e-3, mlp_dims=()),
      "linear_optim": lambda: optim4rl_tf.LinearOptim(1e-3),
      "l2lgd2": lambda: optim4rl_tf.L2LGD2(1e-3),
  }
  results = {}
  for name, make in candidates.items():
    results[name], params = time_fit(make, x, y)
  print(f"Keras fit, MLP {INPUT_DIM}-256-256-1 ({params} params), batch {BATCH}, best of 3 epochs of "
        f"{STEPS} steps")
  for name, sec in results.items():
    print(f"  {name:16s} {1e3 * sec:8.2f} ms/step   {sec / results['adam']:5.2f}x Adam")
