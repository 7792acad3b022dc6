"""Every environment of the package satisfies the protocol of ``envs.base`` and behaves as it says: the
gridworlds, Catch and the Brax bridge's in-graph face, each reset and stepped inside one tf.function."""

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.envs import base
from optim4rl_tf.envs import registry

N = 3


def _run(env, actions, seed):
  """reset + len(actions) steps in one tf.function -> (obs0, [obs], [reward], [done])."""

  @tf.function
  def run():
    state = env.reset(seed)
    obs0 = env.observe(state)
    out = []
    for t, a in enumerate(actions):
      state, obs, reward, done = env.step(state, a, tf.constant([7, t]))
      out.append((obs, reward, done))
    return obs0, out

  return run()


def _check(env, obs0, out):
  assert obs0.dtype == tf.float32 and tuple(obs0.shape) == (N,) + tuple(env.obs_shape)
  dones = []
  for obs, reward, done in out:
    assert obs.dtype == tf.float32 and tuple(obs.shape) == (N,) + tuple(env.obs_shape)
    assert reward.dtype == tf.float32 and tuple(reward.shape) == (N,)
    assert done.dtype == tf.float32 and tuple(done.shape) == (N,)
    assert set(np.unique(done.numpy())) <= {0.0, 1.0}
    dones.append(done.numpy())
  # No episode outlasts the horizon: within horizon steps every env has ended one.
  assert np.all(np.max(dones[:env.horizon], axis=0) == 1.0)


@pytest.mark.parametrize("name", ["small_dense_short", "catch"])
def test_native_envs_satisfy_the_discrete_protocol(name):
  env = registry.make(name, N)
  assert isinstance(env, base.Env) and isinstance(env, base.DiscreteEnv)
  assert not isinstance(env, base.ContinuousEnv)
  assert env.name == name and env.num_envs == N
  rng = np.random.default_rng(0)
  actions = [tf.constant(rng.integers(0, env.num_actions, N), tf.int32) for _ in range(env.horizon)]
  _check(env, *_run(env, actions, tf.constant([1, 2])))


def test_a_class_without_step_is_not_an_env():

  class NoStep:
    name, num_envs, obs_shape, horizon, reward_scale = "x", 1, (1,), 1, 1.0

    def reset(self, seed):
      return seed

    def observe(self, state):
      return state

  assert not isinstance(NoStep(), base.Env)


@pytest.mark.slow(15)
def test_brax_graph_env_satisfies_the_continuous_protocol():
  brax_env = registry.make("inverted_pendulum", N, episode_length=4, bridge="graph")
  env = brax_env.graph_env()
  assert isinstance(env, base.Env) and isinstance(env, base.ContinuousEnv)
  assert not isinstance(env, base.DiscreteEnv)
  assert (env.name, env.num_envs, env.obs_shape, env.horizon, env.action_size) == ("inverted_pendulum", N, (4,), 4, 1)
  actions = [tf.fill([N, 1], 0.1 * t) for t in range(5)]
  _check(env, *_run(env, actions, tf.constant([0, 1, 2])))

  @tf.function
  def truncations():
    flat = env.reset(tf.constant([0, 1, 2]))
    got, want = [], []
    for a in actions:
      flat, out = brax_env.graph_step(flat, a)
      got.append(env.truncation(flat))
      want.append(out.truncation)
    return got, want

  got, want = truncations()
  np.testing.assert_array_equal(np.stack(got), np.stack(want))
  assert np.stack(got)[3].min() == 1.0  # the time limit (4 steps) ends every episode with truncation 1
