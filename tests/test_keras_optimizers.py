"""The Keras 3 faces: fit, numerics equal to the core, config round trip, .keras save/load, NaN guard."""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf
from conftest import GOLDEN_DIR
from optim4rl_tf.optimizers import cores

CLASSES = [optim4rl_tf.Optim4RL, optim4rl_tf.LinearOptim, optim4rl_tf.L2LGD2]
ALL_CLASSES = CLASSES + [optim4rl_tf.STAR]


def regression_data(n=512):
  rng = np.random.RandomState(0)
  x = rng.randn(n, 4).astype(np.float32)
  y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32) + 0.3).astype(np.float32)
  return x, y


def split_variables(opt):
  """(phi variables, state variables) of a built optimizer: after ``iterations`` and the learning rate come
  the meta-parameters, then every model variable's state; ``nonfinite_steps`` is last."""
  n = len(opt.core.meta_param_shapes())
  return opt.variables[2:2 + n], opt.variables[2 + n:-1]


def small_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])


@pytest.mark.parametrize("cls", [optim4rl_tf.Optim4RL, optim4rl_tf.L2LGD2])
def test_fit_reduces_regression_loss(cls):
  x, y = regression_data()
  model = small_model()
  model.compile(optimizer=cls(learning_rate=1e-2, seed=0), loss="mse")
  history = model.fit(x, y, batch_size=64, epochs=8, verbose=0).history["loss"]
  assert history[-1] < 0.25 * history[0], history


