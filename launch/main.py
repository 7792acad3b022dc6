"""The project's main job (README's first command).

For now: a short Keras ``fit`` of a small regression MLP with Optim4RL (an untrained, freshly initialised
learned optimizer) and with Adam, printing both losses per epoch. Later issues replace it with
meta-training Optim4RL on Catch and testing it against Adam and RMSProp.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_integer("epochs", 5, "Epochs of the comparison fit.")
flags.DEFINE_integer("seed", 0, "Seed of data, model and learned optimizer.")
FLAGS = flags.FLAGS


def keras_demo(epochs, seed):
  import keras
  import numpy as np
  import optim4rl_tf

  rng = np.random.RandomState(seed)
  x = rng.randn(2048, 8).astype(np.float32)
  y = (np.sin(x[:, :2]).sum(1, keepdims=True) + 0.1 * rng.randn(2048, 1)).astype(np.float32)
  losses = {}
  for name, make in (("adam", lambda: keras.optimizers.Adam(1e-3, epsilon=1e-8)),
                     ("optim4rl", lambda: optim4rl_tf.Optim4RL(1e-3, seed=seed))):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=make(), loss="mse")
    losses[name] = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0).history["loss"]
  print("epoch   adam_loss   optim4rl_loss")
  for i in range(epochs):
    print(f"{i + 1:5d}   {losses['adam'][i]:9.4f}   {losses['optim4rl'][i]:13.4f}")
  return losses


def main(argv):
  del argv
  keras_demo(FLAGS.epochs, FLAGS.seed)


if __name__ == "__main__":
  app.run(main)
