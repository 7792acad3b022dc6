"""Agent networks of docs/fidelity.md §3: parameter counts, the official golden loss/gradient, init, unit batching."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from conftest import GOLDEN_DIR

GOLDEN = os.path.join(GOLDEN_DIR, "a2c_loss_golden.npz")

# (name, obs shape (N+1, rows, cols) of docs/fidelity.md §1.1 / Catch (10, 5, 1), actions, params of §3.3's table)
TABLE = [
    ("small_dense_short", (3, 6, 8), 9, 4970),
    ("small_dense_long", (3, 8, 6), 9, 4970),
    ("small_sparse_short", (3, 5, 10), 9, 5162),
    ("small_sparse_long", (3, 10, 5), 9, 5162),
    ("big_sparse_short", (5, 12, 14), 9, 31994),
    ("big_sparse_long", (5, 14, 12), 9, 36986),
    ("big_dense_short", (5, 11, 15), 9, 29498),
    ("big_dense_long", (5, 15, 11), 9, 39482),
    ("catch", (10, 5, 1), 3, 14084),
]


@pytest.mark.parametrize("name,obs_shape,num_actions,expected", TABLE)
def test_param_counts(name, obs_shape, num_actions, expected):
  assert networks.count_params(name, obs_shape, num_actions) == expected
  net = networks.make_network(name, obs_shape, num_actions)
  params = net.init(networks.unit_seeds(0, 2))
  assert sum(int(np.prod(p.shape[1:])) for p in params) == expected
  assert all(p.shape[0] == 2 for p in params)


def test_env_obs_shapes_match_table():
  from optim4rl_tf import envs
  for name, obs_shape, num_actions, expected in TABLE:
    env = envs.make(name, 1)
    assert tuple(env.obs_shape) == obs_shape and env.num_actions == num_actions
    assert networks.count_params(name, env.obs_shape, env.num_actions) == expected


def _golden():
  return np.load(GOLDEN)


@pytest.mark.parametrize("env_name,num_actions,conv_form", [("small_dense_long", 9, "auto"), ("catch", 3, "auto"),
                                                            ("big_dense_long", 9, "auto"),
                                                            ("big_dense_long", 9, "conv2d"),
                                                            ("big_dense_long", 9, "im2col"),
                                                            ("big_dense_long", 9, "shifted")])
def test_golden_loss_and_grads(env_name, num_actions, conv_form):
  d = _golden()
  obs = d[f"{env_name}/obs"]
  net = networks.make_network(env_name, obs.shape[1:], num_actions, conv_form=conv_form)
  prefix = f"{env_name}/param/"
  flat = {k[len(prefix):]: d[k] for k in d.files if k.startswith(prefix)}
  assert sorted(flat) == sorted(net.param_names)  # names are the official flax paths
  params = net.from_flax(flat)
  traj = a2c.Trajectory(obs=tf.constant(obs)[None, :, None],
                        actions=tf.constant(d[f"{env_name}/action"])[None, :, None],
                        rewards=tf.constant(d[f"{env_name}/reward"])[None, :, None],
                        dones=tf.constant(d[f"{env_name}/done"])[None, :, None])
  loss, metrics, grads = a2c.loss_and_grads(net.apply, params, traj)
  mine = np.array([metrics[k][0].numpy() for k in ("loss", "actor_loss", "critic_loss", "entropy_loss")])
  np.testing.assert_allclose(mine, d[f"{env_name}/loss"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(loss.numpy(), mine[:1], rtol=1e-6)
  for name, g in zip(net.param_names, grads):
    ref = d[f"{env_name}/grad/{name}"]
    scale = np.abs(ref).max()
    np.testing.assert_allclose(g[0].numpy(), ref, rtol=0, atol=1e-4 * scale + 1e-9, err_msg=name)


@pytest.mark.parametrize("units", [2, 20])  # unrolled per-unit convs / tf.map_fn path
def test_conv_layout_quirk_against_numpy(units):
  """The conv reads (N+1, rows, cols) channels-last: window over (channel, row), cols = features."""
  rng = np.random.default_rng(0)
  u = units
  x = rng.normal(size=(u, 3, 5, 4, 6)).astype(np.float32)  # [U, B, S1, S2, F]
  k = rng.normal(size=(u, 2, 2, 6, 7)).astype(np.float32)  # [U, 2, 2, F, O]
  b = rng.normal(size=(u, 7)).astype(np.float32)
  xp = np.pad(x, [(0, 0), (0, 0), (0, 1), (0, 1), (0, 0)])
  ref = np.zeros((u, 3, 5, 4, 7), np.float32) + b[:, None, None, None, :]
  for di in range(2):
    for dj in range(2):
      ref += np.einsum("ubijf,ufo->ubijo", xp[:, :, di:di + 5, dj:dj + 4], k[:, di, dj])
  for form in networks.CONV_FORMS:
    out = networks.conv2x2_same(tf.constant(x), tf.constant(k), tf.constant(b), form=form)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4, err_msg=form)


def test_init_lecun_normal_and_zero_biases():
  net = networks.make_network("catch", (10, 5, 1), 3)
  params = net.init(networks.unit_seeds(3, 4))
  for spec, p in zip(net.specs, params):
    p = p.numpy()
    if spec.fan_in == 0:
      assert np.all(p == 0)
      continue
    std = math.sqrt(1.0 / spec.fan_in) / 0.87962566
    assert np.abs(p).max() <= 2 * std + 1e-6  # truncated at +-2 sigma of the normal
    if p.size >= 1000:
      assert abs(p.std() / math.sqrt(1.0 / spec.fan_in) - 1.0) < 0.05  # unit-variance scaling
      assert abs(p.mean()) < 0.05 * std


def test_init_units_independent_and_reproducible():
  net = networks.make_network("big_dense_short", (5, 11, 15), 9)
  keys = networks.unit_seeds(7, 3)
  a = net.init(keys)
  b = net.init(keys[1:2])  # unit 1 alone
  for pa, pb in zip(a, b):
    np.testing.assert_array_equal(pa[1].numpy(), pb[0].numpy())
  assert not np.allclose(a[0][0].numpy(), a[0][1].numpy())  # different units differ


def test_forward_shapes_and_unit_isolation():
  net = networks.make_network("big_dense_long", (5, 15, 11), 9)
  params = net.init(networks.unit_seeds(0, 3))
  obs = tf.random.uniform([3, 4, 5, 15, 11])
  logits, values = net.apply(params, obs)
  assert logits.shape == (3, 4, 9) and values.shape == (3, 4)
  # Changing unit 1's parameters and observations leaves units 0 and 2 untouched.
  params2 = [tf.tensor_scatter_nd_add(p, [[1]], tf.ones_like(p[1:2])) for p in params]
  obs2 = tf.tensor_scatter_nd_add(obs, [[1]], tf.ones_like(obs[1:2]))
  logits2, values2 = net.apply(params2, obs2)
  np.testing.assert_array_equal(logits.numpy()[[0, 2]], logits2.numpy()[[0, 2]])
  np.testing.assert_array_equal(values.numpy()[[0, 2]], values2.numpy()[[0, 2]])
  assert not np.allclose(logits.numpy()[1], logits2.numpy()[1])
  np.testing.assert_allclose(net.logits(params, obs).numpy(), logits.numpy(), rtol=1e-6)


def test_unknown_network():
  with pytest.raises(ValueError, match="No agent network"):
    networks.net_kind("pendulum")
  with pytest.raises(ValueError, match="conv form"):
    networks.make_network("big_dense_long", (5, 15, 11), 9, conv_form="fft")
