"""gymnasium registration (``optim4rl_tf/<name>-v0``), the single-env ``TFEnv``, rendering and reward_scale."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import env_checker, env_match

from optim4rl_tf import envs
from optim4rl_tf.envs import gym_env, render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID_NAMES = ("small_sparse_short", "small_sparse_long", "small_dense_short", "small_dense_long", "big_sparse_short",
              "big_sparse_long", "big_dense_short", "big_dense_long")


def _make(name, **kwargs):
  return gym.make(f"optim4rl_tf/{name}-v0", **kwargs)


def test_one_id_per_environment():
  assert set(envs.ENV_IDS) == {"catch", *GRID_NAMES}
  assert envs.ENV_IDS["small_dense_long"] == "optim4rl_tf/small_dense_long-v0"
  for name, env_id in envs.ENV_IDS.items():
    spec = gym.spec(env_id)
    assert spec.namespace == "optim4rl_tf" and spec.name == name and spec.version == 0
    assert spec.entry_point == "optim4rl_tf.envs.gym_env:TFEnv"
    assert spec.vector_entry_point == "optim4rl_tf.envs.gym_vector:TFVectorEnv"
    assert not spec.nondeterministic


@pytest.mark.parametrize("name", GRID_NAMES)
def test_every_gridworld_id_makes_a_working_env(name):
  env = _make(name)
  spec = envs.GRID_SPECS[name]
  assert isinstance(env.unwrapped, envs.TFEnv) and env.unwrapped.name == name
  assert env.observation_space == gym.spaces.Box(0.0, 1.0, (len(spec.objects) + 1, spec.rows, spec.cols), np.float32)
  assert env.action_space == gym.spaces.Discrete(9)
  obs, info = env.reset(seed=0)
  assert obs in env.observation_space and info == {}
  assert obs[-1].sum() == 1  # the agent
  obs, reward, terminated, truncated, info = env.step(3)
  assert obs in env.observation_space and isinstance(reward, float)
  assert terminated is False and truncated is False and info == {}


@pytest.mark.parametrize("name", ["catch", "small_dense_short", "big_sparse_long"])
def test_gymnasium_check_env_passes(name):
  env = _make(name, reward_scale=0.5)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # gymnasium's checker reports problems as warnings
    env_checker.check_env(env.unwrapped)  # includes the rgb_array render mode through env.spec.make
  env.close()


@pytest.mark.slow(15)
def test_make_works_from_a_fresh_interpreter_and_registering_is_idempotent():
  code = """
