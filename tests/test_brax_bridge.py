"""The Brax bridge: registry names and errors, both bridges give the same trajectories, Brax's auto-reset
and truncation semantics, per-unit reset seeds.

All compiled tests use inverted_pendulum with 32 envs and episode_length 200 (the shapes test_train_ppo
uses too), so a pytest process compiles its JAX reset/step and the TF step once (~1 min on 2 cores).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.envs import brax_bridge
from optim4rl_tf.envs import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, N, L = "inverted_pendulum", 32, 200


@pytest.fixture(scope="module")
def env():
  return brax_bridge.make(NAME, N, episode_length=L)


def test_registry_names_and_bad_inputs():
  e = registry.make("brax:inverted_pendulum", 4, episode_length=10, bridge="graph")
  assert isinstance(e, brax_bridge.BraxEnv)
  assert (e.name, e.obs_size, e.action_size, e.episode_length, e.bridge) == (NAME, 4, 1, 10, "graph")
  assert registry.BRAX_ENV_NAMES == tuple(brax_bridge.BRAX_TASKS)
  with pytest.raises(ValueError, match="Unknown Brax environment 'brax:nope'.*ant"):
    registry.make("brax:nope", 4)
  with pytest.raises(ValueError, match="Unknown environment 'antt'.*Brax: ant"):
    registry.make("antt", 4)
  with pytest.raises(ValueError, match="apply only to Brax"):
    registry.make("catch", 4, bridge="graph")
  with pytest.raises(ValueError, match="num_envs must be a positive integer"):
    brax_bridge.make(NAME, 0)
  with pytest.raises(ValueError, match="Unknown bridge 'torch'"):
    brax_bridge.make(NAME, 4, bridge="torch")
  with pytest.raises(ValueError, match="Unknown Brax backend 'mjx2'"):
    brax_bridge.make(NAME, 4, backend="mjx2")
  with pytest.raises(ValueError, match="episode_length must be a positive integer"):
    brax_bridge.make(NAME, 4, episode_length=-5)
  with pytest.raises(ValueError, match="one seed per unit"):
    e.reset([1, 2, 3])  # 4 envs cannot split into 3 units (checked before compiling)
  with pytest.raises(ValueError, match=r"action must have shape \(4, 1\)"):
    e.step(None, np.zeros((4, 2), np.float32))


@pytest.mark.slow(6)
def test_gridworld_users_do_not_import_brax():
  # (TensorFlow 2.21 itself imports jax when it is installed; Brax and the bridge must stay unimported.)
  code = ("import sys; import optim4rl_tf.envs as e; e.make('catch', 2); "
          "print('optim4rl_tf.envs.brax_bridge' in sys.modules, 'brax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code],
                       cwd=ROOT,
                       capture_output=True,
                       text=True,
                       timeout=120,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "False False"


def _graph_replay(env, flat, actions):
  """Runs the given actions [T, N, A] through the in-graph bridge inside ONE tf.function/while_loop."""
  steps = actions.shape[0]

  @tf.function
  def roll(flat, actions):
    tas = [tf.TensorArray(tf.float32, size=steps) for _ in range(4)]

    def body(t, flat, tas):
      flat, out = env.graph_step(flat, actions[t])
      return t + 1, flat, [ta.write(t, x) for ta, x in zip(tas, out)]

    _, flat, tas = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), flat, tas))
    return flat, [ta.stack() for ta in tas]

  flat, outs = roll(tuple(flat), tf.constant(actions))
  return flat, [o.numpy() for o in outs]


def _numpy_run(env, state, actions=None, policy=None, steps=None):
  outs, acts = [], []
  steps = steps or actions.shape[0]
  obs = env.observe(state).numpy()
  for t in range(steps):
    a = actions[t] if actions is not None else policy(obs)
    state, out = env.step(state, a)
    obs = out.obs.numpy()
    outs.append([x.numpy() for x in out])
    acts.append(a)
  return state, [np.stack(c) for c in zip(*outs)], np.stack(acts)


@pytest.mark.slow(10)
def test_both_bridges_give_the_same_trajectories(env):
  rng = np.random.default_rng(0)
  actions = rng.uniform(-1, 1, size=(12, N, 1)).astype(np.float32)
  s0 = env.reset([3])
  s_np, out_np, _ = _numpy_run(env, s0, actions)
  flat, out_g = _graph_replay(env, env.to_flat(s0), actions)
  for a, b, name in zip(out_np, out_g, ("obs", "reward", "done", "truncation")):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
  assert out_np[0].shape == (12, N, 4) and out_np[1].shape == (12, N)
  assert np.all(out_np[1] == 1.0)  # pendulum: reward 1 per step
  # The whole state agrees too, and the flat form round-trips into the numpy bridge.
  back = env.from_flat(flat)
  np.testing.assert_allclose(np.asarray(back.obs), np.asarray(s_np.obs), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(env.flat_obs(flat).numpy(), np.asarray(s_np.obs), rtol=1e-5, atol=1e-5)


@pytest.mark.slow(15)
def test_auto_reset_and_truncation_follow_brax_wrappers(env):
  # Envs 0-15: a PD controller that balances the pole (episodes end only by the time limit, L = 200);
  # envs 16-31: the same controller with the wrong sign (the pole falls: the task ends them early).
  sign = np.where(np.arange(N) < N // 2, 1.0, -1.0).astype(np.float32)
  policy = lambda obs: np.clip(sign * (5.0 * obs[:, 1] + 0.1 * obs[:, 3]), -1, 1)[:, None].astype(np.float32)
  s0 = env.reset([11])
  first_obs = env.observe(s0).numpy()
  steps = 2 * L + 10
  _, (obs, rew, done, trunc), actions = _numpy_run(env, s0, policy=policy, steps=steps)
  assert np.all(trunc <= done)  # truncation implies done
  assert np.all(rew == 1.0)
  since = np.zeros(N, int)  # steps since the last reset
  for t in range(steps):
    since += 1
    at_limit = since >= L
    np.testing.assert_array_equal(done[t][at_limit], 1.0)  # Brax: done once steps >= L ...
    np.testing.assert_array_equal(trunc[t][~at_limit], 0.0)  # ... truncation only then
    ended = done[t] > 0
    np.testing.assert_array_equal(obs[t][ended], first_obs[ended])  # auto-reset to the FIRST state
    since[ended] = 0
  balanced = slice(0, N // 2)
  assert np.all(done[:, balanced].sum(0) == 2) and np.all(trunc[L - 1, balanced] == 1)
  assert np.all(trunc[2 * L - 1, balanced] == 1)  # the same episode again after reset
  falling = slice(N // 2, N)
  terminated = done[:, falling] * (1 - trunc[:, falling])
  assert np.all(terminated.sum(0) >= 5) and np.all(trunc[:, falling] == 0)
  # The in-graph bridge, fed the same actions, ends and truncates the same episodes at the same steps.
  _, (g_obs, _, g_done, g_trunc) = _graph_replay(env, env.to_flat(s0), actions)
  np.testing.assert_array_equal(g_done, done)
  np.testing.assert_array_equal(g_trunc, trunc)
  np.testing.assert_allclose(g_obs[:20], obs[:20], rtol=1e-5, atol=1e-5)


@pytest.mark.slow(5)
def test_reset_seeds_are_per_unit(env):
  a = env.observe(env.reset([5, 6])).numpy()
  b = env.observe(env.reset([5, 7])).numpy()
  c = env.observe(env.reset([5, 6], salt=1)).numpy()
  np.testing.assert_array_equal(a[:N // 2], b[:N // 2])  # unit 0 depends only on its own seed
  assert not np.allclose(a[N // 2:], b[N // 2:])
  assert not np.allclose(a, c)  # salt: fresh episodes
  np.testing.assert_array_equal(env.observe(env.reset(5)).numpy(), env.observe(env.reset([5])).numpy())
  assert np.all(np.abs(a) <= 0.01 + 1e-6)  # pendulum init: U(-0.01, 0.01)
