"""Batched, in-graph gridworlds of the Optim4RL paper (official ``envs/gridworld.py``).

docs/fidelity.md §1 gives the exact dynamics reproduced here:

* maps: a wall ring around a fully free interior; 8 named maps (``GRID_SPECS``);
* state: agent position ``[B, 2]``, object positions ``[B, N, 2]`` ((-1, -1) = absent), time ``[B]``
  (all int32, (row, col) on the full map);
* reset: 1 + N distinct free cells drawn uniformly without replacement (agent first), t = 0;
* step (§1.5): move with wall check (no sliding), collect every object on the new cell (rewards add),
  termination draw U <= p_term for each collected object, respawn draw U <= p_respawn for every absent
  object (including one collected in this very step) to a uniformly random free cell (no exclusion),
  t + 1, done = flag or t >= horizon, auto-reset, reward scaling;
* observation (§1.6): float32 (N + 1, rows, cols), object i in channel i when present,
  agent in the last channel, walls not rendered.

Everything is a pure function of tensors: randomness only through ``tf.random.stateless_*`` keyed by the
seed argument, no Python loop over environments or objects, so the functions trace into one
``tf.function``/``tf.while_loop`` graph and compile with XLA.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

# Action index -> (d_row, d_col) (docs/fidelity.md §1.4).
ACTION_DELTAS = np.array([[0, 0], [-1, 0], [0, 1], [1, 0], [0, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.int32)
NUM_ACTIONS = 9


class GridSpec(NamedTuple):
  """Static description of one gridworld task."""

  name: str
  rows: int
  cols: int
  objects: tuple  # tuple of (reward, p_term, p_respawn), positive objects first
  horizon: int


def _objects(n_each, p_respawn):
  return (tuple((1.0, 0.0, p_respawn) for _ in range(n_each)) + tuple((-1.0, 0.5, p_respawn) for _ in range(n_each)))


# docs/fidelity.md §1.1: full map size (interior + wall ring), objects, horizon.
GRID_SPECS = {
    "small_sparse_short": GridSpec("small_sparse_short", 5, 10, _objects(1, 0.05), 50),
    "small_sparse_long": GridSpec("small_sparse_long", 10, 5, _objects(1, 0.05), 500),
    "small_dense_short": GridSpec("small_dense_short", 6, 8, _objects(1, 0.5), 50),
    "small_dense_long": GridSpec("small_dense_long", 8, 6, _objects(1, 0.5), 500),
    "big_sparse_short": GridSpec("big_sparse_short", 12, 14, _objects(2, 0.05), 50),
    "big_sparse_long": GridSpec("big_sparse_long", 14, 12, _objects(2, 0.05), 500),
    "big_dense_short": GridSpec("big_dense_short", 11, 15, _objects(2, 0.5), 50),
    "big_dense_long": GridSpec("big_dense_long", 15, 11, _objects(2, 0.5), 500),
}


def map_strings(spec: GridSpec) -> tuple:
  """The map as the official string grid: '#' wall, ' ' free."""
  wall = "#" * spec.cols
  inner = "#" + " " * (spec.cols - 2) + "#"
  return (wall,) + (inner,) * (spec.rows - 2) + (wall,)


class _Constants(NamedTuple):
  wall: np.ndarray  # [rows * cols] bool, row-major
  free_cells: np.ndarray  # [F, 2] int32, row-major order of the non-wall cells
  rewards: np.ndarray  # [N] float32
  p_term: np.ndarray  # [N] float32
  p_respawn: np.ndarray  # [N] float32


@functools.lru_cache(maxsize=None)
def _constants(spec: GridSpec) -> _Constants:
  grid = np.array([list(row) for row in map_strings(spec)])
  wall = grid == "#"
  free = np.argwhere(~wall).astype(np.int32)  # row-major
  objs = np.array(spec.objects, dtype=np.float32).reshape(-1, 3)
  return _Constants(
      wall=wall.reshape(-1),
      free_cells=free,
      rewards=objs[:, 0].copy(),
      p_term=objs[:, 1].copy(),
      p_respawn=objs[:, 2].copy(),
  )


class GridState(NamedTuple):
  agent_pos: tf.Tensor  # [B, 2] int32
  object_pos: tf.Tensor  # [B, N, 2] int32, (-1, -1) = absent
  t: tf.Tensor  # [B] int32


class GridNoise(NamedTuple):
  """All random draws one step consumes (drawn by ``GridWorld.sample_noise``)."""

  u_term: tf.Tensor  # [B, N] float32 in [0, 1): termination draws
  u_respawn: tf.Tensor  # [B, N] float32 in [0, 1): respawn draws
  respawn_cell: tf.Tensor  # [B, N] int32 in [0, F): index into the free-cell list


def _as_seed(seed):
  """Accepts a shape-[2] int seed tensor (or a Python int, mapped to [0, seed])."""
  seed = tf.convert_to_tensor(seed)
  if seed.shape.rank == 0:
    seed = tf.stack([tf.zeros_like(seed), seed])
  if seed.dtype not in (tf.int32, tf.int64):
    seed = tf.cast(seed, tf.int64)
  return seed


class GridWorld:
  """A batch of ``num_envs`` copies of one gridworld (an ``envs.base.DiscreteEnv``); see the module docstring."""

  num_actions = NUM_ACTIONS

  def __init__(self, spec: GridSpec, num_envs: int, reward_scale: float = 1.0):
    if int(num_envs) < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    self.spec = spec
    self.name = spec.name
    self.num_envs = int(num_envs)
    self.reward_scale = float(reward_scale)
    self.rows, self.cols = spec.rows, spec.cols
    self.num_objects = len(spec.objects)
    self.horizon = spec.horizon
    self.obs_shape = (self.num_objects + 1, spec.rows, spec.cols)
    self._c = _constants(spec)
    self.num_free_cells = int(self._c.free_cells.shape[0])

  def __repr__(self):
    return f"GridWorld({self.name!r}, num_envs={self.num_envs}, reward_scale={self.reward_scale})"

  # ------------------------------------------------------------------ reset
  def reset(self, seed) -> GridState:
    """Fresh states for all envs: 1 + N distinct uniformly random free cells, t = 0."""
    return self._reset(_as_seed(seed), self.num_envs)

  def _reset(self, seed, batch) -> GridState:
    n = self.num_objects
    k = n + 1
    f = self.num_free_cells
    # Sequential sampling without replacement: draw j_m uniform in [0, F - m), then take the j_m-th
    # cell (in free-cell order) among those not yet taken. Costs k random numbers per env instead of
    # a sort over all F cells (which dominated the step cost, the reset being computed every step).
    bits = tf.random.stateless_uniform([batch, k], seed, minval=None, maxval=None, dtype=tf.int64)
    ranges = tf.constant(f - np.arange(k), tf.int64)
    # floormod of a full-range 64-bit integer: bias ~ F / 2^64, i.e. none.
    j = tf.cast(tf.math.floormod(bits, ranges[None, :]), tf.int32)  # [B, k]
    taken = []
    for m in range(k):
      # The j-th untaken index is the least fixed point x = j + #{taken <= x}, reached from x = j
      # in at most m iterations (x only moves when the count grows, and the count is <= m).
      x = j[:, m]
      for _ in range(m):
        x = j[:, m] + tf.add_n([tf.cast(t <= x, tf.int32) for t in taken])
      taken.append(x)
    idx = tf.stack(taken, axis=1)  # [B, k], distinct, uniform ordered k-subset of [0, F)
    cells = tf.gather(tf.constant(self._c.free_cells), idx)  # [B, N+1, 2]
    return GridState(
        agent_pos=cells[:, 0, :],
        object_pos=cells[:, 1:, :],
        t=tf.zeros([batch], tf.int32),
    )

  # ------------------------------------------------------------ observation
  def observe(self, state: GridState) -> tf.Tensor:
    """float32 [B, N+1, rows, cols]; object i in channel i if present, agent in channel N."""
    pos = tf.concat([state.object_pos, state.agent_pos[:, None, :]], axis=1)  # [B, N+1, 2]
    flat = pos[..., 0] * self.cols + pos[..., 1]
    # Absent objects (-1, -1) must not be written anywhere (docs/fidelity.md §1.6): index -1 gives an
    # all-zero one-hot row.
    flat = tf.where(pos[..., 0] < 0, -tf.ones_like(flat), flat)
    obs = tf.one_hot(flat, self.rows * self.cols, dtype=tf.float32)
    return tf.reshape(obs, [-1, self.num_objects + 1, self.rows, self.cols])

  # ------------------------------------------------------------------- step
  def sample_noise(self, seed, batch=None) -> GridNoise:
    batch = self.num_envs if batch is None else batch
    seeds = tf.random.experimental.stateless_split(_as_seed(seed), num=2)
    u = tf.random.stateless_uniform([batch, self.num_objects, 2], seeds[0], dtype=tf.float32)
    cell = tf.random.stateless_uniform([batch, self.num_objects],
                                       seeds[1],
                                       minval=0,
                                       maxval=self.num_free_cells,
                                       dtype=tf.int32)
    return GridNoise(u_term=u[..., 0], u_respawn=u[..., 1], respawn_cell=cell)

  def transition(self, state: GridState, action, noise: GridNoise):
    """One step WITHOUT auto-reset and without reward scaling, with the random draws given.

        Returns (next_state, raw_reward [B] float32, terminated [B] bool, truncated [B] bool), where
        terminated = some collected object's termination draw fired and truncated = t' >= horizon.
        """
    c = self._c
    action = tf.cast(action, tf.int32)
    p = state.agent_pos
    # 1. move, clip into the map, stay if the target is a wall (no sliding).
    target = p + tf.gather(tf.constant(ACTION_DELTAS), action)
    target = tf.clip_by_value(target, tf.zeros([2], tf.int32), tf.constant([self.rows - 1, self.cols - 1], tf.int32))
    hit_wall = tf.gather(tf.constant(c.wall), target[:, 0] * self.cols + target[:, 1])
    p_new = tf.where(hit_wall[:, None], p, target)

    # 2. objects. The official loop over i is sequential, but object i's update reads only its own
    # position and the agent's, so doing all N at once is the same computation.
    obj = state.object_pos
    collected = tf.reduce_all(tf.equal(obj, p_new[:, None, :]), axis=-1)  # [B, N]
    reward = tf.reduce_sum(tf.where(collected, tf.constant(c.rewards)[None, :], tf.zeros_like(noise.u_term)), axis=-1)
    obj = tf.where(collected[..., None], -tf.ones_like(obj), obj)
    terminated = tf.reduce_any(tf.logical_and(collected, noise.u_term <= tf.constant(c.p_term)[None, :]), axis=-1)
    absent = obj[..., 0] < 0
    respawn = tf.logical_and(absent, noise.u_respawn <= tf.constant(c.p_respawn)[None, :])
    new_cells = tf.gather(tf.constant(c.free_cells), noise.respawn_cell)  # [B, N, 2]
    obj = tf.where(respawn[..., None], new_cells, obj)

    # 3. time.
    t = state.t + 1
    truncated = t >= self.horizon
    return GridState(p_new, obj, t), reward, terminated, truncated

  def step(self, state: GridState, action, seed):
    """(state, obs, reward, done) with auto-reset; reward scaled, done float32 (1.0 / 0.0)."""
    seeds = tf.random.experimental.stateless_split(_as_seed(seed), num=2)
    batch = tf.shape(state.t)[0] if state.t.shape[0] is None else state.t.shape[0]
    nxt, reward, terminated, truncated = self.transition(state, action, self.sample_noise(seeds[0], batch))
    done = tf.logical_or(terminated, truncated)
    nxt = select_state(done, self._reset(seeds[1], batch), nxt)
    reward = reward * tf.constant(self.reward_scale, tf.float32)
    return nxt, self.observe(nxt), reward, tf.cast(done, tf.float32)


def select_state(mask, if_true, if_false):
  """Per-env tf.where over every field of two state NamedTuples (mask: [B] bool)."""

  def sel(a, b):
    return tf.where(tf.reshape(mask, [-1] + [1] * (a.shape.rank - 1)), a, b)

  return type(if_false)(*[sel(a, b) for a, b in zip(if_true, if_false)])