def test_keras_face_matches_golden_trajectory():
  golden = np.load(os.path.join(GOLDEN_DIR, "optim4rl_golden.npz"))
  phi = {
      k[len("opt_16_16/"):]: golden[k] for k in golden.files if k.startswith("opt_16_16/") and not k.endswith("theta")
  }
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
  assert all(tuple(h.shape) == (8, 2, 3) and np.all(h.numpy() == 0) for h in hidden)  # (H,) + var.shape
  assert all("/" not in v.name for v in opt.variables)
  # The Keras face runs the same core: one step equals core.update.
  g = np.array([[0.1, -0.2, 0.0], [3.0, -1e-5, 1e-3]], np.float32)
  opt.apply_gradients([(tf.constant(g), var)])
  core = cores.make_core(cls._core_name)
  delta, state = core.update(opt.meta_params, core.init_state(tf.constant(g)), g, 0.1)
  np.testing.assert_allclose(var.numpy(), delta.numpy(), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(hidden[0].numpy(), np.moveaxis(state[0].numpy(), -1, 0), rtol=1e-6, atol=1e-7)


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


def test_hidden_states_saved_in_the_old_layout_are_moved_when_loaded():
  """Optimizer variables saved before the feature-major layout (hidden states ``var.shape + (H,)``) load into
  ``(H,) + var.shape`` and the step continues exactly as the optimizer that saved them."""
  var = keras.Variable(np.zeros((3, 4), np.float32), name="w")
  opt = optim4rl_tf.Optim4RL(learning_rate=0.03, seed=1)
  grads = np.random.RandomState(0).randn(3, 3, 4).astype(np.float32)
  for g in grads[:2]:
    opt.apply_gradients([(tf.constant(g), var)])
  hidden = {id(h) for state in opt._state for h in state}  # pylint: disable=protected-access
  old = {str(i): np.moveaxis(v.numpy(), 0, -1) if id(v) in hidden else v.numpy() for i, v in enumerate(opt.variables)}
  assert sorted({old[str(i)].shape for i, v in enumerate(opt.variables) if id(v) in hidden}) == [(3, 4, 8)]
  clone_var = keras.Variable(var.numpy(), name="w")
  clone = optim4rl_tf.Optim4RL(learning_rate=0.03, seed=1)
  clone.load_own_variables(old)  # before build: kept, assigned (moved) when Keras builds the optimizer
  clone.build([clone_var])
  for a, b in zip(opt.variables, clone.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  opt.apply_gradients([(tf.constant(grads[2]), var)])
  clone.apply_gradients([(tf.constant(grads[2]), clone_var)])
  np.testing.assert_array_equal(clone_var.numpy(), var.numpy())


def test_a_distribution_strategy_steps_each_variable_as_the_fused_step_does():
  """Under a ``tf.distribute`` strategy Keras updates one variable at a time; the result is the one-call step's."""
  x, y = regression_data(128)
  weights = []
  for strategy in (None, tf.distribute.OneDeviceStrategy("/cpu:0")):
    with strategy.scope() if strategy else contextlib.nullcontext():
      model = small_model()
      model.compile(optimizer=optim4rl_tf.Optim4RL.from_pretrained(learning_rate=1e-2), loss="mse")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    weights.append(model.get_weights() + [v.numpy() for v in model.optimizer.variables])
  assert len(weights[0]) == len(weights[1])
  for a, b in zip(*weights):  # float32 rounding (measured up to 1.7e-6 relative on an AMD EPYC with AVX2)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_non_finite_gradient_leaves_variable_unchanged():
  opt = optim4rl_tf.Optim4RL(learning_rate=0.1)
  var = keras.Variable(np.ones((3,), np.float32), name="v")
  opt.apply_gradients([(tf.constant([0.5, 0.5, 0.5]), var)])
  after_good = var.numpy().copy()
  hidden_before = [v.numpy().copy() for v in opt.variables if v.name.endswith(("_h1", "_h2"))]
  with pytest.warns(RuntimeWarning, match="non-finite gradient") as record:
    for bad in ([np.nan, 0.5, 0.5], [0.5, np.inf, 0.5]):
      opt.apply_gradients([(tf.constant(bad, tf.float32), var)])
      np.testing.assert_array_equal(var.numpy(), after_good)
  assert len([w for w in record if "non-finite" in str(w.message)]) == 1  # said once
  hidden_after = [v.numpy() for v in opt.variables if v.name.endswith(("_h1", "_h2"))]
  assert all(np.array_equal(a, b) for a, b in zip(hidden_before, hidden_after))
  assert int(opt.nonfinite_steps.numpy()) == 2
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


# ---------------------------------------------------------------------------------------------------
# Issue 14: custom loops, XLA, weights-only restore, dtypes, non-finite updates, clear errors, memory.


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_plain_tf_variable_in_a_custom_loop(cls):
  v = tf.Variable([[1.0, 2.0], [3.0, 4.0]], name="plain")
  opt = cls(learning_rate=0.1)
  opt.apply_gradients([(tf.ones((2, 2)), v)])
  assert np.all(np.isfinite(v.numpy())) and not np.array_equal(v.numpy(), [[1.0, 2.0], [3.0, 4.0]])
  phi_vars, state_vars = split_variables(opt)
  assert all(w.name.startswith("phi_") for w in phi_vars)
  assert state_vars and all("plain" in w.name for w in state_vars)  # state named after the tf.Variable


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_non_finite_gradients_in_jit_compiled_fit_warn_after_fit(cls):
  x, y = regression_data(32)
  x[3, 0] = np.nan  # every batch gradient of the first batch is NaN
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
  model.compile(optimizer=cls(learning_rate=1e-2), loss="mse", jit_compile=True)
  with pytest.warns(RuntimeWarning, match="non-finite gradient"):
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
  assert int(model.optimizer.nonfinite_steps.numpy()) == 2  # kernel and bias of the NaN batch
  assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("cls", [optim4rl_tf.Optim4RL, optim4rl_tf.STAR])
def test_float16_bfloat16_float64_compute_in_float32(cls):
  grads = [np.array([[0.5, -0.25], [2.0, 0.125]], np.float32), np.array([[-1.0, 0.5], [0.25, 4.0]], np.float32)]
  v0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  ref, v32 = cls(learning_rate=0.1), keras.Variable(v0)
  for g in grads:
    ref.apply_gradients([(tf.constant(g), v32)])
  for dtype, tol in (("float16", 2e-3), ("bfloat16", 2e-2), ("float64", 1e-6)):
    opt, v = cls(learning_rate=0.1), keras.Variable(v0.astype(np.float64), dtype=dtype)
    for g in grads:
      opt.apply_gradients([(tf.cast(g, dtype), v)])
    assert v.dtype == dtype
    np.testing.assert_allclose(np.asarray(v.numpy(), np.float64) - v0, v32.numpy() - v0, rtol=tol, atol=tol)
    # The state is float32 and, the gradients being exact in every dtype, equal to the float32 run's.
    for a, b in zip(opt.variables[2:], ref.variables[2:]):
      assert a.dtype == b.dtype
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5 if cls is optim4rl_tf.STAR else 0, atol=1e-7)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_integer_variable_is_a_clear_error(cls):
  v = keras.Variable(np.zeros(3, np.int32), dtype="int32", name="counts")
  with pytest.raises(ValueError, match="'counts' has dtype int32"):
    cls(learning_rate=0.1).apply_gradients([(tf.zeros(3, tf.int32), v)])


def test_loss_scale_optimizer_wraps_optim4rl():
  phi = optim4rl_tf.Optim4RL(seed=1).meta_params
  wrapped = keras.optimizers.LossScaleOptimizer(optim4rl_tf.Optim4RL(learning_rate=0.1, meta_params=phi))
  plain = optim4rl_tf.Optim4RL(learning_rate=0.1, meta_params=phi)
  a, b = keras.Variable(np.ones(3, np.float32)), keras.Variable(np.ones(3, np.float32))
  for g in ([0.5, -1.0, 0.25], [2.0, 0.0, -0.5]):
    wrapped.apply_gradients([(tf.constant(g) * wrapped.scale_loss(1.0), a)])
    plain.apply_gradients([(tf.constant(g), b)])
  np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
  assert not np.allclose(a.numpy(), 1.0)
  # Mixed precision fit: float16 compute, float32 variables, dynamic loss scaling.
  x, y = regression_data(64)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((4,)),
      keras.layers.Dense(8, activation="relu", dtype="mixed_float16"),
      keras.layers.Dense(1, dtype="mixed_float16")
  ])
  model.compile(optimizer=keras.optimizers.LossScaleOptimizer(optim4rl_tf.Optim4RL(learning_rate=1e-2)), loss="mse")
  loss = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history["loss"]
  assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_non_finite_update_is_never_written(cls):
  """Finite gradient, finite but overflowing meta-parameters (1e30): the update is NaN/Inf and skipped.
  (Every loader refuses such a phi, so it is written into the built optimizer's variables directly.)"""
  with pytest.warns(UserWarning):  # untrained phi
    opt = cls(learning_rate=0.1, seed=0)
  v = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32), name="w")
  opt.build([v])
  for p in split_variables(opt)[0]:
    p.assign(np.full(p.shape, 1e30, np.float32))
  with pytest.warns(RuntimeWarning, match="non-finite"):
    opt.apply_gradients([(tf.constant([0.5, -0.25, 1.0]), v)])
  np.testing.assert_array_equal(v.numpy(), [1.0, -2.0, 0.5])
  phi_vars, state_vars = split_variables(opt)
  assert all(np.all(s.numpy() == 0) for s in state_vars)  # state untouched
  assert all(np.all(p.numpy() == 1e30) for p in phi_vars)
  assert int(opt.nonfinite_steps.numpy()) == 1


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_non_finite_learning_rate(cls):
  for bad in (float("nan"), float("inf")):
    with pytest.raises(ValueError, match="learning_rate must be finite"):
      cls(learning_rate=bad)
  v = keras.Variable(np.ones(3, np.float32))
  schedule = keras.optimizers.schedules.ExponentialDecay(float("nan"), 10, 0.5)
  for lr in (schedule, lambda: float("inf")):
    with pytest.raises(ValueError, match="learning rate is .*must be finite"):
      cls(learning_rate=lr).apply_gradients([(tf.ones(3), v)])
  # Set to NaN after build: every step is skipped, nothing non-finite is written.
  opt = cls(learning_rate=0.1)
  opt.apply_gradients([(tf.ones(3), v)])
  before = v.numpy().copy()
  opt.learning_rate = float("nan")
  with pytest.warns(RuntimeWarning, match="non-finite"):
    opt.apply_gradients([(tf.ones(3), v)])
  np.testing.assert_array_equal(v.numpy(), before)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_gradient_shape_mismatch_names_variable_and_shapes(cls):
  v = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
  with pytest.raises(ValueError, match=r"'kernel' has shape \(3,\), but the variable has shape \(2, 2\)"):
    cls(learning_rate=0.1).apply_gradients([(tf.ones(3), v)])


