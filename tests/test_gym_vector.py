"""Tests of the gymnasium VectorEnv face (gymnasium 1.x conventions, NEXT_STEP autoreset)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import env_checker, passive_env_checker
from gymnasium.vector import AutoresetMode, VectorEnv

from optim4rl_tf import envs


def check_vector_env(env, num_steps=60):
  """Our equivalent of gymnasium's env checker for a vector env (its own checks target single envs)."""
  b = env.num_envs
  assert isinstance(env, VectorEnv)
  assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
  assert env.unwrapped is env
  for sp in (env.single_observation_space, env.observation_space):
    assert isinstance(sp, gym.spaces.Box) and sp.dtype == np.float32
    assert (sp.low == 0).all() and (sp.high == 1).all()
  assert env.observation_space.shape == (b,) + env.single_observation_space.shape
  assert isinstance(env.single_action_space, gym.spaces.Discrete)
  assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
  np.testing.assert_array_equal(env.action_space.nvec, [env.single_action_space.n] * b)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # gymnasium's passive checks report through warnings
    passive_env_checker.check_space(env.observation_space, "observation",
                                    passive_env_checker._check_box_observation_space)
    passive_env_checker.check_space(env.action_space, "action", lambda s: None)
    passive_env_checker.env_reset_passive_checker(env, seed=5)
  # gymnasium's seed / options checks (written for single envs, valid for this vector env).
  env_checker.check_reset_seed_determinism(env)
  env_checker.check_reset_options(env)

  def run(seed):
    obs, info = env.reset(seed=seed)
    assert obs in env.observation_space and isinstance(info, dict)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(num_steps):
      step = env.step(env.action_space.sample())
      obs, rew, term, trunc, info = step
      assert obs in env.observation_space and obs.dtype == np.float32
      assert rew.shape == (b,) and rew.dtype == np.float64
      assert term.shape == trunc.shape == (b,) and term.dtype == trunc.dtype == np.bool_
      assert isinstance(info, dict)
      out += [obs, rew, term, trunc]
    return out

  a, a2, c = run(11), run(11), run(12)
  assert all(np.array_equal(x, y) for x, y in zip(a, a2)), "same seed must reproduce the trajectory"
  assert not all(np.array_equal(x, y) for x, y in zip(a, c)), "different seeds must differ"
  # Returned arrays are fresh objects.
  o1, _ = env.reset(seed=1)
  o2, *_ = env.step(env.action_space.sample())
  assert not np.shares_memory(o1, o2)


@pytest.mark.parametrize("name", ["catch", "small_dense_short", "big_dense_long"])
def test_gymnasium_checks(name):
  env = envs.gym_vector_env(name, 4, seed=0)
  check_vector_env(env)
  assert env.single_action_space == gym.spaces.Discrete(3 if name == "catch" else 9)
  assert env.single_observation_space.shape == envs.make(name, 1).obs_shape
  env.close()


def test_gymnasium_data_not_reused_single_env():
  env = envs.gym_vector_env("small_dense_short", 1, seed=0)
  env_checker.check_returned_data_not_reused(env)


def test_bad_actions_raise_value_error():
  env = envs.gym_vector_env("small_dense_short", 3, seed=0)
  with pytest.raises(gym.error.ResetNeeded):
    env.step(np.zeros(3, np.int64))
  env.reset(seed=0)
  bad = {
      "out of range": np.array([0, 9, 1]),
      "negative": np.array([0, -1, 1]),
      "float": np.array([0.0, 1.0, 2.0]),
      "float32 whole numbers": np.zeros(3, np.float32),
      "bool": np.array([True, False, True]),
      "wrong length": np.array([0, 1]),
      "2-d": np.zeros((3, 1), np.int64),
      "scalar": np.int64(1),
      "strings": np.array(["0", "1", "2"]),
  }
  for what, a in bad.items():
    with pytest.raises(ValueError, match="actions must"):
      env.step(a)
  # Valid: any integer dtype, lists.
  env.step(np.array([0, 8, 4], np.uint8))
  env.step([1, 2, 3])
  catch = envs.gym_vector_env("catch", 2, seed=0)
  catch.reset(seed=0)
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    catch.step(np.array([3, 0]))


