"""The learned-optimizer cores against independent NumPy computations, the official golden values,
Keras's own GRUCell, and finite differences."""

import inspect
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import GOLDEN_DIR
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import star

# ---------------------------------------------------------------------------------------------------
# An independent NumPy implementation (float64), written from docs/fidelity.md §0.2 and §6.2-§6.4.


def np_sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def np_gru(phi, prefix, x, h):
  """Keras GRUCell reset_after=True, gate order (z, r, h), per coordinate: x [N, in], h [N, H]."""
  k, rk, b = (np.float64(phi[f"{prefix}/{n}"]) for n in ("kernel", "recurrent_kernel", "bias"))
  H = h.shape[1]
  gates_x = x @ k + b[0]
  gates_h = h @ rk + b[1]
  z = np_sigmoid(gates_x[:, :H] + gates_h[:, :H])
  r = np_sigmoid(gates_x[:, H:2 * H] + gates_h[:, H:2 * H])
  n = np.tanh(gates_x[:, 2 * H:] + r * gates_h[:, 2 * H:])
  return (1 - z) * n + z * h


def np_mlp(phi, prefix, x):
  i = 0
  while f"{prefix}/dense_{i}/kernel" in phi:
    x = np.maximum(x @ np.float64(phi[f"{prefix}/dense_{i}/kernel"]) + phi[f"{prefix}/dense_{i}/bias"], 0)
    i += 1
  return x @ np.float64(phi[f"{prefix}/out/kernel"]) + phi[f"{prefix}/out/bias"]


def np_update(name, phi, hs, g, lr):
  """Returns (delta, new hidden states) for gradient g of any shape; hs: list of arrays g.shape+(H,)."""
  shape = g.shape
  x = np.float64(g).reshape(-1, 1)
  flat = [h.reshape(x.shape[0], -1) for h in hs]
  if name == "optim4rl":
    h1 = np_gru(phi, "rnn1", x, flat[0])
    h2 = np_gru(phi, "rnn2", x * x, flat[1])
    m = np.sign(x) * np.exp(np_mlp(phi, "mlp1", h1))
    v = np.exp(np_mlp(phi, "mlp2", h2))
    delta, new = -lr * m / np.sqrt(v + 1e-8), [h1, h2]
  elif name == "linear_optim":
    h = np_gru(phi, "rnn", x, flat[0])
    o = np_mlp(phi, "mlp", h)
    delta, new = -lr * (np.exp(o[:, :1]) * x + np.exp(o[:, 1:2]) * o[:, 2:3]), [h]
  else:  # l2lgd2
    ell = np.log(np.abs(x) + 1e-8) / 10.0
    inp = np.where(ell >= -1, np.concatenate([ell, np.sign(x)], 1),
                   np.concatenate([-np.ones_like(x), np.exp(10.0) * x], 1))
    h = np_gru(phi, "rnn", inp, flat[0])
    delta, new = -lr * np.exp(np_mlp(phi, "mlp", h)) * x, [h]
  return delta.reshape(shape), [h.reshape(shape + (h.shape[-1],)) for h in new]


def gradient_sequence(shape, steps, rng):
  """Gradients with zeros, tiny, ordinary and large magnitudes mixed in."""
  seq = []
  for t in range(steps):
    g = rng.randn(*shape) * 10.0**rng.randint(-6, 3, size=shape)
    g = np.where(rng.rand(*shape) < 0.15, 0.0, g)
    if t == 1:
      g = np.full(shape, 1e4) * np.sign(rng.randn(*shape))
    seq.append(g.astype(np.float32))
  return seq


@pytest.mark.parametrize("name", cores.LEARNED_NAMES)
@pytest.mark.parametrize("mlp_dims", [(16, 16), ()])
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4), (5, 1, 6)])
def test_core_matches_numpy(name, mlp_dims, shape):
  rng = np.random.RandomState(hash((name, mlp_dims, shape)) % 2**31)
  core = cores.make_core(name, mlp_dims)
  phi = core.init_meta_params(seed=3)
  # Make the biases non-zero so every bias path is checked.
  phi = {k: v + (0.1 * rng.randn(*v.shape)).astype(np.float32) if k.endswith("bias") else v for k, v in phi.items()}
  state = core.init_state(tf.zeros(shape))
  np_state = [np.zeros(shape + (8,)) for _ in range(core.num_states)]
  for g in gradient_sequence(shape, 6, rng):
    delta, state = core.update(phi, state, g, 0.03)
    np_delta, np_state = np_update(name, phi, np_state, g, 0.03)
    np.testing.assert_allclose(delta.numpy(), np_delta, rtol=2e-4, atol=1e-7)
    for h, np_h in zip(state, np_state):
      np.testing.assert_allclose(h.numpy(), np_h, rtol=1e-4, atol=1e-5)


