"""PPO pieces (docs/fidelity.md §7.3-§7.4) against hand NumPy: tanh-Normal, GAE/vs, normaliser, networks, loss, SGD.

No Brax here: everything runs on synthetic tensors in a few seconds.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.optimizers import transforms


def softplus(x):
  return np.logaddexp(0.0, x)


# ------------------------------------------------------------------------------------------------
# tanh-Normal (docs/fidelity.md §7.3)


def test_tanh_normal_log_prob_matches_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 2 * 4)).astype(np.float32) * 2.0
  u = rng.normal(size=(3, 5, 4)).astype(np.float32) * 3.0  # includes |u| up to ~9 (saturated tanh)
  dist = ppo.TanhNormal(tf.constant(logits))
  got = dist.log_prob(tf.constant(u)).numpy()
  loc, s = logits[..., :4].astype(np.float64), logits[..., 4:].astype(np.float64)
  sigma = softplus(s) + 0.001
  x = u.astype(np.float64)
  log_n = -0.5 * ((x - loc) / sigma)**2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)
  want = np.sum(log_n - 2.0 * (math.log(2.0) - x - softplus(-2.0 * x)), axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # ... and it IS the density of tanh(u): log N(u) - log(1 - tanh(u)^2) where that is well conditioned.
  small = np.abs(x) < 2
  alt = np.sum(np.where(small, log_n - np.log1p(-np.tanh(x)**2), 0.0), axis=-1)
  want_small = np.sum(np.where(small, log_n - 2.0 * (math.log(2.0) - x - softplus(-2.0 * x)), 0.0), -1)
  np.testing.assert_allclose(alt, want_small, rtol=1e-6, atol=1e-6)


def test_tanh_normal_entropy_estimate_matches_formula():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 6, 2 * 3)).astype(np.float32)
  seed = tf.constant([7, 11], tf.int32)
  dist = ppo.TanhNormal(tf.constant(logits))
  got = dist.entropy(seed).numpy()
  u_prime = dist.sample_raw(seed).numpy().astype(np.float64)  # the same fresh sample u'
  sigma = softplus(logits[..., 3:].astype(np.float64)) + 0.001
  want = np.sum(0.5 + 0.5 * math.log(2 * math.pi) + np.log(sigma) + 2.0 *
                (math.log(2.0) - u_prime - softplus(-2.0 * u_prime)),
                axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The sample is Normal(loc, sigma): same seed, same sample; another seed, another one.
  np.testing.assert_array_equal(u_prime, dist.sample_raw(seed).numpy())
  assert not np.allclose(u_prime, dist.sample_raw(tf.constant([7, 12])).numpy())


def test_tanh_normal_sampling_statistics_and_min_std():
  logits = tf.concat([tf.fill([20000, 1], 0.3), tf.fill([20000, 1], -30.0)], axis=-1)  # sigma ~ min_std
  dist = ppo.TanhNormal(logits)
  np.testing.assert_allclose(dist.scale.numpy(), 0.001, rtol=1e-3)
  logits = tf.concat([tf.fill([20000, 1], 0.3), tf.fill([20000, 1], 0.5)], axis=-1)
  u = ppo.TanhNormal(logits).sample_raw(tf.constant([1, 2])).numpy()
  assert abs(u.mean() - 0.3) < 0.03 and abs(u.std() - (softplus(0.5) + 0.001)) < 0.03
  a = ppo.TanhNormal(logits).postprocess(tf.constant(u)).numpy()
  assert np.all(np.abs(a) <= 1.0)


# ------------------------------------------------------------------------------------------------
# GAE (docs/fidelity.md §7.4 item 4)


def test_gae_hand_computed_example_with_truncation_and_termination():
  # gamma 0.5, lambda 0.5; rewards [1, 2, 3]; values [0.5, 1, 1.5]; bootstrap v_T = 2.
  r = np.array([[1.0, 2.0, 3.0]] * 3, np.float32)
  v = np.array([[0.5, 1.0, 1.5]] * 3, np.float32)
  boot = np.array([2.0] * 3, np.float32)
  trunc = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)  # row 1: time-limit end at t=1
  term = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32)  # row 2: the task ended at t=1
  vs, adv = ppo.compute_gae(*(tf.constant(x) for x in (trunc, term, r, v, boot)), 0.5, 0.5)
  # Row 0 (no ends): deltas 1, 1.75, 2.5; A = 1.59375, 2.375, 2.5; vs = A + v;
  # advantages use vs_{t+1}: 1 + .5 * 3.375 - .5 = 2.1875, 2 + .5 * 4 - 1 = 3, 3 + .5 * 2 - 1.5 = 2.5.
  # Row 1 (truncated at t=1): delta_1 = 0 and the trace is cut: A = 1, 0, 2.5; adv_1 = 0.
  # Row 2 (terminated at t=1): delta_1 = 2 - 1 = 1 (no bootstrap); A = 1.25, 1, 2.5.
  want_vs = [[2.09375, 3.375, 4.0], [1.5, 1.0, 4.0], [1.75, 2.0, 4.0]]
  want_adv = [[2.1875, 3.0, 2.5], [1.0, 0.0, 2.5], [1.5, 1.0, 2.5]]
  np.testing.assert_allclose(vs.numpy(), want_vs, rtol=1e-6)
  np.testing.assert_allclose(adv.numpy(), want_adv, rtol=1e-6)


def _gae_reference(trunc, term, r, v, boot, lam, gamma):
  """Literal per-element loops (float64), independent of the vectorised code."""
  batch, steps = r.shape
  vs, adv = np.zeros((batch, steps)), np.zeros((batch, steps))
  for b in range(batch):
    vn = list(v[b, 1:]) + [boot[b]]
    delta = [(r[b, t] + gamma * (1 - term[b, t]) * vn[t] - v[b, t]) * (1 - trunc[b, t]) for t in range(steps)]
    acc = 0.0
    a = [0.0] * steps
    for t in reversed(range(steps)):
      acc = delta[t] + gamma * (1 - term[b, t]) * (1 - trunc[b, t]) * lam * acc
      a[t] = acc
    vs[b] = np.array(a) + v[b]
    vsn = list(vs[b, 1:]) + [boot[b]]
    adv[b] = [(r[b, t] + gamma * (1 - term[b, t]) * vsn[t] - v[b, t]) * (1 - trunc[b, t]) for t in range(steps)]
  return vs, adv


def test_gae_random_against_reference_and_stop_gradient():
  rng = np.random.default_rng(2)
  b, t = 16, 7
  r, v = rng.normal(size=(b, t)), rng.normal(size=(b, t))
  boot = rng.normal(size=b)
  done = (rng.random((b, t)) < 0.2).astype(np.float64)
  trunc = done * (rng.random((b, t)) < 0.5)
  term = done * (1 - trunc)
  want_vs, want_adv = _gae_reference(trunc, term, r, v, boot, 0.95, 0.97)
  vt = tf.Variable(v.astype(np.float32))
  with tf.GradientTape() as tape:
    vs, adv = ppo.compute_gae(*(tf.constant(x, tf.float32) for x in (trunc, term, r)), vt,
                              tf.constant(boot, tf.float32), 0.95, 0.97)
    total = tf.reduce_sum(vs) + tf.reduce_sum(adv)
  assert tape.gradient(total, vt) is None
  np.testing.assert_allclose(vs.numpy(), want_vs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(adv.numpy(), want_adv, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Observation normaliser (docs/fidelity.md §7.3)


def test_normaliser_matches_numpy_statistics():
  rng = np.random.default_rng(3)
  state = ppo.norm_init(2, 3)
  x0 = rng.normal(size=(2, 4, 3)).astype(np.float32)
  np.testing.assert_array_equal(ppo.normalize(state, tf.constant(x0)).numpy(), x0)  # identity at start
  seen = [[], []]
  for n in (5, 1, 17, 8):
    batch = (rng.normal(size=(2, n, 2, 3)) * [3.0, 0.1, 1.0] + [1.0, -2.0, 50.0]).astype(np.float32)
    state = ppo.norm_update(state, tf.constant(batch))
    for u in range(2):
      seen[u].append(batch[u].reshape(-1, 3))
  for u in range(2):
    allx = np.concatenate(seen[u]).astype(np.float64)
    assert state.count.numpy()[u] == len(allx)
    np.testing.assert_allclose(state.mean.numpy()[u], allx.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.std.numpy()[u], allx.std(0), rtol=1e-4)
    np.testing.assert_allclose(state.summed_variance.numpy()[u], ((allx - allx.mean(0))**2).sum(0), rtol=1e-4)
  obs = rng.normal(size=(2, 5, 3)).astype(np.float32)
  want = (obs - state.mean.numpy()[:, None]) / state.std.numpy()[:, None]
  np.testing.assert_allclose(ppo.normalize(state, tf.constant(obs)).numpy(), want, rtol=1e-5, atol=1e-6)


def test_normaliser_std_clipped_for_constant_features():
  state = ppo.norm_update(ppo.norm_init(1, 2), tf.constant(np.full((1, 10, 2), 4.0, np.float32)))
  np.testing.assert_allclose(state.std.numpy(), 1e-6)  # sqrt(max(0, 1e-12) / 10) -> clipped to 1e-6
  np.testing.assert_allclose(state.mean.numpy(), 4.0)


# ------------------------------------------------------------------------------------------------
# Networks


def test_networks_shapes_init_and_unit_independence():
  nets = ppo.PPONetworks(27, 8)
  assert nets.param_names[:2] == ["policy/hidden_0/kernel", "policy/hidden_0/bias"]
  assert nets.param_names[-2:] == ["value/hidden_5/kernel", "value/hidden_5/bias"]
  # policy 27-32-32-32-32-16, value 27-256x5-1
  assert nets.num_params == (27 * 32 + 32 + 3 * (32 * 32 + 32) + 32 * 16 + 16 + 27 * 256 + 256 + 4 * (256 * 256 + 256) +
                             256 + 1)
  keys = tf.constant([[0, 0], [1, 0], [0, 0]], tf.int32)
  params = nets.init(keys)
  for spec, p in zip(nets.specs, params):
    p = p.numpy()
    assert p.shape == (3,) + spec.shape
    if spec.fan_in:
      lim = math.sqrt(3.0 / spec.fan_in)
      assert np.all(np.abs(p) <= lim) and p.std() > 0.4 * lim  # U(-lim, lim): std lim / sqrt(3)
    else:
      assert np.all(p == 0)
  np.testing.assert_array_equal(params[0].numpy()[0], params[0].numpy()[2])  # same key, same agent
  assert not np.allclose(params[0].numpy()[0], params[0].numpy()[1])
  obs = tf.random.normal([3, 5, 27])
  logits, values = nets.policy(params, obs), nets.value(params, obs)
  assert logits.shape == (3, 5, 16) and values.shape == (3, 5)
  # hand forward of unit 1 with swish
  x = obs.numpy()[1].astype(np.float64)
  for i in range(5):
    x = x @ params[2 * i].numpy()[1] + params[2 * i + 1].numpy()[1]
    if i < 4:
      x = x / (1 + np.exp(-x))
  np.testing.assert_allclose(logits.numpy()[1], x, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Loss and SGD


def _batch(rng, units=2, b=8, t=5, d=4, a=2):
  done = (rng.random((units, b, t)) < 0.15).astype(np.float32)
  trunc = done * (rng.random((units, b, t)) < 0.5).astype(np.float32)
  return ppo.Batch(obs=tf.constant(rng.normal(size=(units, b, t + 1, d)), tf.float32),
                   raw_action=tf.constant(rng.normal(size=(units, b, t, a)), tf.float32),
                   log_prob=tf.constant(rng.normal(size=(units, b, t)) - 2.0, tf.float32),
                   reward=tf.constant(rng.normal(size=(units, b, t)), tf.float32),
                   done=tf.constant(done),
                   truncation=tf.constant(trunc))


def test_ppo_loss_matches_numpy():
  rng = np.random.default_rng(4)
  nets = ppo.PPONetworks(4, 2, (8, 8), (16, 16))
  params = nets.init(tf.constant([[0, 0], [1, 0]], tf.int32))
  norm = ppo.norm_update(ppo.norm_init(2, 4), tf.constant(rng.normal(size=(2, 30, 4)) * 2 + 1, tf.float32))
  batch = _batch(rng)
  hp = ppo.PPOHParams(reward_scaling=10.0, discount=0.97, gae_lambda=0.95, clipping_epsilon=0.3, entropy_cost=1e-2)
  seed = tf.constant([3, 4], tf.int32)
  loss, m = ppo.ppo_loss(nets, params, norm, batch, seed, hp)

  obs = ppo.normalize(norm, batch.obs)
  for u in range(2):
    o = obs.numpy()[u]
    pu = [p[u:u + 1] for p in params]
    values = nets.value(pu, tf.constant(o.reshape(1, -1, 4))).numpy().reshape(8, 6)
    logits = nets.policy(pu, tf.constant(o[:, :5].reshape(1, -1, 4))).numpy().reshape(8, 5, 4)
    r = batch.reward.numpy()[u] * 10.0
    tr = batch.truncation.numpy()[u]
    term = batch.done.numpy()[u] * (1 - tr)
    vs, adv = _gae_reference(tr, term, r, values[:, :5], values[:, 5], 0.95, 0.97)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    loc, sig = logits[..., :2], softplus(logits[..., 2:]) + 0.001
    x = batch.raw_action.numpy()[u]
    lp = np.sum(-0.5 * ((x - loc) / sig)**2 - np.log(sig) - 0.5 * math.log(2 * math.pi) - 2.0 *
                (math.log(2.0) - x - softplus(-2.0 * x)),
                axis=-1)
    rho = np.exp(lp - batch.log_prob.numpy()[u])
    pol = -np.mean(np.minimum(rho * adv, np.clip(rho, 0.7, 1.3) * adv))
    val = 0.25 * np.mean((vs - values[:, :5])**2)
    np.testing.assert_allclose(m["policy_loss"].numpy()[u], pol, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m["value_loss"].numpy()[u], val, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m["entropy_loss"].numpy()[u], -1e-2 * m["entropy"].numpy()[u], rtol=1e-6)
    np.testing.assert_allclose(loss.numpy()[u], pol + val + m["entropy_loss"].numpy()[u], rtol=1e-4, atol=1e-5)


def test_ppo_loss_units_are_independent():
  rng = np.random.default_rng(5)
  nets = ppo.PPONetworks(4, 2, (8,), (8,))
  params = nets.init(tf.constant([[0, 0], [1, 0]], tf.int32))
  norm = ppo.norm_init(2, 4)
  b1 = _batch(rng)
  b2 = b1._replace(reward=tf.concat([b1.reward[:1], b1.reward[1:] * 5.0 + 3.0], axis=0))
  l1, _ = ppo.ppo_loss(nets, params, norm, b1, tf.constant([0, 1]))
  l2, _ = ppo.ppo_loss(nets, params, norm, b2, tf.constant([0, 1]))
  assert l1.numpy()[0] == l2.numpy()[0] and l1.numpy()[1] != l2.numpy()[1]


@pytest.mark.parametrize("opt_name", ["adam", "rmsprop", "optim4rl"])
def test_sgd_epochs_runs_every_optimizer(opt_name):
  rng = np.random.default_rng(6)
  nets = ppo.PPONetworks(4, 2, (8,), (8,))
  params = nets.init(tf.constant([[0, 0], [1, 0]], tf.int32))
  opt = transforms.make_agent_optimizer(opt_name, 3e-4, grad_clip=1.0)
  batch = _batch(rng, b=8)
  new, opt_state, norm, m = tf.function(
      lambda p, s, n, b: ppo.sgd_epochs(nets, opt, ppo.PPOHParams(), p, s, n, b, tf.constant([1, 2]), 2, 4))(
          params, opt.init(params), ppo.norm_init(2, 4), batch)
  assert set(m) == set(ppo.SGD_METRICS) and all(v.shape == (2,) for v in m.values())
  assert all(np.all(np.isfinite(v.numpy())) for v in m.values())
  assert all(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(new[::2], params[::2]))
  assert norm.count.numpy().tolist() == [8 * 5, 8 * 5]  # the batch's T observations per unit


def test_on_policy_meta_loss_has_no_surrogate_gradient():
  """MetaPPO's meta-loss (docs/fidelity.md §7.5): behaviour log-probs = target log-probs under the same parameters,
  so rho == 1 as a function of theta: the clipped surrogate adds no gradient, value and entropy do."""
  rng = np.random.default_rng(7)
  nets = ppo.PPONetworks(4, 2, (8,), (8,))
  params = nets.init(tf.constant([[0, 0]], tf.int32))
  batch = _batch(rng, units=1)
  hp = ppo.PPOHParams(entropy_cost=0.0)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(params)
    _, m_on = ppo.ppo_loss(nets, params, ppo.norm_init(1, 4), batch, tf.constant([1, 1]), hp, on_policy=True)
    _, m_off = ppo.ppo_loss(nets, params, ppo.norm_init(1, 4), batch, tf.constant([1, 1]), hp)
  g_on = tape.gradient(m_on["policy_loss"], params[:nets.num_policy])
  g_off = tape.gradient(m_off["policy_loss"], params[:nets.num_policy])
  assert all(g is None or np.all(g.numpy() == 0) for g in g_on)
  assert any(g is not None and np.any(g.numpy() != 0) for g in g_off)
  assert abs(float(m_on["policy_loss"][0])) < 1e-5  # -mean(normalised advantage) = 0
  g_val = tape.gradient(m_on["value_loss"], params[nets.num_policy:])
  assert all(np.any(g.numpy() != 0) for g in g_val[::2])
