"""A2C pieces of docs/fidelity.md §4: λ-returns, losses, gradient averaging, unit independence, bookkeeping, rollout."""

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf import envs
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.optimizers import transforms


def test_lambda_returns_hand_example():
  # gamma 0.9, lambda 0.5, a terminal at t = 1, bootstrap v4 = 4 (hand-computed):
  # G3 = 0 + 0.9*4 = 3.6;  G2 = 2 + 0.9*(0.5*v3 + 0.5*G3) = 2 + 0.9*(1 + 1.8) = 4.52;
  # G1 = 0 + 0*(...) = 0 (terminal);  G0 = 1 + 0.9*(0.5*v1 + 0.5*G1) = 1 + 0.9*0.5 = 1.45
  rewards = tf.constant([[[1.0], [0.0], [2.0], [0.0]]])  # [U=1, T=4, B=1]
  dones = tf.constant([[[0.0], [1.0], [0.0], [0.0]]])
  values = tf.constant([[[0.5], [1.0], [-1.0], [2.0], [4.0]]])  # v0..v4
  g = a2c.lambda_returns(rewards, 0.9 * (1.0 - dones), values, 0.5)
  np.testing.assert_allclose(g.numpy()[0, :, 0], [1.45, 0.0, 4.52, 3.6], rtol=1e-6)


def _np_lambda_returns(r, d, v, lam):
  g = np.zeros_like(r)
  nxt = v[-1]
  for t in reversed(range(len(r))):
    nxt = r[t] + d[t] * ((1 - lam) * v[t + 1] + lam * nxt)
    g[t] = nxt
  return g


def _table_apply(params, obs):
  """A toy 'network': obs [U, N, A+1] -> logits = w0 * obs[:A], value = w1 * obs[A]."""
  num_actions = obs.shape[-1] - 1
  logits = obs[..., :num_actions] * params[0][:, None, None]
  values = obs[..., num_actions] * params[1][:, None]
  return logits, values


def test_losses_against_numpy_with_terminals():
  rng = np.random.default_rng(0)
  u, t, b, na = 2, 6, 3, 4
  obs = rng.normal(size=(u, t + 1, b, na + 1)).astype(np.float32)
  actions = rng.integers(0, na, size=(u, t, b)).astype(np.int32)
  rewards = rng.normal(size=(u, t, b)).astype(np.float32)
  dones = np.zeros((u, t, b), np.float32)
  dones[0, 2, 0] = dones[0, 4, 1] = dones[1, 0, 2] = dones[1, 5, 0] = 1.0  # terminals inside
  w = np.array([1.5, -0.5], np.float32)
  params = [tf.constant(w), tf.constant([0.7, 1.2], tf.float32)]
  traj = a2c.Trajectory(tf.constant(obs), tf.constant(actions), tf.constant(rewards), tf.constant(dones))
  hp = a2c.A2CHParams(discount=0.9, gae_lambda=0.8, critic_weight=0.5, entropy_weight=0.01)
  loss, m = a2c.a2c_loss(_table_apply, params, traj, hp)

  for unit in range(u):
    logits = obs[unit, :t, :, :na] * w[unit]
    values = obs[unit, :, :, na] * params[1].numpy()[unit]
    per_env = []
    for e in range(b):
      g = _np_lambda_returns(rewards[unit, :, e], 0.9 * (1 - dones[unit, :, e]), values[:, e], 0.8)
      td = g - values[:t, e]
      lg = logits[:, e] - logits[:, e].max(-1, keepdims=True)
      logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
      ent = -(np.exp(logp) * logp).sum(-1)
      actor = -np.mean(logp[np.arange(t), actions[unit, :, e]] * td)
      critic = 0.5 * np.mean(td**2)
      entropy = -0.01 * np.mean(ent)
      per_env.append((actor + critic + entropy, actor, critic, entropy, np.mean(ent)))
    ref = np.mean(per_env, axis=0)
    got = [m[k][unit].numpy() for k in ("loss", "actor_loss", "critic_loss", "entropy_loss", "entropy")]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss[unit].numpy(), ref[0], rtol=1e-5)


