"""RGB images of gridworld and Catch states: the ``render_mode="rgb_array"`` of the gymnasium faces.

Each board cell becomes a ``cell_size`` x ``cell_size`` block of an ``(rows * cell_size, cols * cell_size, 3)``
uint8 image (row 0 at the top, as in the observations):

* gridworld: walls dark grey, free cells light grey, a present positive-reward object green and a
  negative-reward one red (each with a one-pixel floor border), the agent a blue square inset by a quarter
  cell, so an object that respawned under the agent stays visible around it;
* Catch: black board, the paddle light grey, the ball a yellow square inset by a quarter cell (drawn over
  the paddle, so a caught ball shows on it).

Pure numpy on the (numpy or eager-tensor) state fields; nothing here touches TensorFlow graphs.
"""

from __future__ import annotations

import numpy as np

from optim4rl_tf.envs.catch import Catch
from optim4rl_tf.envs.gridworld import GridWorld

DEFAULT_CELL_SIZE = 16
RENDER_FPS = 10

WALL = (64, 64, 64)
FLOOR = (232, 232, 232)
POSITIVE = (46, 160, 67)
NEGATIVE = (214, 56, 56)
AGENT = (40, 96, 220)
CATCH_BOARD = (0, 0, 0)
PADDLE = (220, 220, 220)
BALL = (250, 200, 40)


def check_cell_size(cell_size) -> int:
  """``cell_size`` as a positive int, or a ValueError."""
  if isinstance(cell_size, bool) or not isinstance(cell_size, (int, np.integer)) or int(cell_size) < 1:
    raise ValueError(f"cell_size must be a positive int (pixels per board cell), got {cell_size!r}")
  return int(cell_size)


def _fill(img, row, col, color, cell, inset=0):
  img[row * cell + inset:(row + 1) * cell - inset, col * cell + inset:(col + 1) * cell - inset] = color


def render_gridworld(env: GridWorld, state, index: int = 0, cell_size: int = DEFAULT_CELL_SIZE) -> np.ndarray:
  """The image of sub-environment ``index`` of a ``GridState`` batch."""
  cell = check_cell_size(cell_size)
  wall = np.asarray(env._c.wall).reshape(env.rows, env.cols)
  board = np.where(wall[..., None], np.array(WALL, np.uint8), np.array(FLOOR, np.uint8))
  img = np.repeat(np.repeat(board, cell, axis=0), cell, axis=1)
  objects = np.asarray(state.object_pos)[index]
  for (row, col), reward in zip(objects, env._c.rewards):
    if row >= 0:
      _fill(img, row, col, POSITIVE if reward > 0 else NEGATIVE, cell, inset=1 if cell > 2 else 0)
  row, col = np.asarray(state.agent_pos)[index]
  _fill(img, row, col, AGENT, cell, inset=cell // 4)
  return img


def render_catch(env: Catch, state, index: int = 0, cell_size: int = DEFAULT_CELL_SIZE) -> np.ndarray:
  """The image of sub-environment ``index`` of a ``CatchState`` batch."""
  cell = check_cell_size(cell_size)
  img = np.empty((env.rows * cell, env.cols * cell, 3), np.uint8)
  img[:] = CATCH_BOARD
  _fill(img, int(np.asarray(state.paddle_row)[index]), int(np.asarray(state.paddle_col)[index]), PADDLE, cell)
  _fill(img,
        int(np.asarray(state.ball_row)[index]),
        int(np.asarray(state.ball_col)[index]),
        BALL,
        cell,
        inset=cell // 4)
  return img


def render_rgb(env, state, index: int = 0, cell_size: int = DEFAULT_CELL_SIZE) -> np.ndarray:
  """HxWx3 uint8 image of sub-environment ``index`` of ``state`` (a batch of ``env``, GridWorld or Catch)."""
  if isinstance(env, Catch):
    return render_catch(env, state, index, cell_size)
  if isinstance(env, GridWorld):
    return render_gridworld(env, state, index, cell_size)
  raise TypeError(f"No rgb_array rendering for {type(env).__name__}; only GridWorld and Catch render.")