def test_bad_meta_param_dicts_name_the_key():
  phi = optim4rl_tf.Optim4RL().meta_params
  cases = [
      (dict(phi, **{"rnn1/bias": "x"}), "'rnn1/bias' holds <U1 values"),
      (dict(phi, **{"rnn1/bias": [[1.0, 2.0], [3.0]]}), "'rnn1/bias' is not a numeric array"),
      (dict(phi, **{"rnn1/bias": None}), "'rnn1/bias' holds object values"),
      (dict(phi, __meta__={
          "optimizer": "optim4rl",
          "mlp_dims": 16
      }), r"'__meta__'\['mlp_dims'\] must be"),
      (dict(phi, __meta__='{"optimizer": "optim4rl", "mlp_dims": 16}'), r"\['mlp_dims'\] must be a sequence"),
      (dict(phi, __meta__='{"optimizer": "l2lgd2"}'), "made for optimizer 'l2lgd2'"),
      (dict(phi, __meta__="{not json"), "'__meta__' is not valid JSON"),
  ]
  for meta_params, message in cases:
    with pytest.raises(ValueError, match=message):
      optim4rl_tf.Optim4RL(meta_params=meta_params)
  with pytest.raises(ValueError, match="'rnn1/kernel' holds <U1 values"):
    optim4rl_tf.Optim4RL().set_meta_params(dict(phi, **{"rnn1/kernel": "x"}))
  with pytest.raises(ValueError, match="mlp_dims must be a sequence of positive integers, got 16"):
    optim4rl_tf.Optim4RL(mlp_dims=16)
  with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
    optim4rl_tf.L2LGD2(hidden_size="8")
  star_phi = optim4rl_tf.STAR().meta_params
  with pytest.raises(ValueError, match="'mlp/b0' holds <U1 values"):
    optim4rl_tf.STAR(meta_params=dict(star_phi, **{"mlp/b0": "x"}))
  with pytest.raises(ValueError, match="STAR exp_mult must be a sequence of finite numbers"):
    optim4rl_tf.STAR(star_options={"exp_mult": 1e-3})
  # A well-formed __meta__ (what dict(np.load(file)) gives) is accepted.
  meta = np.array('{"optimizer": "optim4rl", "mlp_dims": [16, 16], "hidden_size": 8}')
  assert optim4rl_tf.Optim4RL(meta_params=dict(phi, __meta__=meta)).mlp_dims == (16, 16)


