"""agents/acting.py: the one rollout steps any protocol env with the documented keys and layout."""

import numpy as np
import tensorflow as tf

from optim4rl_tf.agents import acting
from optim4rl_tf.envs import registry


def test_generate_unroll_is_the_documented_sequence_of_steps():
  env = registry.make("small_dense_short", 4)
  key = tf.constant([5, 9])

  def actor(obs, step_key, count):  # action from the key (as a sampler would), carry counts the steps
    a = tf.random.stateless_uniform([4], tf.random.experimental.stateless_split(step_key, 2)[0], 0, 9, tf.int32)
    return a, (a, tf.reduce_sum(obs, axis=[1, 2, 3])), count + 1

  state0 = env.reset(tf.constant([1, 2]))
  obs0 = env.observe(state0)
  unroll, state, obs, count = acting.generate_unroll(env,
                                                     state0,
                                                     obs0,
                                                     actor,
                                                     key,
                                                     6,
                                                     record_dtypes=(tf.int32, tf.float32),
                                                     carry=tf.constant(0),
                                                     extras_fn=lambda s: (s.t,))
  assert int(count) == 6
  assert unroll.obs.shape == (7, 4) + env.obs_shape and unroll.reward.shape == unroll.done.shape == (6, 4)
  # The same steps by hand: k_t = fold_in(key, t); the env steps with split(k_t, 2)[1].
  s, o = state0, obs0
  for t in range(6):
    k = tf.random.experimental.stateless_fold_in(key, t)
    a, _, _ = actor(o, k, 0)
    np.testing.assert_array_equal(unroll.obs[t], o)
    np.testing.assert_array_equal(unroll.record[0][t], a)
    np.testing.assert_array_equal(unroll.record[1][t], tf.reduce_sum(o, axis=[1, 2, 3]))
    s, o, r, d = env.step(s, a, tf.random.experimental.stateless_split(k, 2)[1])
    np.testing.assert_array_equal(unroll.reward[t], r)
    np.testing.assert_array_equal(unroll.done[t], d)
    np.testing.assert_array_equal(unroll.extras[0][t], s.t)
  np.testing.assert_array_equal(unroll.obs[6], o)
  np.testing.assert_array_equal(obs, o)
  for x, y in zip(state, s):
    np.testing.assert_array_equal(x, y)
