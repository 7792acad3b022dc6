"""STAR (MLPNomLOpt, docs/fidelity.md §6.5): the core against an independent NumPy computation written from the
official learned_optimization code, its second-order meta-gradient against finite differences, the unit
axis, the .npz format, the agent-optimizer interface and the Keras face."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf
from optim4rl_tf.agents import a2c
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import star
from optim4rl_tf.optimizers import transforms

# ---------------------------------------------------------------------------------------------------
# An independent NumPy implementation (float64), following the structure of learned_optimization's
# adafac_nominal.MLPNomLOpt / common.py: one accumulator per decay (the vmap), stacked on a trailing axis.

MOM0, RMS0, FAC0 = np.array([0.9, 0.99, 0.999]), np.array([0.999]), np.array([0.9, 0.99, 0.999])
TIMESCALES = np.array([1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000], np.float64)


def np_param_to_decay(init, offset):
  return 1.0 - np.exp((np.log(1.0 - init) / 10.0 + offset) * 10.0)


def np_factored_dims(shape):
  if len(shape) < 2:
    return None
  s = np.argsort(shape)
  return int(s[-2]), int(s[-1])


def np_safe_rsqrt(x):
  return 1.0 / np.sqrt(np.maximum(x, 1e-9))


def np_init(p):
  fd = np_factored_dims(p.shape)
  if fd is None:
    fac = dict(v=[np.zeros(p.shape) for _ in FAC0])
  else:
    d1, d0 = fd
    fac = dict(v_row=[np.zeros(np.delete(p.shape, d0)) for _ in FAC0],
               v_col=[np.zeros(np.delete(p.shape, d1)) for _ in FAC0])
  return dict(m=np.zeros(p.shape + (3,)), rms=np.zeros(p.shape + (1,)), fac=fac)


def np_factored_update(decay, fac_i, g):
  """common.factored_rolling(decay).update for one tensor: returns (new accumulators, y)."""
  c = np.clip(decay, 0.0, 1.0)
  grad_sqr = g * g + 1e-30
  fd = np_factored_dims(g.shape)
  if fd is not None:
    d1, d0 = fd
    v_row = c * fac_i["v_row"] + (1 - c) * grad_sqr.mean(axis=d0)
    v_col = c * fac_i["v_col"] + (1 - c) * grad_sqr.mean(axis=d1)
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_col_mean = v_row.mean(axis=reduced_d1, keepdims=True)
    row_factor = np_safe_rsqrt(v_row / (row_col_mean + 1e-9))
    col_factor = np_safe_rsqrt(v_col)
    y = g * np.expand_dims(row_factor, d0) * np.expand_dims(col_factor, d1)
    return dict(v_row=v_row, v_col=v_col), y
  v = c * fac_i["v"] + (1 - c) * grad_sqr
  return dict(v=v), g * np_safe_rsqrt(v + 1e-9)


def np_star_step(phi, st, g, p, lr, t, nominal_stepsize=1e-3):
  """One MLPNomLOpt update (opt_fn(...).update then _mod) for one tensor; returns (new_p, new_state)."""
  phi = {k: np.float64(v) for k, v in phi.items()}
  mom = np_param_to_decay(MOM0, phi["decays/momentum"])
  rmsd = np.clip(np_param_to_decay(RMS0, phi["decays/rms"]), 0, 1)
  facd = np_param_to_decay(FAC0, phi["decays/adafactor"])
  m = np.stack([mom[i] * st["m"][..., i] + (1 - mom[i]) * g for i in range(3)], -1)
  rms = rmsd * st["rms"] + (1 - rmsd) * (g * g)[..., None]
  new_fac, fac_g = {}, []
  for i in range(3):
    acc, y = np_factored_update(facd[i], {k: v[i] for k, v in st["fac"].items()}, g)
    for k, v in acc.items():
      new_fac.setdefault(k, []).append(v)
    fac_g.append(y)
  fac_g = np.stack(fac_g, -1)
  # _mod
  inps = [g[..., None], p[..., None], m, rms]
  rsqrt = 1.0 / np.sqrt(rms + 1e-6)
  adam_feats = m * rsqrt
  inps += [adam_feats, rsqrt, fac_g]
  fd = np_factored_dims(g.shape)
  if fd is not None:
    d1, d0 = fd
    fac_vec_row = np.stack(new_fac["v_row"], -1)
    fac_vec_col = np.stack(new_fac["v_col"], -1)
    to_tile = [1] * (1 + g.ndim)
    to_tile[d0] = g.shape[d0]
    row_feat = np.tile(np.expand_dims(fac_vec_row, d0), to_tile)
    to_tile = [1] * (1 + g.ndim)
    to_tile[d1] = g.shape[d1]
    col_feat = np.tile(np.expand_dims(fac_vec_col, d1), to_tile)
    inps += [row_feat, col_feat, 1 / np.sqrt(row_feat + 1e-8), 1 / np.sqrt(col_feat + 1e-8)]
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_col_mean = fac_vec_row.mean(axis=reduced_d1, keepdims=True)
    row_factor = np_safe_rsqrt(fac_vec_row / (row_col_mean + 1e-9))
    col_factor = np_safe_rsqrt(fac_vec_col)
    inps.append(m * np.expand_dims(row_factor, d0) * np.expand_dims(col_factor, d1))
  else:
    v = np.stack(new_fac["v"], -1)
    inps += [v, v, 1 / np.sqrt(v + 1e-8), 1 / np.sqrt(v + 1e-8), m * (v + 1e-6)**-0.5]
  x = np.concatenate(inps, -1)
  assert x.shape[-1] == 28
  axis = tuple(range(p.ndim))
  x = x * 1 / np.sqrt(1e-5 + np.mean(x * x, axis=axis, keepdims=True))
  time = np.tanh(t / TIMESCALES - 1.0)
  x = np.concatenate([x, np.broadcast_to(time, p.shape + (11,))], -1)
  net = x
  for i in range(3):
    net = net @ phi[f"mlp/w{i}"] + phi[f"mlp/b{i}"]
    if i < 2:
      net = np.maximum(net, 0)
  step = net[..., 0] * np.exp(net[..., 1] * 0.001) * lr
  nom = nominal_stepsize * np.exp(1.0 * 0.001) * adam_feats.mean(-1)
  new_p = 1.0 * p - step - nom
  return new_p, dict(m=m, rms=rms, fac=new_fac)


def random_phi(seed, scale_decays=0.05):
  """An initial phi with non-zero biases and decay offsets, so every term is exercised."""
  rng = np.random.RandomState(seed)
  phi = star.StarCore().init_meta_params(seed)
  for k in phi:
    if k.startswith("mlp/b"):
      phi[k] = (0.3 * rng.randn(*phi[k].shape)).astype(np.float32)
    elif k.startswith("decays/"):
      phi[k] = (scale_decays * rng.randn(*phi[k].shape)).astype(np.float32)
  return phi


SHAPES = [(7,), (5, 3), (3, 6), (4, 4), (2, 2, 3, 5), (1,)]

# ---------------------------------------------------------------------------------------------------
# Numerics.


def test_sizes_keys_and_init():
  core = star.StarCore()
  assert core.num_meta_params() == 207
  shapes = core.meta_param_shapes()
  assert shapes["mlp/w0"] == (39, 4) and shapes["mlp/w2"] == (4, 4) and shapes["decays/rms"] == (1,)
  phi = core.init_meta_params(3)
  for i, fan_in in enumerate((39, 4, 4)):
    w = phi[f"mlp/w{i}"]
    assert np.all(np.abs(w) <= 2.0 / np.sqrt(fan_in) + 1e-6)  # truncated at ±2σ, σ = 1/sqrt(fan_in)
    assert np.all(phi[f"mlp/b{i}"] == 0)
  assert all(np.all(phi[k] == 0) for k in phi if k.startswith("decays/"))
  assert np.array_equal(core.init_meta_params(3)["mlp/w0"], phi["mlp/w0"])
  assert not np.array_equal(core.init_meta_params(4)["mlp/w0"], phi["mlp/w0"])
  mom, rms, fac = core.decays(phi, tf.float64)
  np.testing.assert_allclose(mom.numpy(), [0.9, 0.99, 0.999], rtol=1e-12)
  np.testing.assert_allclose(rms.numpy(), [0.999], rtol=1e-12)
  np.testing.assert_allclose(fac.numpy(), [0.9, 0.99, 0.999], rtol=1e-12)


def test_factored_dims_argsort_rule():
  assert star.factored_dims((7,)) is None
  assert star.factored_dims((5, 3)) == (1, 0)  # d1 second largest, d0 largest
  assert star.factored_dims((3, 6)) == (0, 1)
  assert star.factored_dims((4, 4)) == (0, 1)  # square: d1 = 0, d0 = 1
  assert star.factored_dims((2, 2, 3, 5)) == (2, 3)
  for shape in [(5, 3), (4, 4), (2, 2, 3, 5)]:
    assert star.factored_dims(shape) == np_factored_dims(shape)


@pytest.mark.parametrize("dtype,rtol", [(tf.float64, 1e-9), (tf.float32, 2e-4)])
def test_update_matches_numpy(dtype, rtol):
  core = star.StarCore()
  phi = random_phi(0)
  rng = np.random.RandomState(1)
  lr = 0.01
  for shape in SHAPES:
    p_np = rng.randn(*shape)
    p_tf = tf.constant(p_np, dtype)
    st_np, st_tf = np_init(p_np), core.init_state(p_tf)
    for step in range(5):
      g = rng.randn(*shape) * (10.0**rng.uniform(-3, 0))
      new_np, st_np = np_star_step(phi, st_np, g, p_np, lr, t=step)
      update_tf, st_tf = core.update(phi, st_tf, tf.constant(g, dtype), lr, param=p_tf)
      assert int(st_tf.t.numpy()) == step + 1
      # Compare the change (tiny next to p) relative to its own size.
      delta_np, delta_tf = new_np - p_np, update_tf.numpy()
      np.testing.assert_allclose(delta_tf,
                                 delta_np,
                                 rtol=rtol,
                                 atol=rtol * np.abs(delta_np).max(),
                                 err_msg=f"shape {shape} step {step}")
      np.testing.assert_allclose(st_tf.m.numpy(), st_np["m"], rtol=rtol, atol=1e-12)
      np.testing.assert_allclose(st_tf.rms.numpy(), st_np["rms"], rtol=rtol, atol=1e-12)
      if len(st_tf.fac) == 2:
        np.testing.assert_allclose(st_tf.fac[0].numpy(), np.stack(st_np["fac"]["v_row"], -1), rtol=rtol)
        np.testing.assert_allclose(st_tf.fac[1].numpy(), np.stack(st_np["fac"]["v_col"], -1), rtol=rtol)
      else:
        np.testing.assert_allclose(st_tf.fac[0].numpy(), np.stack(st_np["fac"]["v"], -1), rtol=rtol)
      p_np, p_tf = new_np, p_tf + update_tf


def test_late_time_features_and_zero_gradient():
  """Time features at large t, and the nominal term vanishing for a zero gradient from zero state."""
  core = star.StarCore()
  phi = random_phi(5)
  p = np.random.RandomState(0).randn(4, 6)
  g = np.random.RandomState(1).randn(4, 6)
  state = core.init_state(tf.constant(p))
  state = state._replace(t=tf.constant(2500, tf.int32))
  update_tf, _ = core.update(phi, state, tf.constant(g), 3e-3, param=tf.constant(p))
  new_np, _ = np_star_step(phi, np_init(p), g, p, 3e-3, t=2500)
  np.testing.assert_allclose(update_tf.numpy(), new_np - p, rtol=1e-9)


def test_param_plus_update_is_the_official_new_parameter():
  """``update`` returns the change: param + update is MLPNomLOpt's new parameter (float32, within 1e-6),
  and weight decay enters as -(1 - reg) * param with reg = 1 - weight_decay."""
  core = star.StarCore()
  phi = random_phi(9)
  rng = np.random.RandomState(10)
  p, g = rng.randn(5, 3).astype(np.float32), rng.randn(5, 3).astype(np.float32)
  state = core.init_state(tf.constant(p))
  update, _ = core.update(phi, state, tf.constant(g), 0.02, param=tf.constant(p))
  new_np, _ = np_star_step(phi, np_init(np.float64(p)), np.float64(g), np.float64(p), 0.02, t=0)
  np.testing.assert_allclose(p + update.numpy(), new_np, rtol=0, atol=1e-6)
  assert np.abs(update.numpy()).max() > 1e-3  # a real step, not a no-op
  decayed = star.StarCore(weight_decay=0.1)
  update_wd, _ = decayed.update(phi, state, tf.constant(g), 0.02, param=tf.constant(p))
  np.testing.assert_allclose(update_wd.numpy() - update.numpy(), -0.1 * p, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="STAR needs the current parameter"):
    core.update(phi, state, tf.constant(g), 0.02)


# ---------------------------------------------------------------------------------------------------
# Unit axis: a [U, ...] update equals U separate updates.


@pytest.mark.parametrize("shape", [(5,), (4, 6), (4, 4), (2, 2, 3, 5), ()])
def test_unit_axis_equals_separate_updates(shape):
  core = star.StarCore()
  phi = random_phi(3)
  units = 3
  rng = np.random.RandomState(4)
  # Per-unit states at different ages (pipeline training resets units separately).
  ps = [tf.constant(rng.randn(*shape) * (u + 1)) for u in range(units)]
  states = [core.init_state(p) for p in ps]
  for u in range(units):
    for _ in range(u):
      states[u] = core.update(phi, states[u], tf.constant(rng.randn(*shape)), 1e-2, param=ps[u])[1]
  stacked = tf.nest.map_structure(lambda *xs: tf.stack(xs), *states)
  assert stacked.t.numpy().tolist() == [0, 1, 2]
  fresh = core.init_state(tf.stack(ps), unit_axis=True)
  assert tf.nest.map_structure(lambda a: a.shape, fresh) == tf.nest.map_structure(lambda a: a.shape, stacked)
  gs = [tf.constant(rng.randn(*shape) * 10.0**(-u)) for u in range(units)]  # very different scales
  new_u, st_u = core.update(phi, stacked, tf.stack(gs), 1e-2, param=tf.stack(ps), unit_axis=True)
  for u in range(units):
    new_s, st_s = core.update(phi, states[u], gs[u], 1e-2, param=ps[u])
    rtol = 1e-9 if new_s.dtype == tf.float64 else 1e-6  # shape (): rng.randn() is a Python float -> float32
    np.testing.assert_allclose(new_u[u].numpy(), new_s.numpy(), rtol=rtol, atol=1e-15)
    for a, b in zip(tf.nest.flatten(st_u), tf.nest.flatten(st_s)):
      np.testing.assert_allclose(a[u].numpy(), b.numpy(), rtol=1e-9)
  # Without the unit axis the units would be normalised together: a different update.
  if len(shape) >= 1:
    joint, _ = core.update(phi, core.init_state(tf.stack(ps)), tf.stack(gs), 1e-2, param=tf.stack(ps))
    sep, _ = core.update(phi,
                         core.init_state(tf.stack(ps), unit_axis=True),
                         tf.stack(gs),
                         1e-2,
                         param=tf.stack(ps),
                         unit_axis=True)
    assert not np.allclose(joint.numpy(), sep.numpy(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------
# Meta-gradient, including the second-order path through g = dL/dtheta.


def _quartic_loss(params):
  """A smooth non-quadratic loss with a non-constant Hessian."""
  total = 0.0
  for i, p in enumerate(params):
    a = tf.cast(tf.reshape(tf.range(tf.size(p)), tf.shape(p)), p.dtype) * 0.1 + 0.5
    total += 0.5 * tf.reduce_sum(a * tf.square(p - 0.2 * i)) + 0.25 * tf.reduce_sum(tf.square(tf.square(p)))
  return total


def _meta_loss_fn(core, keys, params0, lr, num_steps, second_order=True):

  def meta_loss(phi_list):
    phi = dict(zip(keys, phi_list))
    params, states = list(params0), core.init_states(params0)
    for _ in range(num_steps):
      if second_order:
        params, states, _ = star.differentiable_step(core, phi, states, params, _quartic_loss, lr, unit_axis=False)
      else:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = _quartic_loss(params)
        grads = [tf.stop_gradient(g) for g in tape.gradient(loss, params)]
        updates, states = core.update_list(phi, states, grads, lr, params=params)
        params = [p + u for p, u in zip(params, updates)]
    return _quartic_loss(params)

  return meta_loss


def test_meta_gradient_matches_finite_differences_with_second_order_terms():
  core = star.StarCore()
  phi = random_phi(7, scale_decays=0.2)
  keys = sorted(phi)
  phi_list = [tf.constant(phi[k], tf.float64) for k in keys]
  rng = np.random.RandomState(8)
  params0 = [
      tf.constant(rng.randn(6), tf.float64),
      tf.constant(rng.randn(4, 3), tf.float64),
      tf.constant(rng.randn(3, 3), tf.float64)
  ]
  lr, steps = 0.05, 3
  meta_loss = _meta_loss_fn(core, keys, params0, lr, steps)  # eager: faster than tracing here

  with tf.GradientTape() as tape:
    tape.watch(phi_list)
    value = meta_loss(phi_list)
  grads = tape.gradient(value, phi_list)
  assert all(g is not None for g in grads)

  eps = 1e-6

  def directional_fd(direction):
    plus = meta_loss([p + eps * d for p, d in zip(phi_list, direction)])
    minus = meta_loss([p - eps * d for p, d in zip(phi_list, direction)])
    return float((plus - minus) / (2 * eps))

  # Random directions through all 207 meta-parameters.
  for trial in range(3):
    direction = [tf.constant(np.random.RandomState(100 + trial).randn(*p.shape), tf.float64) for p in phi_list]
    auto = float(sum(tf.reduce_sum(g * d) for g, d in zip(grads, direction)))
    fd = directional_fd(direction)
    assert abs(auto - fd) <= 1e-5 * max(abs(fd), 1e-8), (auto, fd)
  # Every decay offset coordinate separately.
  for ki, key in enumerate(keys):
    if not key.startswith("decays/"):
      continue
    for j in range(phi_list[ki].shape[0]):
      direction = [tf.zeros_like(p) for p in phi_list]
      direction[ki] = tf.one_hot(j, phi_list[ki].shape[0], dtype=tf.float64)
      fd = directional_fd(direction)
      auto = float(grads[ki][j])
      assert abs(auto - fd) <= 1e-5 * max(abs(fd), 1e-9) + 1e-12, (key, j, auto, fd)

  # The second-order path matters: stopping the gradient at g gives a clearly different meta-gradient.
  first_order = _meta_loss_fn(core, keys, params0, lr, steps, second_order=False)
  with tf.GradientTape() as tape:
    tape.watch(phi_list)
    value_fo = first_order(phi_list)
  grads_fo = tape.gradient(value_fo, phi_list)
  np.testing.assert_allclose(float(value_fo), float(value), rtol=1e-12)  # same forward pass
  diff = np.sqrt(sum(float(tf.reduce_sum(tf.square(a - b))) for a, b in zip(grads, grads_fo)))
  norm = np.sqrt(sum(float(tf.reduce_sum(tf.square(a))) for a in grads))
  assert diff > 1e-3 * norm, (diff, norm)


# ---------------------------------------------------------------------------------------------------
# The .npz format.


def test_npz_round_trip_and_options(tmp_path):
  core = star.StarCore(nominal_stepsize=2e-3)
  phi = random_phi(1)
  path = str(tmp_path / "star.npz")
  meta_params_lib.save(path, core, phi)
  meta, arrays = meta_params_lib.load(path)
  assert meta["optimizer"] == "star" and meta["mlp_dims"] == [4, 4] and meta["nominal_stepsize"] == 2e-3
  assert set(arrays) == set(core.meta_param_shapes())
  core2, phi2 = meta_params_lib.resolve("star", path)
  assert isinstance(core2, star.StarCore) and core2.nominal_stepsize == 2e-3
  assert all(np.array_equal(phi2[k], phi[k]) for k in phi)
  core3, phi3 = meta_params_lib.resolve("star", dict(phi))
  assert core3.mlp_dims == (4, 4) and core3.nominal_stepsize == 1e-3
  core4, phi4 = meta_params_lib.resolve("star", None, seed=3)
  assert core4.num_meta_params() == 207 and np.array_equal(phi4["mlp/w0"], core4.init_meta_params(3)["mlp/w0"])


def test_npz_mismatch_errors(tmp_path):
  other = str(tmp_path / "optim4rl.npz")
  o_core = cores.make_core("optim4rl")
  meta_params_lib.save(other, o_core, o_core.init_meta_params(0))
  with pytest.raises(ValueError, match="made for optimizer 'optim4rl', not 'star'"):
    meta_params_lib.resolve("star", other)
  star_path = str(tmp_path / "star.npz")
  meta_params_lib.save(star_path, star.StarCore(), random_phi(0))
  with pytest.raises(ValueError, match="made for optimizer 'star'"):
    meta_params_lib.resolve("optim4rl", star_path)
  with pytest.raises(ValueError, match=r"mlp_dims=\[4, 4\], but mlp_dims=\[8, 8\]"):
    meta_params_lib.resolve("star", star_path, mlp_dims=(8, 8))
  phi = random_phi(0)
  del phi["decays/rms"]
  with pytest.raises(ValueError, match=r"missing keys \['decays/rms'\]"):
    meta_params_lib.resolve("star", phi)
  phi = random_phi(0)
  phi["mlp/w0"] = phi["mlp/w0"][:38]
  with pytest.raises(ValueError, match="'mlp/w0' has shape"):
    meta_params_lib.resolve("star", phi)
  phi = random_phi(0)
  phi["decays/momentum"][0] = np.nan
  with pytest.raises(ValueError, match="NaN or Inf"):
    meta_params_lib.save(str(tmp_path / "bad.npz"), star.StarCore(), phi)


# ---------------------------------------------------------------------------------------------------
# Agent-optimizer interface and A2C.


def test_agent_optimizer_star_clips_and_needs_params():
  phi = random_phi(2)
  opt = transforms.make_agent_optimizer("star", 3e-3, grad_clip=1.0, meta_params=phi)
  params = [tf.random.stateless_normal([2, 5, 3], seed=(0, 1)), tf.random.stateless_normal([2, 3], seed=(0, 2))]
  grads = [5.0 * tf.random.stateless_normal(p.shape, seed=(1, i)) for i, p in enumerate(params)]
  state = opt.init(params)
  with pytest.raises(ValueError, match="needs the current parameters"):
    opt.update(grads, state)
  updates, _ = opt.update(grads, state, params=params)
  core = star.StarCore()
  for p, g, u in zip(params, grads, updates):
    expected, _ = core.update(phi,
                              core.init_state(p, unit_axis=True),
                              tf.clip_by_value(g, -1.0, 1.0),
                              3e-3,
                              param=p,
                              unit_axis=True)
    np.testing.assert_array_equal(u.numpy(), expected.numpy())


def test_a2c_trainer_runs_with_star():
  from optim4rl_tf import envs
  from optim4rl_tf.agents import networks
  env = envs.make("catch", 2 * 4)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  opt = transforms.make_agent_optimizer("star", 1e-3, meta_params=random_phi(0))
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, 2)
  state = trainer.init(0)
  state2, metrics = trainer.run(state, tf.constant(3, tf.int32))
  assert int(state2.opt_state[0].t.numpy()[0]) == 3
  assert np.all(np.isfinite(metrics["update_norm"].numpy())) and np.all(metrics["update_norm"].numpy() > 0)


# ---------------------------------------------------------------------------------------------------
# Keras face.


def regression_data(n=256):
  rng = np.random.RandomState(0)
  x = rng.randn(n, 4).astype(np.float32)
  y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32) + 0.3).astype(np.float32)
  return x, y


def small_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])


def test_keras_step_equals_core_and_fit_reduces_loss():
  phi = random_phi(4)
  opt = optim4rl_tf.STAR(learning_rate=0.05, meta_params=phi)
  var = keras.Variable(np.arange(6, dtype=np.float32).reshape(2, 3) / 5.0, name="w")
  g = np.array([[0.1, -0.2, 0.0], [3.0, -1e-5, 1e-3]], np.float32)
  p0 = var.numpy().copy()
  opt.apply_gradients([(tf.constant(g), var)])
  opt.apply_gradients([(tf.constant(-g), var)])
  core = star.StarCore()
  s = core.init_state(tf.constant(p0))
  u1, s = core.update(phi, s, g, 0.05, param=tf.constant(p0))
  p1 = p0 + u1
  u2, s = core.update(phi, s, -g, 0.05, param=p1)
  p2 = p1 + u2
  np.testing.assert_allclose(var.numpy() - p0, p2.numpy() - p0, rtol=1e-5, atol=1e-8)
  m_var = [v for v in opt.variables if v.name.endswith("_m")][0]
  np.testing.assert_allclose(m_var.numpy(), s.m.numpy(), rtol=1e-6, atol=1e-9)

  x, y = regression_data()
  model = small_model()
  model.compile(optimizer=optim4rl_tf.STAR(learning_rate=1e-2, seed=0), loss="mse")
  history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history["loss"]
  assert all(b < a for a, b in zip(history, history[1:])), history  # an untrained STAR still descends


def test_keras_get_config_and_save_load(tmp_path):
  opt = optim4rl_tf.STAR(learning_rate=3e-3, meta_params=random_phi(6), clipvalue=1.0)
  config = opt.get_config()
  assert config["mlp_dims"] == [4, 4] and config["star_options"]["nominal_stepsize"] == 1e-3
  clone = optim4rl_tf.STAR.from_config(config)
  assert clone.get_config() == config
  x, y = regression_data(128)
  model = small_model()
  model.compile(optimizer=optim4rl_tf.STAR(learning_rate=1e-2, meta_params=random_phi(6)), loss="mse")
  model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, optim4rl_tf.STAR)
  for k, v in model.optimizer.meta_params.items():
    np.testing.assert_array_equal(loaded.optimizer.meta_params[k], v)
  assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 4
  model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
  loaded.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
  for a, b in zip(model.get_weights(), loaded.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  npz = str(tmp_path / "phi.npz")
  loaded.optimizer.save_meta_params(npz)
  assert optim4rl_tf.STAR(meta_params=npz).meta_params["mlp/w1"].tolist() == \
      model.optimizer.meta_params["mlp/w1"].tolist()


def test_keras_non_finite_gradient_is_skipped():
  opt = optim4rl_tf.STAR(learning_rate=0.1)
  var = keras.Variable(np.ones((3,), np.float32), name="v")
  opt.apply_gradients([(tf.constant([0.5, 0.5, 0.5]), var)])
  after = var.numpy().copy()
  state = [v.numpy().copy() for v in opt.variables[2:-1]]
  with pytest.warns(RuntimeWarning, match="non-finite gradient"):
    opt.apply_gradients([(tf.constant([np.nan, 0.5, 0.5]), var)])
  np.testing.assert_array_equal(var.numpy(), after)
  assert all(np.array_equal(a, b.numpy()) for a, b in zip(state, opt.variables[2:-1]))
  assert int(opt.nonfinite_steps.numpy()) == 1