def _random_traj(rng, obs_shape, u, t, b, na):
  obs = (rng.random(size=(u, t + 1, b) + obs_shape) < 0.1).astype(np.float32)
  return a2c.Trajectory(tf.constant(obs), tf.constant(rng.integers(0, na, size=(u, t, b)), tf.int32),
                        tf.constant(rng.normal(size=(u, t, b)), tf.float32),
                        tf.constant((rng.random(size=(u, t, b)) < 0.2).astype(np.float32)))


def _slice_env(traj, e):
  return a2c.Trajectory(*[x[:, :, e:e + 1] for x in traj])


def test_gradient_is_mean_over_envs_and_update_matches():
  rng = np.random.default_rng(1)
  net = networks.make_network("small_dense_long", (3, 8, 6), 9)
  params = net.init(networks.unit_seeds(0, 2))
  traj = _random_traj(rng, (3, 8, 6), 2, 20, 4, 9)
  _, _, grads = a2c.loss_and_grads(net.apply, params, traj)
  per_env = [a2c.loss_and_grads(net.apply, params, _slice_env(traj, e))[2] for e in range(4)]
  for i, g in enumerate(grads):
    mean = np.mean([pe[i].numpy() for pe in per_env], axis=0)
    np.testing.assert_allclose(g.numpy(), mean, rtol=1e-4, atol=1e-6)
  # The optimizer update from the batched gradient equals the update from the explicitly averaged one.
  opt = transforms.make_agent_optimizer("rmsprop", 1e-2, grad_clip=1.0)
  upd, _ = opt.update(grads, opt.init(params))
  mean_grads = [tf.add_n([pe[i] for pe in per_env]) / 4.0 for i in range(len(params))]
  upd2, _ = opt.update(mean_grads, opt.init(params))
  for a, b in zip(upd, upd2):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)


def _change_unit(x, unit, fn):
  x = x.numpy().copy()
  x[unit] = fn(x[unit])
  return tf.constant(x)


def test_units_independent_given_data():
  rng = np.random.default_rng(2)
  net = networks.make_network("big_dense_long", (5, 15, 11), 9)
  params = net.init(networks.unit_seeds(0, 3))
  opt = transforms.make_agent_optimizer("adam", 1e-3)
  traj = _random_traj(rng, (5, 15, 11), 3, 20, 2, 9)

  def step(traj):
    _, _, grads = a2c.loss_and_grads(net.apply, params, traj)
    upd, _ = opt.update(grads, opt.init(params))
    return [p + u for p, u in zip(params, upd)]

  base = step(traj)
  traj2 = a2c.Trajectory(obs=_change_unit(traj.obs, 1, lambda o: 1.0 - o),
                         actions=_change_unit(traj.actions, 1, lambda a: (a + 1) % 9),
                         rewards=_change_unit(traj.rewards, 1, lambda r: r + 3.0),
                         dones=traj.dones)
  other = step(traj2)
  for a, b in zip(base, other):
    np.testing.assert_array_equal(a.numpy()[[0, 2]], b.numpy()[[0, 2]])
  assert not np.allclose(base[2].numpy()[1], other[2].numpy()[1])


def test_units_independent_in_full_iteration():
  """One full a2c_update (rollout with shared env batch + update): perturbing unit 1's parameters leaves
  units 0 and 2 bit-identical."""
  env = envs.make("catch", 3 * 4)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  opt = transforms.make_agent_optimizer("rmsprop", 1e-3)
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, 3)
  state = trainer.init(5)
  perturbed = state._replace(params=[_change_unit(p, 1, lambda x: x * 1.5 + 0.1) for p in state.params])
  s1, m1 = trainer.run(state, tf.constant(2))
  s2, m2 = trainer.run(perturbed, tf.constant(2))
  for a, b in zip(s1.params, s2.params):
    np.testing.assert_array_equal(a.numpy()[[0, 2]], b.numpy()[[0, 2]])
  assert not np.allclose(s1.params[0].numpy()[1], s2.params[0].numpy()[1])
  np.testing.assert_array_equal(m1["loss"].numpy()[:, [0, 2]], m2["loss"].numpy()[:, [0, 2]])