@pytest.mark.parametrize("cls,floats", [(optim4rl_tf.Optim4RL, 16), (optim4rl_tf.LinearOptim, 8),
                                        (optim4rl_tf.L2LGD2, 8)])
def test_state_memory_matches_the_docstring(cls, floats):
  opt = cls()
  opt.build([keras.Variable(np.zeros((10, 10), np.float32), name="w")])
  state = [v for v in opt.variables if v.name.startswith("w_h")]
  assert sum(int(np.prod(v.shape)) for v in state) == floats * 100
  assert all(v.dtype == "float32" for v in state)
  assert f"{floats} floats" in cls.__doc__ and f"{4 * floats} bytes" in cls.__doc__


# ---------------------------------------------------------------------------------------------------
# Meta-parameters are optimizer variables; the config holds hyper-parameters only.


def _no_arrays(value):
  """True if ``value`` (a config) holds only scalars, None, short flat lists and dicts of those."""
  if isinstance(value, dict):
    return all(_no_arrays(v) for v in value.values())
  if isinstance(value, (list, tuple)):
    return len(value) <= 8 and all(isinstance(v, (int, float)) for v in value)
  return value is None or isinstance(value, (bool, int, float, str))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_config_has_no_arrays_and_load_model_restores_phi_from_the_variables(cls, tmp_path):
  rng = np.random.RandomState(1)
  phi = {k: v + rng.uniform(-0.1, 0.1, v.shape).astype(np.float32) for k, v in cls(seed=7).meta_params.items()}
  x, y = regression_data(32)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
  model.compile(optimizer=cls(learning_rate=1e-2, meta_params=phi), loss="mse", run_eagerly=True)
  config = model.optimizer.get_config()
  assert _no_arrays(config) and len(json.dumps(config)) < 1500, config
  assert config["meta_params"] is None and config["pretrained"] is None and config["seed"] == 0
  model.fit(x, y, batch_size=16, epochs=1, verbose=0)
  phi_vars = {v.name for v in model.optimizer.variables if v.name.startswith("phi_")}
  assert phi_vars == {"phi_" + k.replace("/", "_") for k in phi}
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert type(loaded.optimizer) is cls and loaded.optimizer.get_config() == config
  for key, value in phi.items():  # from the saved variables: the config's seed alone gives another phi
    np.testing.assert_array_equal(loaded.optimizer.meta_params[key], value)
  assert not all(np.array_equal(cls(seed=0).meta_params[k], v) for k, v in phi.items())


