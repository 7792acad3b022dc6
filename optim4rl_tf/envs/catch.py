"""Batched, in-graph Catch (official ``envs/catch.py``, rows 10, columns 5; docs/fidelity.md §2).

State: ball (row, col) and paddle (row, col), each field int32 ``[B]``. Reset: ball_row 0, ball_col uniform
in {0..4}, paddle at (9, 2). Step: the paddle moves first (action 0 left, 1 stay, 2 right, clipped to the
board), the ball falls one row; the episode ends when the ball reaches row 9 (always after exactly 9 steps)
with reward +1 if the ball's column equals the paddle's, else -1 (0 on the other steps). Observation:
float32 (10, 5, 1), 1.0 at the ball and at the paddle.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from optim4rl_tf.envs.gridworld import _as_seed, select_state

ROWS = 10
COLUMNS = 5
NUM_ACTIONS = 3
EPISODE_LENGTH = ROWS - 1


class CatchState(NamedTuple):
  ball_row: tf.Tensor  # [B] int32
  ball_col: tf.Tensor  # [B] int32
  paddle_row: tf.Tensor  # [B] int32 (always ROWS - 1)
  paddle_col: tf.Tensor  # [B] int32


class Catch:
  """A batch of ``num_envs`` Catch games (an ``envs.base.DiscreteEnv``); see the module docstring."""

  name = "catch"
  num_actions = NUM_ACTIONS
  rows = ROWS
  cols = COLUMNS
  obs_shape = (ROWS, COLUMNS, 1)
  # Every episode terminates (ball lands) after exactly this many steps; there is no time-out.
  horizon = EPISODE_LENGTH

  def __init__(self, num_envs: int, reward_scale: float = 1.0):
    if int(num_envs) < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    self.num_envs = int(num_envs)
    # The paper applies no reward scaling to Catch; the factor is kept for a uniform interface.
    self.reward_scale = float(reward_scale)

  def __repr__(self):
    return f"Catch(num_envs={self.num_envs}, reward_scale={self.reward_scale})"

  def reset(self, seed) -> CatchState:
    return self._reset(_as_seed(seed), self.num_envs)

  def _reset(self, seed, batch) -> CatchState:
    ball_col = tf.random.stateless_uniform([batch], seed, minval=0, maxval=COLUMNS, dtype=tf.int32)
    zeros = tf.zeros_like(ball_col)
    return CatchState(
        ball_row=zeros,
        ball_col=ball_col,
        paddle_row=zeros + (ROWS - 1),
        paddle_col=zeros + COLUMNS // 2,
    )

  def observe(self, state: CatchState) -> tf.Tensor:
    """float32 [B, 10, 5, 1]."""
    n = ROWS * COLUMNS
    ball = tf.one_hot(state.ball_row * COLUMNS + state.ball_col, n, dtype=tf.float32)
    paddle = tf.one_hot(state.paddle_row * COLUMNS + state.paddle_col, n, dtype=tf.float32)
    obs = tf.maximum(ball, paddle)
    return tf.reshape(obs, [-1, ROWS, COLUMNS, 1])

  def transition(self, state: CatchState, action, noise=None):
    """One step without auto-reset and reward scaling: (next, raw_reward, terminated, truncated)."""
    del noise  # Catch's dynamics are deterministic.
    action = tf.cast(action, tf.int32)
    paddle_col = tf.clip_by_value(state.paddle_col + action - 1, 0, COLUMNS - 1)
    ball_row = state.ball_row + 1
    terminated = tf.equal(ball_row, ROWS - 1)
    caught = tf.equal(state.ball_col, paddle_col)
    reward = tf.where(
        terminated,
        tf.where(caught, tf.ones_like(ball_row, tf.float32), -tf.ones_like(ball_row, tf.float32)),
        tf.zeros_like(ball_row, tf.float32),
    )
    nxt = CatchState(ball_row, state.ball_col, state.paddle_row, paddle_col)
    return nxt, reward, terminated, tf.zeros_like(terminated)

  def sample_noise(self, seed, batch=None):
    return None

  def step(self, state: CatchState, action, seed):
    """(state, obs, reward, done) with auto-reset; reward scaled, done float32 (1.0 / 0.0)."""
    batch = state.ball_row.shape[0]
    if batch is None:
      batch = tf.shape(state.ball_row)[0]
    nxt, reward, terminated, _ = self.transition(state, action)
    nxt = select_state(terminated, self._reset(_as_seed(seed), batch), nxt)
    if self.reward_scale != 1.0:
      reward = reward * tf.constant(self.reward_scale, tf.float32)
    return nxt, self.observe(nxt), reward, tf.cast(terminated, tf.float32)
