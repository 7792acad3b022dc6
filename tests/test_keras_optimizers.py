"""The Keras 3 faces: fit, numerics equal to the core, config round trip, .keras save/load, NaN guard."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf
from conftest import GOLDEN_DIR
from optim4rl_tf.optimizers import cores

CLASSES = [optim4rl_tf.Optim4RL, optim4rl_tf.LinearOptim, optim4rl_tf.L2LGD2]


def regression_data(n=512):
  rng = np.random.RandomState(0)
  x = rng.randn(n, 4).astype(np.float32)
  y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32) + 0.3).astype(np.float32)
  return x, y


def small_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                           keras.layers.Dense(1)])


@pytest.mark.parametrize("cls", [optim4rl_tf.Optim4RL, optim4rl_tf.L2LGD2])
def test_fit_reduces_regression_loss(cls):
  x, y = regression_data()
  model = small_model()
  model.compile(optimizer=cls(learning_rate=1e-2, seed=0), loss="mse")
  history = model.fit(x, y, batch_size=64, epochs=8, verbose=0).history["loss"]
  assert history[-1] < 0.25 * history[0], history


def test_keras_face_matches_golden_trajectory():
  golden = np.load(os.path.join(GOLDEN_DIR, "optim4rl_golden.npz"))
  phi = {k[len("opt_16_16/"):]: golden[k] for k in golden.files
         if k.startswith("opt_16_16/") and not k.endswith("theta")}
  opt = optim4rl_tf.Optim4RL(learning_rate=0.03, meta_params=phi)
  var = keras.Variable(np.zeros((3, 4), np.float32), name="theta")
  for t, g in enumerate(golden["opt_grads"]):
    opt.apply_gradients([(tf.constant(g), var)])
    np.testing.assert_allclose(var.numpy(), golden["opt_16_16/theta"][t], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", CLASSES)
def test_hidden_state_variables(cls):
  opt = cls(learning_rate=0.1)
  var = keras.Variable(np.zeros((2, 3), np.float32), name="w")
  opt.build([var])
  hidden = [v for v in opt.variables if v.name.endswith(("_h1", "_h2"))]
  assert len(hidden) == (2 if cls is optim4rl_tf.Optim4RL else 1)
  assert all(tuple(h.shape) == (2, 3, 8) and np.all(h.numpy() == 0) for h in hidden)
  assert all("/" not in v.name for v in opt.variables)
  # The Keras face runs the same core: one step equals core.update.
  g = np.array([[0.1, -0.2, 0.0], [3.0, -1e-5, 1e-3]], np.float32)
  opt.apply_gradients([(tf.constant(g), var)])
  core = cores.make_core(cls._core_name)
  delta, state = core.update(opt.meta_params, core.init_state(tf.constant(g)), g, 0.1)
  np.testing.assert_allclose(var.numpy(), delta.numpy(), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(hidden[0].numpy(), state[0].numpy(), rtol=1e-6, atol=1e-7)


def test_get_config_round_trip():
  opt = optim4rl_tf.Optim4RL(learning_rate=3e-3, mlp_dims=(), seed=4, clipvalue=1.0)
  config = opt.get_config()
  assert config["mlp_dims"] == [] and config["clipvalue"] == 1.0
  clone = optim4rl_tf.Optim4RL.from_config(config)
  assert clone.get_config() == config
  assert all(np.array_equal(clone.meta_params[k], opt.meta_params[k]) for k in opt.meta_params)
  assert keras.optimizers.deserialize(keras.optimizers.serialize(opt)).mlp_dims == ()


def test_keras_save_load_continues_identically(tmp_path):
  x, y = regression_data(256)
  model = small_model()
  model.compile(optimizer=optim4rl_tf.Optim4RL(learning_rate=1e-2, seed=3), loss="mse")
  model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, optim4rl_tf.Optim4RL)
  for k, v in model.optimizer.meta_params.items():
    np.testing.assert_array_equal(loaded.optimizer.meta_params[k], v)
  model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
  loaded.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
  for a, b in zip(model.get_weights(), loaded.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # A fresh optimizer that had not seen those hidden states would end elsewhere.
  fresh = keras.models.load_model(path)
  fresh.compile(optimizer=optim4rl_tf.Optim4RL(learning_rate=1e-2, seed=3), loss="mse")
  fresh.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
  assert any(not np.allclose(a, b) for a, b in zip(model.get_weights(), fresh.get_weights()))


def test_non_finite_gradient_leaves_variable_unchanged(capfd):
  opt = optim4rl_tf.Optim4RL(learning_rate=0.1)
  var = keras.Variable(np.ones((3,), np.float32), name="v")
  opt.apply_gradients([(tf.constant([0.5, 0.5, 0.5]), var)])
  after_good = var.numpy().copy()
  hidden_before = [v.numpy().copy() for v in opt.variables if v.name.endswith(("_h1", "_h2"))]
  for bad in ([np.nan, 0.5, 0.5], [0.5, np.inf, 0.5]):
    opt.apply_gradients([(tf.constant(bad, tf.float32), var)])
    np.testing.assert_array_equal(var.numpy(), after_good)
  hidden_after = [v.numpy() for v in opt.variables if v.name.endswith(("_h1", "_h2"))]
  assert all(np.array_equal(a, b) for a, b in zip(hidden_before, hidden_after))
  assert int(opt.nonfinite_steps.numpy()) == 2
  err = capfd.readouterr().err
  assert err.count("non-finite gradient") == 1  # said once
  opt.apply_gradients([(tf.constant([0.5, 0.5, 0.5]), var)])
  assert np.all(var.numpy() < after_good)


def test_clipvalue_is_the_official_grad_clip():
  phi = optim4rl_tf.Optim4RL(seed=0).meta_params
  clipped = optim4rl_tf.Optim4RL(learning_rate=0.1, meta_params=phi, clipvalue=1.0)
  reference = optim4rl_tf.Optim4RL(learning_rate=0.1, meta_params=phi)
  a = keras.Variable(np.zeros(2, np.float32), name="a")
  b = keras.Variable(np.zeros(2, np.float32), name="b")
  clipped.apply_gradients([(tf.constant([5.0, -0.5]), a)])
  reference.apply_gradients([(tf.constant([1.0, -0.5]), b)])
  np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_unknown_keyword_is_rejected():
  with pytest.raises(ValueError, match="not recognized"):
    optim4rl_tf.Optim4RL(learning_rat=1e-3)
