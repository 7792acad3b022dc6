"""Classical optimizers as pure, coordinatewise functions (optax semantics, docs/fidelity.md §0.2).

These run on agent parameters that carry a leading unit axis: every formula is elementwise, and the
only shared quantity is Adam's step counter (all units step together), so S agents update in one call.

State layout (nested tuples of tensors, shapes as the parameter ``p`` of shape ``S``):
  * rmsprop: ``(nu,)`` with ``nu`` of shape ``S``.
  * adam:    ``(count, mu, nu)`` with ``count`` a scalar int32.
"""

import tensorflow as tf


def rmsprop_init(param):
  """Returns the RMSProp state for one parameter tensor: ``(nu,)`` zeros like ``param``."""
  return (tf.zeros_like(param),)


def rmsprop_update(state, g, learning_rate, decay=0.9, eps=1e-8):
  """optax.rmsprop: nu <- decay*nu + (1-decay)*g^2; update = -lr * g / sqrt(nu + eps) (eps inside)."""
  (nu,) = state
  nu = decay * nu + (1.0 - decay) * tf.square(g)
  return -learning_rate * g * tf.math.rsqrt(nu + eps), (nu,)


def adam_init(param):
  """Returns the Adam state for one parameter tensor: ``(count, mu, nu)``."""
  return (tf.zeros([], tf.int32), tf.zeros_like(param), tf.zeros_like(param))


def adam_update(state, g, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  """optax.adam: bias-corrected moments; update = -lr * m_hat / (sqrt(v_hat) + eps)."""
  count, mu, nu = state
  count = count + 1
  mu = b1 * mu + (1.0 - b1) * g
  nu = b2 * nu + (1.0 - b2) * tf.square(g)
  t = tf.cast(count, g.dtype)
  mu_hat = mu / (1.0 - tf.pow(b1, t))
  nu_hat = nu / (1.0 - tf.pow(b2, t))
  return -learning_rate * mu_hat / (tf.sqrt(nu_hat) + eps), (count, mu, nu)
