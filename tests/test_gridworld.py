"""Tests of the batched in-graph gridworlds against docs/fidelity.md §1."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import GOLDEN_DIR
from optim4rl_tf import envs
from optim4rl_tf.envs.gridworld import ACTION_DELTAS, GridNoise, GridState

GOLDEN = os.path.join(GOLDEN_DIR, "a2c_loss_golden.npz")

# docs/fidelity.md §1.1: name -> (full rows, cols, free cells, N, rewards, p_term, p_respawn, horizon).
TABLE = {
    "small_sparse_short": (5, 10, 24, [1, -1], [0, 0.5], 0.05, 50),
    "small_sparse_long": (10, 5, 24, [1, -1], [0, 0.5], 0.05, 500),
    "small_dense_short": (6, 8, 24, [1, -1], [0, 0.5], 0.5, 50),
    "small_dense_long": (8, 6, 24, [1, -1], [0, 0.5], 0.5, 500),
    "big_sparse_short": (12, 14, 120, [1, 1, -1, -1], [0, 0, 0.5, 0.5], 0.05, 50),
    "big_sparse_long": (14, 12, 120, [1, 1, -1, -1], [0, 0, 0.5, 0.5], 0.05, 500),
    "big_dense_short": (11, 15, 117, [1, 1, -1, -1], [0, 0, 0.5, 0.5], 0.5, 50),
    "big_dense_long": (15, 11, 117, [1, 1, -1, -1], [0, 0, 0.5, 0.5], 0.5, 500),
}

# docs/fidelity.md §1.4, written out independently of the implementation's table.
DELTAS = {0: (0, 0), 1: (-1, 0), 2: (0, 1), 3: (1, 0), 4: (0, -1), 5: (1, -1), 6: (1, 1), 7: (-1, 1), 8: (-1, -1)}


def seed(a, b=0):
  return tf.constant([a, b], tf.int32)


def state(agent, objects, t):
  return GridState(tf.constant(agent, tf.int32), tf.constant(objects, tf.int32), tf.constant(t, tf.int32))


def noise(b, n, u_term=0.99, u_respawn=0.99, cell=0):
  return GridNoise(
      tf.fill([b, n], tf.constant(u_term, tf.float32)),
      tf.fill([b, n], tf.constant(u_respawn, tf.float32)),
      tf.fill([b, n], tf.constant(cell, tf.int32)),
  )


def interior(rows, cols, r, c):
  return 1 <= r <= rows - 2 and 1 <= c <= cols - 2


def free_cells(rows, cols):
  return [(r, c) for r in range(rows) for c in range(cols) if interior(rows, cols, r, c)]


def rollout(env, num_steps, seed_, policy="random"):
  """Runs num_steps env.step calls in one tf.while_loop; returns final state, rewards, dones [T, B],
    agent positions [T, B, 2] and t [T, B] of the returned states, and an obs checksum."""

  @tf.function
  def run(seed_):
    st = env.reset(tf.random.experimental.stateless_fold_in(seed_, 123456))
    tas = [tf.TensorArray(d, size=num_steps) for d in (tf.float32, tf.float32, tf.int32, tf.int32)]

    def body(i, st, acc, *tas):
      k = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed_, i), 2)
      if policy == "random":
        a = tf.random.stateless_uniform([env.num_envs], k[0], 0, env.num_actions, tf.int32)
      else:
        a = tf.fill([env.num_envs], policy)
      st, obs, r, d = env.step(st, a, k[1])
      w = tf.reshape(tf.range(1, np.prod(env.obs_shape) + 1, dtype=tf.float32), env.obs_shape)
      acc = acc + tf.reduce_sum(obs * w)
      tas = [ta.write(i, x) for ta, x in zip(tas, (r, d, st.agent_pos, st.t))]
      return (i + 1, st, acc, *tas)

    out = tf.while_loop(lambda i, *_: i < num_steps, body, (0, st, 0.0, *tas))
    return out[1], [ta.stack() for ta in out[3:]], out[2]

  st, (r, d, pos, t), acc = run(seed_)
  return st, r.numpy(), d.numpy(), pos.numpy(), t.numpy(), acc.numpy()


# ----------------------------------------------------------------------------------------- registry
def test_all_maps_exist_with_spec_shapes():
  assert set(TABLE) | {"catch"} == set(envs.ENV_NAMES)
  for name, (rows, cols, n_free, rew, pt, pr, horizon) in TABLE.items():
    env = envs.make(name, 3)
    n = len(rew)
    assert env.name == name and env.num_envs == 3 and env.num_actions == 9
    assert env.obs_shape == (n + 1, rows, cols)
    assert env.horizon == horizon
    assert env.num_free_cells == n_free
    assert [o[0] for o in env.spec.objects] == rew
    assert [o[1] for o in env.spec.objects] == pt
    assert all(o[2] == pr for o in env.spec.objects)
    np.testing.assert_array_equal(env._c.free_cells, free_cells(rows, cols))
    obs = env.observe(env.reset(seed(0)))
    assert obs.shape == (3, n + 1, rows, cols) and obs.dtype == tf.float32


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as e:
    envs.make("big_dense_longer", 4)
  for name in envs.ENV_NAMES:
    assert name in str(e.value)


# --------------------------------------------------------------------------------------- movement
def test_action_table():
  env = envs.make("big_dense_short", 9)
  np.testing.assert_array_equal(ACTION_DELTAS, [DELTAS[a] for a in range(9)])
  st = state([[5, 7]] * 9, [[[-1, -1]] * 4] * 9, [0] * 9)
  st2, _, _, _ = env.step(st, tf.range(9), seed(1))
  np.testing.assert_array_equal(st2.agent_pos, [[5 + DELTAS[a][0], 7 + DELTAS[a][1]] for a in range(9)])


@pytest.mark.parametrize("name", ["small_dense_short", "small_sparse_long"])
def test_walls_every_cell_every_action(name):
  rows, cols = TABLE[name][:2]
  cells = free_cells(rows, cols)
  agent = [c for c in cells for _ in range(9)]
  actions = [a for _ in cells for a in range(9)]
  b = len(agent)
  env = envs.make(name, b)
  st = state(agent, [[[-1, -1]] * 2] * b, [0] * b)
  st2, _, _, _ = env.step(st, tf.constant(actions), seed(2))
  expected = []
  for (r, c), a in zip(agent, actions):
    tr, tc = r + DELTAS[a][0], c + DELTAS[a][1]
    expected.append((tr, tc) if interior(rows, cols, tr, tc) else (r, c))
  np.testing.assert_array_equal(st2.agent_pos, expected)


def test_no_sliding_on_diagonals_and_stay():
  env = envs.make("small_dense_short", 6)  # 6x8: interior rows 1..4, cols 1..6
  agent = [[1, 3], [1, 3], [4, 1], [4, 6], [1, 1], [3, 4]]
  actions = [7, 8, 5, 6, 8, 0]  # up-right/up-left into the top wall, down-left/-right into corners
  st = state(agent, [[[-1, -1]] * 2] * 6, [0] * 6)
  st2, _, r, d = env.step(st, tf.constant(actions), seed(3))
  np.testing.assert_array_equal(st2.agent_pos, agent)  # all blocked (no slide to e.g. (1, 4)) or stay
  np.testing.assert_array_equal(r, 0.0)
  np.testing.assert_array_equal(d, 0.0)


# ------------------------------------------------------------------------------------- collection
def test_collect_one_object():
  env = envs.make("small_dense_short", 2)
  st = state([[2, 2], [2, 2]], [[[2, 3], [4, 5]], [[2, 1], [4, 5]]], [7, 7])
  # env 0 collects the + object moving right; env 1 collects nothing.
  nxt, r, term, trunc = env.transition(st, tf.constant([2, 2]), noise(2, 2, u_respawn=0.99))
  np.testing.assert_array_equal(r, [1.0, 0.0])
  np.testing.assert_array_equal(nxt.object_pos, [[[-1, -1], [4, 5]], [[2, 1], [4, 5]]])
  np.testing.assert_array_equal(nxt.agent_pos, [[2, 3], [2, 3]])
  np.testing.assert_array_equal(nxt.t, [8, 8])
  assert not term.numpy().any() and not trunc.numpy().any()
  obs = env.observe(nxt).numpy()
  assert obs[0, 0].sum() == 0 and obs[0, 2, 2, 3] == 1  # absent object not drawn anywhere
  # The collected object respawns in the same step when its draw fires (cell may be the agent's).
  agent_cell = env._c.free_cells.tolist().index([2, 3])
  nxt, r, _, _ = env.transition(st, tf.constant([2, 2]), noise(2, 2, u_respawn=0.3, cell=agent_cell))
  np.testing.assert_array_equal(r, [1.0, 0.0])
  np.testing.assert_array_equal(nxt.object_pos, [[[2, 3], [4, 5]], [[2, 1], [4, 5]]])
  # A negative object terminates iff its draw U <= 0.5.
  st = state([[2, 2], [2, 2]], [[[1, 1], [2, 3]]] * 2, [0, 0])
  un = GridNoise(tf.constant([[0.9, 0.5], [0.9, 0.51]]), tf.ones([2, 2]), tf.zeros([2, 2], tf.int32))
  _, r, term, _ = env.transition(st, tf.constant([2, 2]), un)
  np.testing.assert_array_equal(r, [-1.0, -1.0])
  np.testing.assert_array_equal(term, [True, False])


def test_collect_several_objects_in_one_step():
  env = envs.make("big_dense_short", 4)
  objs = [
      [[3, 3], [3, 3], [3, 3], [6, 6]],  # +1 +1 -1 on the target
      [[3, 3], [3, 3], [6, 6], [7, 7]],  # +1 +1
      [[6, 6], [7, 7], [3, 3], [3, 3]],  # -1 -1
      [[3, 3], [-1, -1], [3, 3], [-1, -1]],  # +1 -1, two absent
  ]
  st = state([[3, 2]] * 4, objs, [0] * 4)
  u_term = tf.constant([[0.9, 0.9, 0.9, 0.9], [0.0001, 0.0001, 0.2, 0.2], [0.1, 0.1, 0.9, 0.3], [0.1, 0.1, 0.6, 0.1]])
  nz = GridNoise(u_term, tf.ones([4, 4]), tf.zeros([4, 4], tf.int32))
  nxt, r, term, trunc = env.transition(st, tf.fill([4], 2), nz)
  np.testing.assert_array_equal(r, [1.0, 2.0, -2.0, 0.0])
  np.testing.assert_array_equal(term, [False, False, True, False])
  gone = [-1, -1]
  np.testing.assert_array_equal(
      nxt.object_pos,
      [[gone, gone, gone, [6, 6]], [gone, gone, [6, 6], [7, 7]], [[6, 6], [7, 7], gone, gone], [gone] * 4],
  )
  # The same through env.step (reward is deterministic given state and action).
  _, _, r2, _ = env.step(st, tf.fill([4], 2), seed(4))
  np.testing.assert_array_equal(r2, [1.0, 2.0, -2.0, 0.0])


def test_absent_objects_never_collected():
  env = envs.make("small_dense_short", 24 * 9)
  cells = free_cells(6, 8)
  agent = [c for c in cells for _ in range(9)]
  st = state(agent, [[[-1, -1]] * 2] * len(agent), [3] * len(agent))
  actions = tf.constant([a for _ in cells for a in range(9)])
  nxt, r, term, _ = env.transition(st, actions, noise(len(agent), 2, u_term=0.0, u_respawn=0.99))
  np.testing.assert_array_equal(r, 0.0)
  assert not term.numpy().any()
  np.testing.assert_array_equal(nxt.object_pos, -1)
  _, _, r, d = env.step(st, actions, seed(5))
  np.testing.assert_array_equal(r, 0.0)
  np.testing.assert_array_equal(d, 0.0)


# ------------------------------------------------------------------------------ horizon and reset
@pytest.mark.parametrize("name", ["small_dense_short", "big_sparse_long"])
def test_horizon_boundary(name):
  env = envs.make(name, 2)
  h = env.horizon
  n = env.num_objects
  far = [[-1, -1]] * n
  st = state([[1, 1], [1, 1]], [far, far], [h - 2, h - 1])
  nxt, _, r, d = env.step(st, tf.constant([0, 0]), seed(6))
  np.testing.assert_array_equal(d, [0.0, 1.0])
  np.testing.assert_array_equal(nxt.t, [h - 1, 0])
  _, _, term, trunc = env.transition(st, tf.constant([0, 0]), noise(2, n))
  np.testing.assert_array_equal(term, [False, False])
  np.testing.assert_array_equal(trunc, [False, True])


@pytest.mark.parametrize("name", ["small_dense_short", "small_dense_long"])
def test_episodes_time_out_at_exactly_horizon(name):
  # With "stay" the present objects never move and are never collected: every episode is a time-out.
  env = envs.make(name, 16)
  h = env.horizon
  _, r, d, pos, t, _ = rollout(env, 2 * h + 1, seed(7), policy=0)
  assert not r.any()
  expected = np.zeros(2 * h + 1)
  expected[[h - 1, 2 * h - 1]] = 1.0
  np.testing.assert_array_equal(d, np.repeat(expected[:, None], 16, axis=1))
  np.testing.assert_array_equal(t[:, 0], [(i + 1) % h for i in range(2 * h + 1)])
  assert (pos[h - 2] != pos[h - 1]).any()  # the auto-reset moved the agents


def test_reward_scaling():
  env = envs.make("small_dense_long", 2, reward_scale=1000.0)
  st = state([[2, 2], [2, 2]], [[[2, 3], [5, 3]], [[5, 3], [2, 3]]], [0, 0])
  _, _, r, _ = env.step(st, tf.constant([2, 2]), seed(8))
  np.testing.assert_array_equal(r, [1000.0, -1000.0])
  _, _, r, _ = envs.make("small_dense_long", 2).step(st, tf.constant([2, 2]), seed(8))
  np.testing.assert_array_equal(r, [1.0, -1.0])


def _check_valid_fresh(env, st):
  agent = np.asarray(st.agent_pos)
  obj = np.asarray(st.object_pos)
  free = set(map(tuple, env._c.free_cells.tolist()))
  allpos = np.concatenate([agent[:, None], obj], axis=1)
  for row in allpos:
    cells = list(map(tuple, row.tolist()))
    assert len(set(cells)) == len(cells) and set(cells) <= free
  np.testing.assert_array_equal(st.t, 0)


def test_auto_reset_gives_fresh_valid_state():
  env = envs.make("big_dense_long", 256)
  h = env.horizon
  st = state([[1, 1]] * 256, [[[-1, -1], [-1, -1], [2, 2], [3, 3]]] * 256, [h - 1] * 256)
  nxt, obs, r, d = env.step(st, tf.zeros([256], tf.int32), seed(9))
  np.testing.assert_array_equal(d, 1.0)
  np.testing.assert_array_equal(r, 0.0)
  _check_valid_fresh(env, nxt)
  np.testing.assert_array_equal(obs, env.observe(nxt))
  assert len({tuple(p) for p in nxt.agent_pos.numpy().tolist()}) > 50  # fresh random, not copies
  # After a termination draw as well: envs that terminated come back fresh, the others carry on.
  st = state([[2, 2]] * 256, [[[9, 9], [9, 8], [2, 3], [9, 7]]] * 256, [5] * 256)
  nxt, obs, r, d = env.step(st, tf.fill([256], 2), seed(10))
  np.testing.assert_array_equal(r, -1.0)
  done = d.numpy() == 1.0
  assert 0 < done.sum() < 256
  _check_valid_fresh(env, GridState(*[x.numpy()[done] for x in nxt]))
  np.testing.assert_array_equal(nxt.t.numpy()[~done], 6)
  np.testing.assert_array_equal(nxt.agent_pos.numpy()[~done], [[2, 3]] * int((~done).sum()))


def test_reset_uniform_and_distinct():
  # Small map: the joint law of (agent, object 0) must be uniform over the 24 * 23 ordered pairs.
  b = 60000
  env = envs.make("small_dense_short", b)
  st = env.reset(seed(11))
  f = env.num_free_cells
  cell_index = {c: i for i, c in enumerate(map(tuple, env._c.free_cells.tolist()))}
  idx = np.array(
      [[cell_index[tuple(p)]
        for p in row]
       for row in np.concatenate([st.agent_pos.numpy()[:, None], st.object_pos.numpy()], 1).tolist()])
  assert (idx[:, 0] != idx[:, 1]).all() and (idx[:, 0] != idx[:, 2]).all() and (idx[:, 1] != idx[:, 2]).all()
  for slot in range(3):  # each slot uniform over the 24 free cells
    counts = np.bincount(idx[:, slot], minlength=f)
    assert stats.chisquare(counts).pvalue > 1e-4, (slot, counts)
  pairs = idx[:, 0] * f + idx[:, 1]
  counts = np.bincount(pairs, minlength=f * f).reshape(f, f)
  assert (np.diag(counts) == 0).all()
  off = counts[~np.eye(f, dtype=bool)]
  assert stats.chisquare(off).pvalue > 1e-4
  # Big map: 5 distinct cells, each slot uniform over the 117 free cells.
  b = 40000
  env = envs.make("big_dense_long", b)
  st = env.reset(seed(12))
  allpos = np.concatenate([st.agent_pos.numpy()[:, None], st.object_pos.numpy()], 1)
  flat = allpos[..., 0] * 11 + allpos[..., 1]
  assert (np.sort(flat, axis=1)[:, 1:] != np.sort(flat, axis=1)[:, :-1]).all()
  assert all(interior(15, 11, r, c) for r, c in allpos.reshape(-1, 2)[:2000].tolist())
  assert ((allpos[..., 0] >= 1) & (allpos[..., 0] <= 13) & (allpos[..., 1] >= 1) & (allpos[..., 1] <= 9)).all()
  for slot in range(5):
    counts = np.bincount(flat[:, slot], minlength=15 * 11)
    counts = counts[[r * 11 + c for r, c in free_cells(15, 11)]]
    assert counts.sum() == b
    assert stats.chisquare(counts).pvalue > 1e-4, slot


# -------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("name,p", [("small_dense_long", 0.5), ("big_sparse_short", 0.05)])
def test_respawn_frequency(name, p):
  b = 40000
  env = envs.make(name, b)
  n = env.num_objects
  st = state([[1, 1]] * b, [[[-1, -1]] * n] * b, [0] * b)
  nxt, _, r, d = env.step(st, tf.zeros([b], tf.int32), seed(13))
  np.testing.assert_array_equal(r, 0.0)
  np.testing.assert_array_equal(d, 0.0)
  obj = nxt.object_pos.numpy()
  present = obj[..., 0] >= 0
  tol = 5 * np.sqrt(p * (1 - p) / b)  # 5 standard errors
  for i in range(n):
    assert abs(present[:, i].mean() - p) < tol, (i, present[:, i].mean())
  # Respawn cells: uniform over the free cells (the agent's cell included).
  rows, cols = env.rows, env.cols
  cells = obj[present]
  assert all(interior(rows, cols, r_, c_) for r_, c_ in cells.tolist())
  counts = np.bincount(cells[:, 0] * cols + cells[:, 1], minlength=rows * cols)
  counts = counts[[r_ * cols + c_ for r_, c_ in free_cells(rows, cols)]]
  assert counts[0] > 0  # cell (1, 1) is the agent's
  assert stats.chisquare(counts).pvalue > 1e-4
  # An object collected in this very step gets its respawn draw too.
  st = state([[1, 1]] * b, [[[1, 2]] + [[-1, -1]] * (n - 1)] * b, [0] * b)
  nxt, _, r, d = env.step(st, tf.fill([b], 2), seed(14))
  np.testing.assert_array_equal(r, 1.0)
  np.testing.assert_array_equal(d, 0.0)  # positive objects have p_term 0
  back = nxt.object_pos.numpy()[:, 0, 0] >= 0
  assert abs(back.mean() - p) < tol, back.mean()


def test_termination_frequency_after_negative_object():
  b = 40000
  env = envs.make("small_dense_long", b)
  st = state([[3, 2]] * b, [[[1, 1], [3, 3]]] * b, [0] * b)
  _, _, r, d = env.step(st, tf.fill([b], 2), seed(15))
  np.testing.assert_array_equal(r, -1.0)
  tol = 5 * np.sqrt(0.25 / b)
  assert abs(d.numpy().mean() - 0.5) < tol, d.numpy().mean()
  # Positive objects (p_term 0) never terminate.
  st = state([[3, 2]] * b, [[[3, 3], [1, 1]]] * b, [0] * b)
  _, _, r, d = env.step(st, tf.fill([b], 2), seed(16))
  np.testing.assert_array_equal(r, 1.0)
  assert d.numpy().sum() == 0


# ---------------------------------------------------------------------- determinism and graphs
def test_determinism_same_seed_identical_different_seed_differs():
  env = envs.make("big_dense_long", 64)
  a = rollout(env, 60, seed(17, 1))
  b = rollout(env, 60, seed(17, 1))
  c = rollout(env, 60, seed(17, 2))
  for x, y in zip(a[1:], b[1:]):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(a[0], b[0]):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[3], c[3])
  assert not np.array_equal(a[1], c[1]) or not np.array_equal(a[2], c[2])
  # step() and reset() themselves: same seed same output, different seed different output.
  s1 = env.reset(seed(3, 4))
  np.testing.assert_array_equal(s1.object_pos, env.reset(seed(3, 4)).object_pos)
  assert not np.array_equal(s1.object_pos, env.reset(seed(4, 3)).object_pos)


def test_random_rollout_invariants():
  # A long random-policy rollout on a dense map: positions always on free cells, rewards are sums of
  # the object rewards, t counts steps since the last done.
  env = envs.make("small_dense_short", 32)
  _, r, d, pos, t, _ = rollout(env, 300, seed(18))
  assert ((pos[..., 0] >= 1) & (pos[..., 0] <= 4) & (pos[..., 1] >= 1) & (pos[..., 1] <= 6)).all()
  assert set(np.unique(r).tolist()) <= {-1.0, 0.0, 1.0}
  assert (r != 0).any() and (d == 1).any()
  prev_t = np.concatenate([np.zeros((1, 32), np.int32), t[:-1]])
  np.testing.assert_array_equal(t, np.where(d == 1, 0, prev_t + 1))
  # A done before the horizon needs a collected negative object.
  early = (d == 1) & (prev_t + 1 < env.horizon)
  assert (r[early] <= 0).all() and (r[early] < 0).any()  # 0 when a + and a - object share the cell


def test_xla_compiles_and_is_deterministic():
  env = envs.make("big_dense_short", 8)

  @tf.function(jit_compile=True)
  def two_steps(s):
    st = env.reset(s)
    st, obs, r, d = env.step(st, tf.fill([8], 3), tf.random.experimental.stateless_fold_in(s, 1))
    st, obs, r, d = env.step(st, tf.fill([8], 2), tf.random.experimental.stateless_fold_in(s, 2))
    return st, obs, r, d

  out1 = two_steps(seed(19))
  out2 = two_steps(seed(19))
  tf.nest.map_structure(np.testing.assert_array_equal, out1, out2)
  np.testing.assert_array_equal(out1[1], env.observe(out1[0]))
  np.testing.assert_array_equal(out1[0].t, 2)


# ---------------------------------------------------------------------------------- observation
def test_observation_layout_by_hand():
  env = envs.make("big_dense_long", 2)
  st = state([[1, 1], [13, 9]], [[[2, 3], [-1, -1], [2, 3], [13, 9]], [[-1, -1]] * 4], [0, 0])
  obs = env.observe(st).numpy()
  assert obs.shape == (2, 5, 15, 11) and obs.dtype == np.float32
  expected = np.zeros((2, 5, 15, 11), np.float32)
  expected[0, 0, 2, 3] = expected[0, 2, 2, 3] = expected[0, 3, 13, 9] = expected[0, 4, 1, 1] = 1
  expected[1, 4, 13, 9] = 1
  np.testing.assert_array_equal(obs, expected)


def _decode_grid(o):
  n = o.shape[0] - 1
  agent = np.argwhere(o[n])[0].tolist()
  objs = [np.argwhere(o[i])[0].tolist() if o[i].any() else [-1, -1] for i in range(n)]
  return agent, objs


@pytest.mark.parametrize("name", ["small_dense_long", "big_dense_long"])
def test_golden_observations_layout_and_replay(name):
  g = np.load(GOLDEN)
  gobs, gact = g[f"{name}/obs"], g[f"{name}/action"]
  env = envs.make(name, 1)
  assert gobs.shape[1:] == env.obs_shape and gobs.dtype == np.float32
  n = env.num_objects
  # Conventions of the official observations: one agent pixel in the last channel, object pixels in
  # channels 0..N-1, values in {0, 1}, empty wall border.
  assert set(np.unique(gobs).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(gobs[:, n].sum(axis=(1, 2)), 1.0)
  assert (gobs[:, :n].sum(axis=(2, 3)) <= 1).all()
  border = np.ones(env.obs_shape[1:], bool)
  border[1:-1, 1:-1] = False
  assert not gobs[:, :, border].any()
  # Re-render each official observation from its decoded state, and replay the official actions: in
  # this trajectory no object is collected, so the next observation is fully determined.
  for k in range(len(gobs)):
    agent, objs = _decode_grid(gobs[k])
    np.testing.assert_array_equal(env.observe(state([agent], [objs], [0]))[0], gobs[k])
  agent, objs = _decode_grid(gobs[0])
  st = state([agent], [objs], [0])
  for k in range(len(gact)):
    st, obs, r, d = env.step(st, tf.constant([gact[k]]), seed(20, k))
    assert float(r[0]) == 0.0 and float(d[0]) == 0.0
    np.testing.assert_array_equal(obs[0], gobs[k + 1], err_msg=f"step {k}")