import importlib, sys, warnings
warnings.simplefilter("error")
import gymnasium as gym
# module:id imports optim4rl_tf.envs, which registers the ids.
env = gym.make("optim4rl_tf.envs:optim4rl_tf/catch-v0")
obs, _ = env.reset(seed=0)
import optim4rl_tf.envs
from optim4rl_tf.envs import gym_env
specs = {i: gym.spec(i) for i in gym_env.ENV_IDS.values()}
importlib.reload(optim4rl_tf.envs)
assert gym_env.register_envs() == tuple(specs)
assert all(gym.spec(i) is s for i, s in specs.items())
env = gym.make("optim4rl_tf/small_dense_long-v0")
env.reset(seed=1)
env.step(env.action_space.sample())
print(obs.shape, len(specs), "optim4rl_tf.envs.brax_bridge" in sys.modules)
"""
  out = subprocess.run([sys.executable, "-W", "error", "-c", code],
                       cwd=ROOT,
                       capture_output=True,
                       text=True,
                       timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "(10, 5, 1) 9 False"


def test_register_envs_twice_gives_no_warning():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    before = {i: gym.spec(i) for i in envs.ENV_IDS.values()}
    assert envs.register_envs() == tuple(before)
    assert all(gym.spec(i) is s for i, s in before.items())


def _trajectory(env, seed, steps):
  obs, _ = env.reset(seed=seed)
  env.action_space.seed(seed)
  out = [obs]
  for _ in range(steps):
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    out += [obs, reward, terminated, truncated]
    if terminated or truncated:
      obs, _ = env.reset()
      out.append(obs)
  return out


def test_seeded_trajectories_are_reproducible():
  env = _make("small_dense_short")
  a, b, c = _trajectory(env, 3, 120), _trajectory(env, 3, 120), _trajectory(env, 4, 120)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  # Two envs (the registered one and a direct TFEnv under an alias) agree step for step.
  env_match.check_environments_match(_make("small_dense_long"), envs.TFEnv("sdl"), num_steps=60, seed=7)


def test_catch_episode_and_gridworld_time_out():
  env = _make("catch")
  obs, _ = env.reset(seed=0)
  np.testing.assert_array_equal(obs[9, 2, 0], 1.0)
  for k in range(9):
    obs, reward, terminated, truncated, _ = env.step(1)
    assert truncated is False and terminated == (k == 8)
    assert reward in ((-1.0, 1.0) if k == 8 else (0.0,))
  with pytest.raises(gym.error.ResetNeeded, match="call reset"):
    env.step(1)
  env.reset()
  env.step(0)  # a new episode

  grid = _make("small_dense_short")
  obs0, _ = grid.reset(seed=2)
  for k in range(50):
    obs, reward, terminated, truncated, _ = grid.step(0)  # "stay": nothing is ever collected
    assert not terminated and reward == 0.0 and truncated == (k == 49)
  np.testing.assert_array_equal(obs, obs0)
  # A shorter TimeLimit on top still works.
  short = _make("small_dense_short", max_episode_steps=5)
  short.reset(seed=0)
  assert [short.step(0)[3] for _ in range(5)] == [False] * 4 + [True]


def _colour_at(img, cell, row, col):
  return tuple(img[row * cell + cell // 2, col * cell + cell // 2])


def _expected_colours(obs, spec, rewards):
  """The colour each cell of a gridworld observation should render as: the agent on top (an object under it
  is hidden), then objects by the sign of their reward, walls on the border ring, floor."""
  agent = tuple(np.argwhere(obs[-1])[0])
  colours = np.empty((spec.rows, spec.cols), object)
  for r in range(spec.rows):
    for c in range(spec.cols):
      present = obs[:-1, r, c] > 0
      if (r, c) == agent:
        colours[r, c] = render.AGENT
      elif present.any():
        colours[r, c] = render.POSITIVE if rewards[present][0] > 0 else render.NEGATIVE
      elif r in (0, spec.rows - 1) or c in (0, spec.cols - 1):
        colours[r, c] = render.WALL
      else:
        colours[r, c] = render.FLOOR
  return colours


def _shown(obs, rewards, cell):
  """What a picture of a gridworld observation shows: the agent's cell and the reward sign of each object cell.
  An object under the agent shows only where the agent's square (inset cell // 4) leaves a ring of the object's
  square (inset 1) visible, i.e. from cell size 8 up."""
  agent = tuple(int(i) for i in np.argwhere(obs[-1])[0])
  signs = {}
  for k, r, c in np.argwhere(obs[:-1] > 0):
    if (r, c) != agent or cell // 4 > 1:
      signs[(int(r), int(c))] = bool(rewards[k] > 0)
  return agent, signs


@pytest.mark.parametrize("cell", [16, 5])
def test_gridworld_render_shows_the_state_and_changes_after_a_step(cell):
  env = _make("big_dense_short", render_mode="rgb_array", cell_size=cell)
  assert env.metadata["render_modes"] == ["rgb_array"] and env.metadata["render_fps"] > 0
  spec = envs.GRID_SPECS["big_dense_short"]
  obs, _ = env.reset(seed=5)
  env.action_space.seed(1312)  # among its 30 steps, one where an object under the agent disappears (obs changes,
  rewards = np.array([o[0] for o in spec.objects])  # the picture does not)
  for step in range(30):
    img = env.render()
    assert img.shape == (spec.rows * cell, spec.cols * cell, 3) and img.dtype == np.uint8
    # The colour of every cell follows the observation: walls on the border ring, objects, agent.
    want = _expected_colours(obs, spec, rewards)
    for r in range(spec.rows):
      for c in range(spec.cols):
        assert _colour_at(img, cell, r, c) == want[r, c], (step, r, c)
    new_obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
    new_img = env.render()
    # The picture changes exactly when what it shows changes.
    assert np.array_equal(new_img, img) == (_shown(new_obs, rewards, cell) == _shown(obs, rewards, cell)), step
    obs = new_obs
    if terminated or truncated:
      obs, _ = env.reset()
  # The image is a fresh array each time.
  assert not np.shares_memory(env.render(), env.render())


def test_catch_render_ball_and_paddle():
  cell = 8
  env = _make("catch", render_mode="rgb_array", cell_size=cell)
  obs, _ = env.reset(seed=1)
  ball_col = int(np.argwhere(obs[0, :, 0])[0][0])
  img = env.render()
  assert img.shape == (10 * cell, 5 * cell, 3) and img.dtype == np.uint8
  assert _colour_at(img, cell, 0, ball_col) == render.BALL
  assert _colour_at(img, cell, 9, 2) == render.PADDLE
  assert (img == render.CATCH_BOARD).all(axis=-1).mean() > 0.9
  env.step(2)  # paddle right, ball down
  img2 = env.render()
  assert not np.array_equal(img, img2)
  assert _colour_at(img2, cell, 1, ball_col) == render.BALL and _colour_at(img2, cell, 0, ball_col) == (0, 0, 0)
  assert _colour_at(img2, cell, 9, 3) == render.PADDLE and _colour_at(img2, cell, 9, 2) == (0, 0, 0)


def test_render_without_mode_and_before_reset():
  env = envs.TFEnv("catch")
  with pytest.warns(UserWarning, match="render_mode"):
    assert env.render() is None
  with pytest.raises(gym.error.ResetNeeded):
    envs.TFEnv("catch", render_mode="rgb_array").render()
  # rgb_array_list comes from gymnasium's RenderCollection wrapper on top of rgb_array.
  frames_env = _make("catch", render_mode="rgb_array_list")
  frames_env.reset(seed=0)
  frames_env.step(1)
  frames = frames_env.render()
  assert len(frames) == 2 and all(f.shape == (160, 80, 3) for f in frames)


def test_vector_env_render_and_make_vec():
  vec = gym.make_vec("optim4rl_tf/small_dense_short-v0", num_envs=3, render_mode="rgb_array", cell_size=4)
  assert isinstance(vec, envs.TFVectorEnv) and vec.num_envs == 3
  assert vec.metadata["render_modes"] == ["rgb_array"]
  with pytest.raises(gym.error.ResetNeeded):
    vec.render()
  obs, _ = vec.reset(seed=[1, 2, 3])
  frames = vec.render()
  assert len(frames) == 3 and all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in frames)
  single = envs.TFEnv("small_dense_short", render_mode="rgb_array", cell_size=4)
  for i in range(3):  # the same state renders the same in both faces
    single._state = type(vec._state)(*[x[i:i + 1] for x in vec._state])
    np.testing.assert_array_equal(single.render(), frames[i])
  # gymnasium's check_env takes single envs only (a VectorEnv is not a gymnasium.Env), by design.
  with pytest.raises(TypeError, match="gymnasium.Env"):
    env_checker.check_env(vec)
  # The sync vectorisation of the single env also works (and keeps the kwargs).
  sync = gym.make_vec("optim4rl_tf/catch-v0", num_envs=2, vectorization_mode="sync", reward_scale=3.0)
  sync.reset(seed=0)
  for _ in range(9):
    _, reward, terminated, _, _ = sync.step(np.array([1, 1]))
  assert terminated.all() and set(np.abs(reward)) == {3.0}


def test_reward_scale_multiplies_single_env_rewards():
  for name in ("catch", "small_dense_short"):
    base = _trajectory(_make(name), 11, 200)
    for scale in (2.5, -0.1):
      scaled = _trajectory(_make(name, reward_scale=scale), 11, 200)
      assert len(scaled) == len(base)
      rewards = [(x, y) for x, y in zip(base, scaled) if isinstance(x, float)]
      assert any(x != 0 for x, _ in rewards)
      assert all(y == x * scale for x, y in rewards)  # exact: raw rewards are integers, scaled in float64
      assert all(np.array_equal(x, y) for x, y in zip(base, scaled) if not isinstance(x, float))
  assert envs.TFEnv("catch", reward_scale=2).reward_scale == 2.0


@pytest.mark.parametrize("how", ["gym_vector_env", "make_vec"])
def test_reward_scale_multiplies_vector_env_rewards(how):

  def rewards(scale):
    if how == "gym_vector_env":
      env = envs.gym_vector_env("small_dense_short", 8, seed=0, reward_scale=scale)
    else:
      env = gym.make_vec("optim4rl_tf/small_dense_short-v0", num_envs=8, reward_scale=scale)
    assert env.reward_scale == scale
    env.reset(seed=9)
    env.action_space.seed(9)
    out = np.stack([env.step(env.action_space.sample())[1] for _ in range(100)])
    assert out.dtype == np.float64
    return out

  base = rewards(1.0)
  assert (base != 0).sum() > 10
  for scale in (0.1, -3.0):
    np.testing.assert_array_equal(rewards(scale), base * scale)


def test_bad_ids_and_kwargs_give_clear_errors():
  with pytest.raises(gym.error.NameNotFound, match="catchh"):
    gym.make("optim4rl_tf/catchh-v0")
  with pytest.raises(gym.error.VersionNotFound):
    gym.make("optim4rl_tf/catch-v1")
  with pytest.raises(gym.error.NamespaceNotFound):
    gym.make("optim4rl/catch-v0")
  with pytest.raises(TypeError, match="reward_scael"):
    gym.make("optim4rl_tf/catch-v0", reward_scael=0.1)
  for bad in ("big", float("nan"), float("inf"), None, True):
    with pytest.raises(ValueError, match="reward_scale must be a finite number"):
      gym.make("optim4rl_tf/catch-v0", reward_scale=bad)
    with pytest.raises(ValueError, match="reward_scale must be a finite number"):
      envs.gym_vector_env("catch", 2, reward_scale=bad)
  with pytest.raises(ValueError, match="cell_size"):
    envs.TFEnv("catch", cell_size=0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # gymnasium first warns that the mode is not in metadata["render_modes"]
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
      gym.make("optim4rl_tf/catch-v0", render_mode="ansi")
  with pytest.raises(ValueError, match="render_mode must be None or one of"):
    envs.gym_vector_env("catch", 2, render_mode="human")
  for factory in (lambda n: envs.TFEnv(n), lambda n: envs.gym_vector_env(n, 2)):
    with pytest.raises(ValueError, match="Unknown environment 'catchh'.*small_dense_long"):
      factory("catchh")
    with pytest.raises(ValueError, match="Brax task"):
      factory("ant")
  env = _make("catch")
  with pytest.raises(gym.error.ResetNeeded):
    env.step(0)
  env.reset(seed=0)
  for bad in (3, -1, 1.0, True, np.array([1]), "1"):
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 3\) for catch"):
      env.step(bad)
  env.step(np.int64(2))  # any integer type
  env.step(np.array(0, np.uint8))


def test_package_gym_vector_env_forwards_all_arguments():
  env = envs.gym_vector_env("catch", 2, seed=3, reward_scale=0.25, render_mode="rgb_array", cell_size=2)
  assert env.reward_scale == 0.25 and env.render_mode == "rgb_array" and env.cell_size == 2
  env.reset(seed=0)
  assert [f.shape for f in env.render()] == [(20, 10, 3)] * 2
