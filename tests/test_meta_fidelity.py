"""Meta-training follows the official parameterisation: Keras's duplicated GRU biases do not move."""

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.configs import meta_a2c as meta_configs
from optim4rl_tf.meta import meta_grads
from optim4rl_tf.meta import trainer as trainer_lib


def _tiny(iterations=2):
  c = meta_configs.get_config("catch")
  c.tasks[0].num_units = 2
  c.rollout_steps = 5
  c.inner_updates = 2
  c.num_iterations = iterations
  c.reset_interval = 2
  c.optimizer.mlp_dims = (4,)
  c.meta_grad_clip = -1.0
  c.meta_grad_norm = -1.0
  return c


def test_mask_covers_exactly_the_recurrent_z_and_r_biases():
  shapes = {"rnn1/kernel": (1, 24), "rnn1/recurrent_kernel": (8, 24), "rnn1/bias": (2, 24), "mlp1/out/bias": (2,)}
  masks = meta_grads.redundant_gru_bias_masks(shapes)
  assert sorted(masks) == ["rnn1/bias"]
  expected = np.ones((2, 24), np.float32)
  expected[1, :16] = 0.0
  np.testing.assert_array_equal(masks["rnn1/bias"].numpy(), expected)


@pytest.mark.slow(9)
def test_redundant_gru_biases_get_no_meta_gradient_and_stay_zero():
  trainer = trainer_lib.MetaTrainer(_tiny())
  phi0 = trainer.meta_params()
  bias_keys = [
      k for k in trainer.keys if k.endswith("/bias") and k.replace("/bias", "/recurrent_kernel") in trainer.keys
  ]
  assert bias_keys, trainer.keys
  trainer.train()
  phi = trainer.meta_params()
  for k in bias_keys:
    np.testing.assert_array_equal(phi[k][1, :16], phi0[k][1, :16])  # the redundant entries never move
    assert np.any(phi[k][0, :16] != phi0[k][0, :16])  # the input z/r biases do
    assert np.any(phi[k][1, 16:] != phi0[k][1, 16:])  # the candidate's recurrent bias too


def test_the_norm_counts_each_effective_bias_once():
  """A gradient that puts equal mass on both copies of a z/r bias counts it once in the global norm."""
  trainer = trainer_lib.MetaTrainer(_tiny())
  grads = {k: tf.zeros(v.shape) for k, v in zip(trainer.keys, trainer.phi)}
  key = next(k for k in trainer.keys if k.endswith("rnn1/bias"))
  grads[key] = tf.tensor_scatter_nd_update(grads[key], [[0, 0], [1, 0]], [3.0, 3.0])
  _, norm = trainer._combine([grads])
  np.testing.assert_allclose(norm.numpy(), 3.0, rtol=1e-6)