def test_optim4rl_zero_gradient_gives_zero_update():
  core = cores.make_core("optim4rl")
  phi = core.init_meta_params(0)
  phi["rnn1/bias"] = np.full((2, 24), 0.3, np.float32)
  g = np.array([[0.0, 1.0], [0.0, -2.0]], np.float32)
  delta, state = core.update(phi, core.init_state(tf.constant(g)), g, 1.0)
  assert delta.numpy()[0, 0] == 0.0 and delta.numpy()[1, 0] == 0.0
  assert np.all(delta.numpy()[:, 1] != 0.0)
  assert np.sign(delta.numpy()[0, 1]) == -1 and np.sign(delta.numpy()[1, 1]) == 1
  # The hidden state still moves with a zero gradient (the GRU runs on every step).
  assert np.any(state[0].numpy()[0, 0] != 0.0)


@pytest.mark.parametrize("tag", ["16_16", "none"])
def test_optim4rl_matches_official_golden_trajectory(tag):
  golden = np.load(os.path.join(GOLDEN_DIR, "optim4rl_golden.npz"))
  prefix = f"opt_{tag}/"
  phi = {k[len(prefix):]: golden[k] for k in golden.files if k.startswith(prefix) and not k.endswith("theta")}
  core, phi = meta_params_lib.resolve("optim4rl", phi)
  assert core.mlp_dims == ((16, 16) if tag == "16_16" else ())
  theta = np.zeros((3, 4), np.float32)
  state = core.init_state(tf.constant(theta))
  for t, g in enumerate(golden["opt_grads"]):
    delta, state = core.update(phi, state, g, 0.03)
    theta = theta + delta.numpy()
    np.testing.assert_allclose(theta, golden[prefix + "theta"][t], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("input_dim", [1, 2])
def test_gru_step_matches_keras_grucell(input_dim):
  cell = keras.layers.GRUCell(8, reset_after=True, bias_initializer="random_normal")
  cell.build((None, input_dim))
  phi = {
      "c/kernel": cell.kernel.numpy(),
      "c/recurrent_kernel": cell.recurrent_kernel.numpy(),
      "c/bias": cell.bias.numpy()
  }
  rng = np.random.RandomState(0)
  x = rng.randn(5, input_dim).astype(np.float32)
  h = rng.randn(5, 8).astype(np.float32)
  expected, _ = cell(x, [h])
  got = cores.gru_step(phi, "c", tf.constant(x.T), tf.constant(h.T)).numpy().T  # feature-major
  np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", cores.LEARNED_NAMES)
def test_meta_gradient_after_four_updates_matches_finite_differences(name):
  """d/dphi of a scalar loss of theta after M = 4 updates, in float64, against central differences."""
  core = cores.make_core(name, (4,))
  rng = np.random.RandomState(1)
  phi0 = {k: np.float64(v) + 0.05 * rng.randn(*v.shape) for k, v in core.init_meta_params(2).items()}
  grads = [tf.constant(rng.randn(3, 2) * 0.5) for _ in range(4)]
  target = tf.constant(rng.randn(3, 2))

  def loss_fn(phi):
    theta = tf.zeros([3, 2], tf.float64)
    state = core.init_state(theta)
    for g in grads:
      delta, state = core.update(phi, state, g, 0.1)
      theta = theta + delta
    return tf.reduce_sum((theta - target)**2)

  phi_vars = {k: tf.Variable(v) for k, v in phi0.items()}
  with tf.GradientTape() as tape:
    loss = loss_fn(phi_vars)
  analytic = tape.gradient(loss, phi_vars)
  checked = 0
  for key in sorted(phi0):
    for idx in list(np.ndindex(phi0[key].shape))[:3]:
      eps = 1e-6
      plus = {k: v.copy() for k, v in phi0.items()}
      minus = {k: v.copy() for k, v in phi0.items()}
      plus[key][idx] += eps
      minus[key][idx] -= eps
      numeric = (loss_fn(plus).numpy() - loss_fn(minus).numpy()) / (2 * eps)
      got = analytic[key].numpy()[idx]
      assert abs(got - numeric) <= 1e-6 + 1e-4 * abs(numeric), (key, idx, got, numeric)
      checked += 1
  assert checked >= 15


def test_gradient_input_is_stop_gradient():
  core = cores.make_core("optim4rl")
  phi = core.init_meta_params(0)
  g = tf.Variable([0.5, -1.0])
  with tf.GradientTape() as tape:
    delta, _ = core.update(phi, core.init_state(g), g * 1.0, 1.0)
  assert tape.gradient(tf.reduce_sum(delta), g) is None


@pytest.mark.parametrize("name", cores.LEARNED_NAMES)
def test_init_like_official(name):
  core = cores.make_core(name)
  phi = core.init_meta_params(seed=5)
  assert set(phi) == set(core.meta_param_shapes())
  for key, value in phi.items():
    assert value.shape == core.meta_param_shapes()[key] and value.dtype == np.float32
    if key.endswith("/bias"):
      assert np.all(value == 0)
    elif key.endswith("/recurrent_kernel"):
      for j in range(3):  # each (8, 8) gate block is orthogonal on its own (docs/fidelity.md §6.1)
        block = value[:, 8 * j:8 * (j + 1)]
        np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)
    else:
      std = np.sqrt(1.0 / value.shape[0]) / 0.87962566
      assert np.all(np.abs(value) <= 2 * std + 1e-6)
  again = core.init_meta_params(seed=5)
  other = core.init_meta_params(seed=6)
  assert all(np.array_equal(phi[k], again[k]) for k in phi)
  assert any(not np.array_equal(phi[k], other[k]) for k in phi if not k.endswith("bias"))


