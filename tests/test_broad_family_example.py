"""examples/broad_family.py: CartPole written as an in-graph TF environment follows gymnasium's CartPole-v1,
and the family (gridworlds, Catch, CartPole) is meta-trained by one MetaTrainer on a shared phi."""

import csv
import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from examples import broad_family
from optim4rl_tf.envs import base
from optim4rl_tf.optimizers import meta_params as meta_params_lib


def test_cartpole_steps_as_gymnasium_does():
  """From the same 256 states (some past the limits), both actions: the next state agrees with gymnasium's
  to float32 rounding, and the episode ends exactly where gymnasium's terminates."""
  rng = np.random.default_rng(0)
  states = rng.uniform(-1, 1, size=(256, 4)) * np.array([2.5, 2.0, 0.25, 2.0])
  env = gym.make("CartPole-v1").unwrapped
  env.reset(seed=0)
  tf_env = broad_family.CartPole(len(states))
  for action in (0, 1):
    ours = broad_family.CartPole.dynamics(tf.constant(states, tf.float32), tf.fill([len(states)], action)).numpy()
    expected, terminated = [], []
    for s in states.astype(np.float32):
      env.state, env.steps_beyond_terminated = s.astype(np.float64), None
      obs, reward, term, trunc, _ = env.step(action)
      assert reward == 1.0 and not trunc
      expected.append(obs)
      terminated.append(term)
    np.testing.assert_allclose(ours, np.array(expected), rtol=1e-5, atol=1e-6)
    state = broad_family.CartPoleState(tf.constant(states, tf.float32), tf.zeros([len(states)], tf.int32))
    _, _, reward, done = tf_env.step(state, tf.fill([len(states)], action), tf.constant([1, 2]))
    assert 0 < sum(terminated) < len(states)
    np.testing.assert_array_equal(done.numpy(), np.array(terminated, np.float32))
    np.testing.assert_array_equal(reward.numpy(), np.ones(len(states), np.float32))


def test_cartpole_resets_fresh_episodes_and_truncates_at_500_steps():
  env = broad_family.CartPole(64, reward_scale=0.1)
  assert isinstance(env, base.DiscreteEnv)
  state = env.reset(tf.constant([3, 4]))
  x = env.observe(state).numpy()
  assert x.shape == (64, 4) and np.all(np.abs(x) < broad_family.RESET_RANGE) and np.unique(x).size == x.size
  np.testing.assert_array_equal(env.observe(env.reset(5)).numpy(), env.observe(env.reset(tf.constant([0, 5]))).numpy())
  # A state at step 499 that does not terminate is truncated by the step, and the env starts again.
  state = broad_family.CartPoleState(tf.zeros([64, 4]), tf.fill([64], 499))
  nxt, obs, reward, done = env.step(state, tf.zeros([64], tf.int32), tf.constant([5, 6]))
  np.testing.assert_array_equal(done.numpy(), np.ones(64, np.float32))
  np.testing.assert_allclose(reward.numpy(), np.full(64, 0.1, np.float32))
  assert np.all(nxt.t.numpy() == 0) and np.all(np.abs(obs.numpy()) < broad_family.RESET_RANGE)
  # A step from a fresh state goes on.
  nxt, _, _, done = env.step(env.reset(tf.constant([1, 1])), tf.ones([64], tf.int32), tf.constant([7, 8]))
  assert not done.numpy().any() and np.all(nxt.t.numpy() == 1)


@pytest.mark.slow(20)
def test_the_family_meta_trains_one_phi(tmp_path):
  workdir = str(tmp_path / "family")
  args = [f"--workdir={workdir}", "--tasks=catch,cartpole", "--units=2", "--reset_interval=2", "--seed=1"]
  result = broad_family.main(args + ["--iterations=2"])
  assert result["iterations"] == 2 and result["tasks"] == ["catch", "cartpole"]
  _, phi0 = meta_params_lib.resolve("optim4rl", None, mlp_dims=(), hidden_size=8, seed=1)
  _, saved = meta_params_lib.resolve("optim4rl", result["phi_path"])
  assert any(not np.array_equal(saved[k], phi0[k]) for k in phi0)  # the shared phi moved
  with open(os.path.join(workdir, broad_family.METRICS_FILE), newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["iteration"] for r in rows] == ["1", "2"]
  assert all(np.isfinite(float(r[f"{n}/meta_loss"])) for r in rows for n in ("catch", "cartpole"))


def test_the_metrics_file_of_a_resumed_run_reads_like_an_unbroken_one(tmp_path):
  """A run killed after iteration 5 whose last checkpoint is iteration 3 goes on from 3: rows 4 and 5 are
  dropped, and the iterations it makes again are appended once; a new metric adds a column."""
  path = str(tmp_path / broad_family.METRICS_FILE)
  rows = []
  for t in range(1, 6):
    rows = broad_family.append_row(path, rows, t, {"a/meta_loss": 0.5 * t})
  rows = broad_family.keep_rows_through(path, 3)
  for t in (4, 5):
    rows = broad_family.append_row(path, rows, t, {"a/meta_loss": 10.0 * t, "b/meta_loss": 1.0})
  with open(path, newline="") as f:
    got = list(csv.DictReader(f))
  assert [r["iteration"] for r in got] == ["1", "2", "3", "4", "5"]
  assert [float(r["a/meta_loss"]) for r in got] == [0.5, 1.0, 1.5, 40.0, 50.0]
  assert [r["b/meta_loss"] for r in got] == ["", "", "", "1", "1"]
  assert broad_family.keep_rows_through(str(tmp_path / "none.csv"), 3) == []


def test_unknown_tasks_are_one_clear_error(capsys):
  with pytest.raises(SystemExit):
    broad_family.parse_args(["--workdir=x", "--tasks=catch,acrobot"])
  assert "--tasks must name tasks of the family" in capsys.readouterr().err
