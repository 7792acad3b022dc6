"""A ``gymnasium.vector.VectorEnv`` face over the batched TF environments (gymnasium 1.x conventions).

Differences from the functional interface used by the agents (``optim4rl_tf.envs.make``):

* numpy in and out; actions are validated (integer dtype, shape ``(num_envs,)``, range) and bad ones raise
  ``ValueError``;
* terminated vs truncated: ``terminated`` only when an object's termination draw fires (gridworlds) or the
  ball lands (Catch); reaching the gridworld horizon is a ``truncation`` (the functional interface reports
  both as ``done``, docs/fidelity.md §1.5 item 3); when a termination draw fires on the horizon step both flags are
  True, as with gymnasium's ``TimeLimit``;
* autoreset follows gymnasium's default NEXT_STEP mode: the step that ends an episode returns that
  episode's final observation, and the next ``step`` call ignores the action of that sub-environment and
  returns the observation of a fresh reset state with reward 0 and terminated = truncated = False;
* rewards are the raw rewards times ``reward_scale`` (float64);
* ``render_mode="rgb_array"``: ``render()`` returns a tuple of ``num_envs`` HxWx3 uint8 images, one per
  sub-environment (:mod:`optim4rl_tf.envs.render`).

``gymnasium.make_vec("optim4rl_tf/<name>-v0", num_envs=...)`` builds this class (the ids' ``vector_entry_point``,
registered by :mod:`optim4rl_tf.envs.gym_env`). gymnasium's ``check_env`` accepts only ``gymnasium.Env``
instances, so it cannot check a ``VectorEnv``; tests/test_gym_vector.py runs its individual checks instead.

The randomness of each call comes from ``self.np_random`` (seeded by ``reset(seed=...)`` or the
constructor's ``seed``), which supplies the stateless TF seed of that call; the same seed therefore
reproduces the same trajectory bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from gymnasium import error, spaces
from gymnasium import logger as gym_logger
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from optim4rl_tf.envs.gridworld import select_state
from optim4rl_tf.envs.registry import check_reward_scale, make, native_name
from optim4rl_tf.envs.render import DEFAULT_CELL_SIZE, RENDER_FPS, check_cell_size, render_rgb

_SEED_HIGH = 2**31 - 1


class TFVectorEnv(VectorEnv):
  """``num_envs`` copies of one of the project's environments as a gymnasium vector env."""

  metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

  def __init__(self,
               name: str,
               num_envs: int,
               seed: int | None = None,
               reward_scale: float = 1.0,
               render_mode: str | None = None,
               cell_size: int = DEFAULT_CELL_SIZE):
    if render_mode is not None and render_mode not in self.metadata["render_modes"]:
      raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
    self.env = make(native_name(name), num_envs, reward_scale=check_reward_scale(reward_scale))
    self.num_envs = self.env.num_envs
    self.reward_scale = self.env.reward_scale
    self.autoreset_mode = AutoresetMode.NEXT_STEP
    self.render_mode = render_mode
    self.cell_size = check_cell_size(cell_size)
    self.single_observation_space = spaces.Box(low=0.0, high=1.0, shape=self.env.obs_shape, dtype=np.float32)
    self.observation_space = batch_space(self.single_observation_space, self.num_envs)
    self.single_action_space = spaces.Discrete(self.env.num_actions)
    self.action_space = batch_space(self.single_action_space, self.num_envs)
    if seed is not None:
      self.observation_space.seed(int(seed))
      self.action_space.seed(int(seed))
      super().reset(seed=int(seed))
    self._state = None
    self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)
    self._tf_reset = tf.function(self._reset_graph, reduce_retracing=True)
    self._tf_step = tf.function(self._step_graph, reduce_retracing=True)

  # --------------------------------------------------------------- graphs
  def _reset_graph(self, state, mask, seed):
    fresh = self.env._reset(seed, self.num_envs)
    new = fresh if state is None else select_state(mask, fresh, state)
    return new, self.env.observe(new)

  def _step_graph(self, state, action, autoreset, seed):
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    noise = self.env.sample_noise(seeds[0], self.num_envs)
    nxt, reward, terminated, truncated = self.env.transition(state, action, noise)
    nxt = select_state(autoreset, self.env._reset(seeds[1], self.num_envs), nxt)
    reward = tf.where(autoreset, tf.zeros_like(reward), reward)  # raw; scaled in float64 by step()
    keep = tf.logical_not(autoreset)
    terminated = tf.logical_and(terminated, keep)
    truncated = tf.logical_and(truncated, keep)
    return nxt, self.env.observe(nxt), reward, terminated, truncated

  def _next_tf_seed(self):
    return tf.constant(self.np_random.integers(0, _SEED_HIGH, size=2), dtype=tf.int64)

  # ---------------------------------------------------------------- API
  def reset(self,
            *,
            seed: int | list[int] | None = None,
            options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Reset all sub-environments (or those in ``options["reset_mask"]``).

        ``seed``: None, an int (seeds this vector env's generator), or a list of ``num_envs`` ints (sub-env
        i's reset state then depends only on ``seed[i]``).
        """
    mask = None
    if options is not None and "reset_mask" in options:
      mask = np.asarray(options["reset_mask"])
      if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
        raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                         f"got dtype {mask.dtype} shape {mask.shape}")
      if self._state is None and not mask.all():
        raise error.ResetNeeded("A partial reset_mask needs a previous full reset().")

    if isinstance(seed, (list, tuple, np.ndarray)):
      seeds = [int(s) for s in seed]
      if len(seeds) != self.num_envs:
        raise ValueError(f"seed list must have num_envs={self.num_envs} entries, got {len(seeds)}")
      super().reset(seed=None)
      self._np_random = np.random.default_rng(seeds)
      self._np_random_seed = -1
      parts = [self.env._reset(tf.constant([s, 0], tf.int64), 1) for s in seeds]
      fresh = type(parts[0])(*[tf.concat(list(f), axis=0) for f in zip(*parts)])
      if mask is None or self._state is None:
        state = fresh
      else:
        state = select_state(tf.constant(mask), fresh, self._state)
      obs = self.env.observe(state)
    else:
      if seed is not None:
        seed = int(seed)
      super().reset(seed=seed)
      tf_seed = self._next_tf_seed()
      if mask is None or self._state is None:
        state, obs = self._tf_reset(None, None, tf_seed)
      else:
        state, obs = self._tf_reset(self._state, tf.constant(mask), tf_seed)

    self._state = state
    if mask is None:
      self._autoreset[:] = False
    else:
      self._autoreset[mask] = False
    return obs.numpy(), {}

  def _check_actions(self, actions) -> np.ndarray:
    a = np.asarray(actions)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"actions must be integers in [0, {self.env.num_actions}), got dtype {a.dtype}")
    if a.shape != (self.num_envs,):
      raise ValueError(f"actions must have shape ({self.num_envs},) (one per sub-environment), got {a.shape}")
    bad = (a < 0) | (a >= self.env.num_actions)
    if bad.any():
      raise ValueError(f"actions must be in [0, {self.env.num_actions}) for {self.env.name}; got out-of-range "
                       f"values {np.unique(a[bad]).tolist()} at sub-environments {np.flatnonzero(bad)[:10].tolist()}")
    return a.astype(np.int32)

  def step(self, actions):
    if self._state is None:
      raise error.ResetNeeded("Call reset() before step().")
    a = self._check_actions(actions)
    state, obs, reward, terminated, truncated = self._tf_step(self._state, tf.constant(a), tf.constant(self._autoreset),
                                                              self._next_tf_seed())
    self._state = state
    terminated = terminated.numpy()
    truncated = truncated.numpy()
    self._autoreset = np.logical_or(terminated, truncated)
    return obs.numpy(), reward.numpy().astype(np.float64) * self.reward_scale, terminated, truncated, {}

  def render(self) -> tuple[np.ndarray, ...] | None:
    """One HxWx3 uint8 image per sub-environment (``render_mode="rgb_array"``); None without a render mode."""
    if self.render_mode is None:
      gym_logger.warn("render() called without a render_mode; make the vector env with render_mode='rgb_array'.")
      return None
    if self._state is None:
      raise error.ResetNeeded("Call reset() before render().")
    return tuple(render_rgb(self.env, self._state, i, self.cell_size) for i in range(self.num_envs))

  def close_extras(self, **kwargs):
    self._state = None

  def __repr__(self):
    return f"TFVectorEnv({self.env.name}, num_envs={self.num_envs})"


def gym_vector_env(name: str,
                   num_envs: int,
                   seed: int | None = None,
                   reward_scale: float = 1.0,
                   render_mode: str | None = None,
                   cell_size: int = DEFAULT_CELL_SIZE):
  """``TFVectorEnv(name, num_envs, ...)``: a ``gymnasium.vector.VectorEnv``."""
  return TFVectorEnv(name, num_envs, seed=seed, reward_scale=reward_scale, render_mode=render_mode, cell_size=cell_size)
