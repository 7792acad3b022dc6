"""A single-environment ``gymnasium.Env`` face over the native TF environments, and their gymnasium ids.

``register_envs()`` (run when :mod:`optim4rl_tf.envs` is imported; idempotent) registers one id per
environment in the ``optim4rl_tf`` namespace, ``optim4rl_tf/<name>-v0`` for ``catch`` and the eight
gridworlds (``ENV_IDS``), so that::

    import gymnasium as gym
    import optim4rl_tf.envs  # registers the ids (or: gym.make("optim4rl_tf.envs:optim4rl_tf/catch-v0"))

    env = gym.make("optim4rl_tf/small_dense_long-v0", reward_scale=0.1, render_mode="rgb_array")
    vec = gym.make_vec("optim4rl_tf/catch-v0", num_envs=64)  # the batched TFVectorEnv (vector_entry_point)

``TFEnv`` runs one copy of the batched environment (batch 1) with the gymnasium 1.x single-env contract:

* ``reset(seed=None, options=None) -> (obs, {})``, ``step(action) -> (obs, reward, terminated, truncated, {})``
  with ``obs`` float32 in ``Box(0, 1, obs_shape)``, ``reward`` a float (the raw reward times ``reward_scale``),
  ``terminated`` when the ball lands (Catch) or an object's termination draw fires (gridworlds), and
  ``truncated`` at the gridworld horizon (``self.horizon`` steps; Catch never truncates); the env owns this
  time-out, so no ``TimeLimit`` is registered (pass ``max_episode_steps`` to ``gym.make`` to shorten episodes);
* no auto-reset: stepping an ended episode raises ``gymnasium.error.ResetNeeded``; invalid actions raise
  ``ValueError``;
* all randomness comes from ``self.np_random`` (seeded by ``reset(seed=...)``), which supplies the stateless
  TF seed of every reset and step, so a seed reproduces a trajectory exactly;
* ``render_mode="rgb_array"``: ``render()`` returns the current state as an HxWx3 uint8 image
  (:mod:`optim4rl_tf.envs.render`; ``cell_size`` pixels per board cell).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf
from gymnasium import error, spaces

from optim4rl_tf.envs.registry import ENV_NAMES, check_reward_scale, make, native_name
from optim4rl_tf.envs.render import DEFAULT_CELL_SIZE, RENDER_FPS, check_cell_size, render_rgb

NAMESPACE = "optim4rl_tf"
VERSION = 0
# Environment name -> gymnasium id.
ENV_IDS = {name: f"{NAMESPACE}/{name}-v{VERSION}" for name in ENV_NAMES}
ENTRY_POINT = "optim4rl_tf.envs.gym_env:TFEnv"
VECTOR_ENTRY_POINT = "optim4rl_tf.envs.gym_vector:TFVectorEnv"

_SEED_HIGH = 2**31 - 1


class TFEnv(gym.Env):
  """One copy of ``name`` (a gridworld or ``catch``) as a ``gymnasium.Env``; see the module docstring."""

  metadata = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

  def __init__(self,
               name: str,
               reward_scale: float = 1.0,
               render_mode: str | None = None,
               cell_size: int = DEFAULT_CELL_SIZE):
    if render_mode is not None and render_mode not in self.metadata["render_modes"]:
      raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
    self.env = make(native_name(name), 1, reward_scale=check_reward_scale(reward_scale))
    self.name = self.env.name
    self.reward_scale = self.env.reward_scale
    self.horizon = self.env.horizon
    self.render_mode = render_mode
    self.cell_size = check_cell_size(cell_size)
    self.observation_space = spaces.Box(low=0.0, high=1.0, shape=self.env.obs_shape, dtype=np.float32)
    self.action_space = spaces.Discrete(self.env.num_actions)
    self._state = None
    self._done = False
    self._tf_reset = tf.function(self._reset_graph)
    self._tf_step = tf.function(self._step_graph)

  # --------------------------------------------------------------- graphs
  def _reset_graph(self, seed):
    state = self.env._reset(seed, 1)
    return state, self.env.observe(state)[0]

  def _step_graph(self, state, action, seed):
    noise = self.env.sample_noise(seed, 1)
    nxt, reward, terminated, truncated = self.env.transition(state, action[None], noise)
    return nxt, self.env.observe(nxt)[0], reward[0], terminated[0], truncated[0]

  def _next_tf_seed(self):
    return tf.constant(self.np_random.integers(0, _SEED_HIGH, size=2), dtype=tf.int64)

  # ---------------------------------------------------------------- API
  def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
    """A fresh episode: ``(obs, {})``. ``options`` is accepted (gymnasium API) and has no keys of its own."""
    super().reset(seed=seed, options=options)
    self._state, obs = self._tf_reset(self._next_tf_seed())
    self._done = False
    return np.array(obs), {}

  def _check_action(self, action) -> int:
    a = np.asarray(action)
    n = self.env.num_actions
    if a.shape != () or a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a) < n:
      raise ValueError(f"action must be an integer in [0, {n}) for {self.name}, got {action!r}")
    return int(a)

  def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
    if self._state is None:
      raise error.ResetNeeded("Call reset() before step().")
    if self._done:
      raise error.ResetNeeded("The episode has ended (terminated or truncated): call reset() before step().")
    a = self._check_action(action)
    self._state, obs, reward, terminated, truncated = self._tf_step(self._state, tf.constant(a, tf.int32),
                                                                    self._next_tf_seed())
    terminated, truncated = bool(terminated), bool(truncated)
    self._done = terminated or truncated
    # The raw rewards are small integers (exact in float32); the scaling is done in float64.
    return np.array(obs), float(reward) * self.reward_scale, terminated, truncated, {}

  def render(self) -> np.ndarray | None:
    """The current state as an HxWx3 uint8 image (``render_mode="rgb_array"``); None without a render mode."""
    if self.render_mode is None:
      gym.logger.warn(f"render() called without a render_mode; make the environment with "
                      f"render_mode='rgb_array' (e.g. gym.make({ENV_IDS[self.name]!r}, render_mode='rgb_array')).")
      return None
    if self._state is None:
      raise error.ResetNeeded("Call reset() before render().")
    return render_rgb(self.env, self._state, 0, self.cell_size)

  def close(self):
    self._state = None

  def __repr__(self):
    return f"TFEnv({self.name!r}, reward_scale={self.reward_scale}, render_mode={self.render_mode!r})"


def register_envs() -> tuple[str, ...]:
  """Registers ``ENV_IDS`` with gymnasium (``entry_point`` TFEnv, ``vector_entry_point`` TFVectorEnv).

    Idempotent: an id already registered with these entry points is left alone (no "Overriding
    environment" warning). Returns the ids.
    """
  for name, env_id in ENV_IDS.items():
    spec = gym.registry.get(env_id)
    if (spec is not None and spec.entry_point == ENTRY_POINT and spec.vector_entry_point == VECTOR_ENTRY_POINT and
        spec.kwargs == {
            "name": name
        }):
      continue
    gym.register(id=env_id, entry_point=ENTRY_POINT, vector_entry_point=VECTOR_ENTRY_POINT, kwargs={"name": name})
  return tuple(ENV_IDS.values())