def test_meta_parameter_counts():
  # Keras GRUCell layout keeps both bias rows (2, 24): 24 + 192 + 48 = 264 per GRU (flax stores 248).
  assert cores.make_core("optim4rl", ()).num_meta_params() == 2 * 264 + 2 * 9
  assert cores.make_core("optim4rl", (16, 16)).num_meta_params() == 2 * 264 + 2 * 433
  assert cores.make_core("linear_optim", ()).num_meta_params() == 264 + 27
  assert cores.make_core("l2lgd2", ()).num_meta_params() == 264 + 24 + 9


def test_unknown_core_name():
  with pytest.raises(ValueError, match="valid names: optim4rl, linear_optim, l2lgd2"):
    cores.make_core("adamw")


def test_all_four_cores_share_one_update_signature_and_result_kind():
  """``cores.Core.update`` is the one step function: same arguments, (update to add, new state) back."""
  all_cores = [cores.make_core(n) for n in cores.LEARNED_NAMES] + [star.StarCore()]
  signature = inspect.signature(cores.Core.update)
  assert list(signature.parameters) == ["self", "phi", "state", "g", "learning_rate", "param", "unit_axis"]
  rng = np.random.RandomState(2)
  p = tf.constant(rng.randn(3, 4), tf.float32)
  g = tf.constant(rng.randn(3, 4), tf.float32)
  for core in all_cores:
    assert isinstance(core, cores.Core) and inspect.signature(type(core).update) == signature, core.name
    phi = core.init_meta_params(1)
    state = core.init_state(p)
    update, new_state = core.update(phi, state, g, 0.1, param=p)
    assert update.shape == g.shape and update.dtype == tf.float32 and np.all(np.isfinite(update.numpy()))
    assert [x.shape for x in tf.nest.flatten(new_state)] == [x.shape for x in tf.nest.flatten(state)]
    updates, _ = core.update_list(phi, [state], [g], 0.1, params=[p])
    np.testing.assert_array_equal(updates[0].numpy(), update.numpy())
    if core.name != star.NAME:  # coordinatewise: the parameter does not enter the update
      np.testing.assert_array_equal(core.update(phi, state, g, 0.1)[0].numpy(), update.numpy())