def test_catch_next_step_autoreset():
  env = envs.gym_vector_env("catch", 5, seed=0)
  obs, _ = env.reset(seed=3)
  np.testing.assert_array_equal(obs[:, 9, 2, 0], 1.0)
  for k in range(9):
    obs, rew, term, trunc, _ = env.step(np.ones(5, np.int64))
    assert not trunc.any()
    if k < 8:
      assert not term.any() and not rew.any()
  assert term.all()
  assert set(rew.tolist()) <= {-1.0, 1.0}
  # The terminating step returns the final observation: the ball on the paddle's row.
  np.testing.assert_array_equal(obs[:, 9].sum(axis=(1, 2)), np.where(rew > 0, 1.0, 2.0))
  # The next step ignores the actions and returns the reset observation with reward 0.
  obs, rew, term, trunc, _ = env.step(np.zeros(5, np.int64))
  assert not rew.any() and not term.any() and not trunc.any()
  np.testing.assert_array_equal(obs[:, 9, 2, 0], 1.0)
  np.testing.assert_array_equal(obs[:, 0].sum(axis=(1, 2)), 1.0)
  # Then a new 9-step episode (8 more steps here, as the reset step counts as none).
  for k in range(9):
    obs, rew, term, trunc, _ = env.step(np.zeros(5, np.int64))
    assert term.all() == (k == 8)


def test_gridworld_horizon_is_a_truncation():
  env = envs.gym_vector_env("small_dense_short", 6, seed=0)
  obs0, _ = env.reset(seed=4)
  for k in range(50):
    obs, rew, term, trunc, _ = env.step(np.zeros(6, np.int64))  # "stay": nothing is ever collected
    assert not term.any() and not rew.any()
    assert trunc.all() == (k == 49) and trunc.any() == (k == 49)
  np.testing.assert_array_equal(obs, obs0)  # the final observation of the time-out
  obs, rew, term, trunc, _ = env.step(np.full(6, 3, np.int64))
  assert not rew.any() and not term.any() and not trunc.any()
  assert not np.array_equal(obs, obs0)  # fresh reset states


def test_terminations_and_truncations_with_a_random_policy():
  b = 16
  env = envs.gym_vector_env("small_dense_short", b, seed=0)
  env.reset(seed=5)
  env.action_space.seed(5)
  length = np.zeros(b, int)
  resetting = np.zeros(b, bool)
  n_term = n_trunc = 0
  for _ in range(300):
    obs, rew, term, trunc, _ = env.step(env.action_space.sample())
    assert (obs[:, -1].sum(axis=(1, 2)) == 1).all()
    length = np.where(resetting, 0, length + 1)
    assert not (resetting & (term | trunc | (rew != 0))).any()
    np.testing.assert_array_equal(trunc, length == 50)
    assert (rew[term] <= 0).all()  # termination needs a collected negative object
    assert (length <= 50).all()  # (terminated and truncated may both hold on step 50, as with TimeLimit)
    n_term += term.sum()
    n_trunc += trunc.sum()
    resetting = term | trunc
  assert n_term > 0 and n_trunc > 0


def test_record_episode_statistics_wrapper():
  env = gym.wrappers.vector.RecordEpisodeStatistics(envs.gym_vector_env("catch", 8, seed=0))
  env.reset(seed=6)
  env.action_space.seed(6)
  episodes = []
  for _ in range(40):
    _, _, term, trunc, info = env.step(env.action_space.sample())
    if "episode" in info:
      done = info["_episode"]
      episodes += list(zip(info["episode"]["r"][done], info["episode"]["l"][done]))
  assert len(episodes) == 8 * 4
  assert {float(r) for r, _ in episodes} <= {-1.0, 1.0}
  assert {int(n) for _, n in episodes} == {9}


def test_reset_seed_list_and_reset_mask():
  env = envs.gym_vector_env("big_dense_long", 3, seed=0)
  a, _ = env.reset(seed=[1, 2, 3])
  b, _ = env.reset(seed=[7, 2, 9])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], b[0])
  with pytest.raises(ValueError):
    env.reset(seed=[1, 2])
  obs, _ = env.reset(seed=8)
  for _ in range(3):
    obs, *_ = env.step(np.array([1, 1, 1]))
  mask = np.array([True, False, False])
  obs2, _ = env.reset(options={"reset_mask": mask})
  np.testing.assert_array_equal(obs2[1:], obs[1:])
  assert not np.array_equal(obs2[0], obs[0])
  with pytest.raises(ValueError):
    env.reset(options={"reset_mask": np.array([1, 0, 0])})