def test_episode_returns_bookkeeping():
  # one unit, two envs, two iterations of T = 3
  r1 = tf.constant([[[1.0, 0.0], [2.0, 1.0], [0.5, 1.0]]])  # [U, T, B]
  d1 = tf.constant([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
  ep, s, c = a2c.episode_returns(tf.zeros([1, 2]), r1, d1)
  np.testing.assert_allclose(s.numpy(), [3.0])  # env 0: 1 + 2
  np.testing.assert_allclose(c.numpy(), [1.0])
  np.testing.assert_allclose(ep.numpy(), [[0.5, 2.0]])  # running returns carried over
  r2 = tf.constant([[[1.0, 0.0], [0.0, 4.0], [1.0, 0.0]]])
  d2 = tf.constant([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
  ep, s, c = a2c.episode_returns(ep, r2, d2)
  # env 0: 0.5 + 1 = 1.5 ends at t0, then 0 + 1 = 1 ends at t2; env 1: 2 + 0 + 4 = 6 ends at t1
  np.testing.assert_allclose(s.numpy(), [1.5 + 1.0 + 6.0])
  np.testing.assert_allclose(c.numpy(), [3.0])
  np.testing.assert_allclose(ep.numpy(), [[0.0, 0.0]])


def test_rollout_catch_auto_reset_and_layout():
  u, b, t = 2, 3, 20
  env = envs.make("catch", u * b)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  params = net.init(networks.unit_seeds(0, u))
  state = env.reset(tf.constant([1, 2]))
  traj, state2, obs2 = a2c.rollout(net.logits, params, env, state, None, tf.constant([3, 4]), t, u)
  assert traj.obs.shape == (u, t + 1, b, 10, 5, 1)
  assert traj.actions.shape == traj.rewards.shape == traj.dones.shape == (u, t, b)
  assert traj.actions.dtype == tf.int32
  np.testing.assert_array_equal(traj.obs[:, t].numpy(), obs2.numpy())
  np.testing.assert_array_equal(obs2.numpy().reshape(u * b, 10, 5, 1), env.observe(state2).numpy())
  dones = traj.dones.numpy()
  # Catch episodes last exactly 9 steps: dones at t = 8 and 17 for every env started fresh.
  assert np.all(dones[:, [8, 17]] == 1.0) and dones.sum() == u * b * 2
  rewards = traj.rewards.numpy()
  assert np.all(np.abs(rewards[dones == 1]) == 1.0) and np.all(rewards[dones == 0] == 0.0)
  # After a terminal step the next observation is a reset one: ball in row 0.
  assert np.all(traj.obs.numpy()[:, 9, :, 0].sum(axis=(-1, -2)) == 1.0)


def test_run_chunks_are_deterministic_and_composable():
  env = envs.make("small_dense_long", 2 * 8)
  net = networks.make_network("small_dense_long", env.obs_shape, env.num_actions)
  opt = transforms.make_agent_optimizer("rmsprop", 3e-3, grad_clip=1.0)
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, 2)
  s0 = trainer.init(0)
  a, ma = trainer.run(s0, tf.constant(4))
  b, mb1 = trainer.run(s0, tf.constant(1))
  b, mb2 = trainer.run(b, tf.constant(3))
  assert int(a.iteration) == int(b.iteration) == 4
  for x, y in zip(a.params, b.params):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
  np.testing.assert_array_equal(ma["return_sum"].numpy(),
                                np.concatenate([mb1["return_sum"].numpy(), mb2["return_sum"].numpy()]))
  assert ma["loss"].shape == (4, 2)
  assert np.all(np.isfinite(ma["grad_norm"].numpy())) and np.all(ma["update_norm"].numpy() > 0)


def test_trainer_rejects_bad_unit_split():
  env = envs.make("catch", 5)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  with pytest.raises(ValueError, match="multiple"):
    a2c.make_trainer(net, env, transforms.make_agent_optimizer("adam", 1e-3), a2c.A2CHParams(), 20, 2)
