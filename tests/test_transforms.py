"""optimizers.transforms: the agent-gradient clip composed with an optimizer, ``chain(clip(c), opt)``."""

import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import transforms

GRADS = [tf.constant([[-3.0, 0.5, 2.0]]), tf.constant([[0.25], [-1.5]])]


def test_clip_is_elementwise_and_off_at_zero_or_below():
  clipped = transforms.clip(1.0)(GRADS)
  np.testing.assert_array_equal(clipped[0], [[-1.0, 0.5, 1.0]])
  np.testing.assert_array_equal(clipped[1], [[0.25], [-1.0]])
  for off in (0.0, -1.0, None):
    out = transforms.clip(off)(GRADS)
    assert all(a is b for a, b in zip(out, GRADS))


def test_chained_agent_optimizer_updates_with_the_clipped_gradient():
  plain = transforms.make_agent_optimizer("adam", 0.1)
  clipped = transforms.make_agent_optimizer("adam", 0.1, grad_clip=1.0)
  assert isinstance(clipped, transforms.AgentOptimizer) and clipped.name == "adam"
  params = [tf.zeros_like(g) for g in GRADS]
  state = plain.init(params)
  want, want_state = plain.update(transforms.clip(1.0)(GRADS), state, params=params)
  got, got_state = clipped.update(GRADS, clipped.init(params), params=params)
  for a, b in zip(tf.nest.flatten((want, want_state)), tf.nest.flatten((got, got_state))):
    np.testing.assert_array_equal(a, b)
  _, unclipped_state = plain.update(GRADS, state, params=params)
  assert not np.array_equal(unclipped_state[0][1], got_state[0][1])  # the first moment saw the clipped -3


class _MetaStyleOptimizer:
  """The meta-training optimizers' interface: update(grads, opt_state, params, learning_rate)."""
  second_order = True

  def init(self, params):
    return tf.constant(0)

  def update(self, grads, opt_state, params, learning_rate):
    return [-learning_rate * g for g in grads], opt_state + 1


def test_chain_wraps_any_optimizer_keeping_its_state_and_attributes():
  opt = transforms.chain(transforms.clip(0.5), _MetaStyleOptimizer())
  assert opt.second_order is True and int(opt.init(GRADS)) == 0
  updates, state = opt.update(GRADS, tf.constant(3), None, 2.0)
  np.testing.assert_array_equal(updates[0], [[1.0, -1.0, -1.0]])
  np.testing.assert_array_equal(updates[1], [[-0.5], [1.0]])
  assert int(state) == 4
