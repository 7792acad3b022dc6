"""Tests of the batched in-graph Catch against docs/fidelity.md §2."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from scipy import stats

from conftest import GOLDEN_DIR
from optim4rl_tf import envs
from optim4rl_tf.envs.catch import CatchState

GOLDEN = os.path.join(GOLDEN_DIR, "a2c_loss_golden.npz")


def seed(a, b=0):
  return tf.constant([a, b], tf.int32)


def cstate(ball_row, ball_col, paddle_col):
  b = len(ball_row)
  return CatchState(
      tf.constant(ball_row, tf.int32),
      tf.constant(ball_col, tf.int32),
      tf.fill([b], 9),
      tf.constant(paddle_col, tf.int32),
  )


def rollout(env, num_steps, seed_, policy="random"):

  @tf.function
  def run(seed_):
    st = env.reset(tf.random.experimental.stateless_fold_in(seed_, 99))
    tas = [tf.TensorArray(tf.float32, size=num_steps) for _ in range(3)]

    def body(i, st, *tas):
      k = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed_, i), 2)
      if policy == "random":
        a = tf.random.stateless_uniform([env.num_envs], k[0], 0, 3, tf.int32)
      else:
        a = tf.fill([env.num_envs], policy)
      st, obs, r, d = env.step(st, a, k[1])
      bc = tf.cast(st.ball_col, tf.float32)
      return (i + 1, st, *[ta.write(i, x) for ta, x in zip(tas, (r, d, bc))])

    out = tf.while_loop(lambda i, *_: i < num_steps, body, (0, st, *tas))
    return [ta.stack() for ta in out[2:]]

  return [x.numpy() for x in run(seed_)]


def test_interface_and_reset():
  env = envs.make("catch", 5000)
  assert env.name == "catch" and env.num_actions == 3 and env.obs_shape == (10, 5, 1)
  st = env.reset(seed(1))
  np.testing.assert_array_equal(st.ball_row, 0)
  np.testing.assert_array_equal(st.paddle_row, 9)
  np.testing.assert_array_equal(st.paddle_col, 2)
  counts = np.bincount(st.ball_col.numpy(), minlength=5)
  assert counts.sum() == 5000 and stats.chisquare(counts).pvalue > 1e-4
  obs = env.observe(st).numpy()
  assert obs.shape == (5000, 10, 5, 1) and obs.dtype == np.float32
  np.testing.assert_array_equal(obs.sum(axis=(1, 2, 3)), 2.0)
  np.testing.assert_array_equal(obs[:, 9, 2, 0], 1.0)
  np.testing.assert_array_equal(obs[np.arange(5000), 0, st.ball_col.numpy(), 0], 1.0)


def test_paddle_moves_then_ball_falls():
  env = envs.make("catch", 6)
  st = cstate([0, 3, 5, 0, 2, 7], [1, 1, 1, 4, 0, 2], [0, 0, 2, 4, 4, 2])
  nxt, obs, r, d = env.step(st, tf.constant([0, 2, 1, 2, 0, 1]), seed(2))
  np.testing.assert_array_equal(nxt.paddle_col, [0, 1, 2, 4, 3, 2])  # clipped at both sides
  np.testing.assert_array_equal(nxt.ball_row, [1, 4, 6, 1, 3, 8])
  np.testing.assert_array_equal(nxt.ball_col, [1, 1, 1, 4, 0, 2])
  np.testing.assert_array_equal(r, 0.0)
  np.testing.assert_array_equal(d, 0.0)
  expected = np.zeros((6, 10, 5, 1), np.float32)
  for i in range(6):
    expected[i, nxt.ball_row[i], nxt.ball_col[i], 0] = 1
    expected[i, 9, nxt.paddle_col[i], 0] = 1
  np.testing.assert_array_equal(obs, expected)


def test_landing_reward_uses_paddle_after_move_and_auto_resets():
  env = envs.make("catch", 4)
  st = cstate([8, 8, 8, 8], [1, 1, 3, 0], [2, 1, 3, 1])
  nxt, obs, r, d = env.step(st, tf.constant([0, 1, 2, 1]), seed(3))
  np.testing.assert_array_equal(r, [1.0, 1.0, -1.0, -1.0])
  np.testing.assert_array_equal(d, 1.0)
  np.testing.assert_array_equal(nxt.ball_row, 0)
  np.testing.assert_array_equal(nxt.paddle_col, 2)
  np.testing.assert_array_equal(obs, env.observe(nxt))
  # Without auto-reset the terminal state has the ball on row 9.
  term_state, r, term, trunc = env.transition(st, tf.constant([0, 1, 2, 1]))
  np.testing.assert_array_equal(term_state.ball_row, 9)
  np.testing.assert_array_equal(term, True)
  np.testing.assert_array_equal(trunc, False)
  # Reward scaling (not used by the paper for Catch, but part of the common interface).
  _, _, r, _ = envs.make("catch", 4, reward_scale=2.0).step(st, tf.constant([0, 1, 2, 1]), seed(3))
  np.testing.assert_array_equal(r, [2.0, 2.0, -2.0, -2.0])


def test_episodes_last_exactly_9_steps_and_random_mean_return():
  b = 20000
  env = envs.make("catch", b)
  r, d, _ = rollout(env, 27, seed(4))
  expected = np.zeros(27)
  expected[[8, 17, 26]] = 1
  np.testing.assert_array_equal(d, np.repeat(expected[:, None], b, axis=1))
  np.testing.assert_array_equal(r[d == 0], 0.0)
  assert set(np.unique(r[d == 1]).tolist()) == {-1.0, 1.0}
  returns = r.sum(axis=0) / 3  # 3 episodes per env
  # A policy that ignores the ball catches 1/5 of the balls: mean return -0.6, std 0.8 per episode.
  tol = 5 * 0.8 / np.sqrt(3 * b)
  assert abs(returns.mean() + 0.6) < tol, returns.mean()
  # "Stay" catches exactly the balls that start in column 2.
  r, d, bc = rollout(env, 9, seed(5), policy=1)
  assert abs(r[8].mean() + 0.6) < 5 * 0.8 / np.sqrt(b)


def test_determinism():
  env = envs.make("catch", 64)
  a = rollout(env, 30, seed(6, 1))
  b = rollout(env, 30, seed(6, 1))
  c = rollout(env, 30, seed(6, 2))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])


def test_golden_observations_layout_and_replay():
  g = np.load(GOLDEN)
  gobs, gact = g["catch/obs"], g["catch/action"]
  assert gobs.shape == (21, 10, 5, 1) and gobs.dtype == np.float32
  assert set(np.unique(gobs).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(gobs[:, 9].sum(axis=(1, 2)), 1.0)  # paddle pixel in the last row
  np.testing.assert_array_equal(gobs[:, :9].sum(axis=(1, 2, 3)), 1.0)  # ball above it
  env = envs.make("catch", 1)

  def decode(o):
    (br, bc), = np.argwhere(o[:9, :, 0])
    (pc,), = np.argwhere(o[9, :, 0])
    return cstate([br], [bc], [pc])

  st = decode(gobs[0])
  np.testing.assert_array_equal(env.observe(st)[0], gobs[0])
  dones = []
  for k in range(len(gact)):
    st, obs, r, d = env.step(st, tf.constant([gact[k]]), seed(7, k))
    if d[0] == 1.0:
      dones.append(k)
      assert r[0] == g["catch/reward"][k]  # +1 / -1 of the official landing
      assert gobs[k + 1][0].sum() == 1 and gobs[k + 1][9, 2, 0] == 1  # official reset observation
      st = decode(gobs[k + 1])  # continue from the official reset ball column
    else:
      assert r[0] == 0.0
      np.testing.assert_array_equal(obs[0], gobs[k + 1], err_msg=f"step {k}")
  assert dones == [8, 17]