def test_config_keeps_a_path_and_load_model_survives_its_removal(tmp_path):
  npz = str(tmp_path / "phi.npz")
  phi = optim4rl_tf.L2LGD2(seed=3).meta_params
  optim4rl_tf.L2LGD2(meta_params=phi).save_meta_params(npz)
  opt = optim4rl_tf.L2LGD2(learning_rate=1e-2, meta_params=npz)
  assert opt.get_config()["meta_params"] == npz
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
  model.compile(optimizer=opt, loss="mse", run_eagerly=True)
  model.fit(*regression_data(16), batch_size=16, epochs=1, verbose=0)
  model.save(str(tmp_path / "m.keras"))
  os.remove(npz)
  with pytest.warns(UserWarning, match="phi.npz' not found"):
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
  for key, value in phi.items():
    np.testing.assert_array_equal(loaded.optimizer.meta_params[key], value)


def test_pretrained_name_in_config():
  opt = optim4rl_tf.Optim4RL.from_pretrained("catch", learning_rate=1e-2)
  config = opt.get_config()
  assert config["pretrained"] == "catch" and config["meta_params"] is None and config["mlp_dims"] == []
  clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  assert clone.get_config() == config
  assert all(np.array_equal(clone.meta_params[k], v) for k, v in opt.meta_params.items())
  assert not np.array_equal(
      optim4rl_tf.Optim4RL(mlp_dims=()).meta_params["rnn1/kernel"], opt.meta_params["rnn1/kernel"])
  with pytest.raises(ValueError, match="meta_params or pretrained, not both"):
    optim4rl_tf.Optim4RL(meta_params=opt.meta_params, pretrained="catch")
  with pytest.raises(ValueError, match="is a 'optim4rl' optimizer, not L2LGD2"):
    optim4rl_tf.L2LGD2.from_pretrained("catch")


def test_set_meta_params_before_and_after_build():
  phi = optim4rl_tf.LinearOptim(seed=5).meta_params
  opt = optim4rl_tf.LinearOptim(seed=0)
  opt.set_meta_params(phi)  # before build: the values the phi variables start from
  v = keras.Variable(np.ones(3, np.float32))
  opt.build([v])
  assert all(np.array_equal(opt.meta_params[k], phi[k]) for k in phi)
  other = optim4rl_tf.LinearOptim(seed=6).meta_params
  opt.set_meta_params(other)  # after build: assigned to the variables
  phi_vars = {v.name: v for v in opt.variables if v.name.startswith("phi_")}
  np.testing.assert_array_equal(phi_vars["phi_rnn_kernel"].numpy(), other["rnn/kernel"])


@pytest.mark.slow(12)
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax for KERAS_BACKEND=jax")
def test_non_tensorflow_backend_is_one_clear_error():
  code = textwrap.dedent("""
      import keras, optim4rl_tf
      assert keras.backend.backend() == "jax"
      for cls in (optim4rl_tf.LinearOptim, optim4rl_tf.L2LGD2, optim4rl_tf.STAR):
        try:
          cls()
        except RuntimeError as e:
          print("ok" if "KERAS_BACKEND is 'jax'" in str(e) else "wrong message")
      optim4rl_tf.Optim4RL(learning_rate=1e-3)
  """)
  env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode != 0
  assert out.stdout.split() == ["ok", "ok", "ok"], out.stdout + out.stderr
  assert ("RuntimeError: optim4rl_tf's Keras optimizers need the TensorFlow backend; KERAS_BACKEND is 'jax'. "
          "Set KERAS_BACKEND=tensorflow before importing keras.") in out.stderr, out.stderr
