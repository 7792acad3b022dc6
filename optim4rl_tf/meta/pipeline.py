"""Pipeline training (notes §5.2, §13 item 4): which training units are re-initialised when.

n units, reset interval m (in OUTER iterations). Unit j has reset index r_j = int(linspace(0, m-1, n)[j])
(truncation toward zero). At the start of outer iteration t (t = 1..T) unit j is re-initialised iff
(t - 1) mod m == r_j: new random agent, zero optimizer hidden state, fresh environment. All units are
initialised together before t = 1 (ages spread out only after the first m iterations).

Without pipeline training (``m <= 0``), units are never reset.
"""

import numpy as np
import tensorflow as tf


def reset_indices(num_units, reset_interval):
  """r_j for every unit: int32 [n]; all -1 (never reset) when ``reset_interval <= 0``."""
  if num_units <= 0:
    raise ValueError(f"num_units must be positive, got {num_units}")
  if reset_interval is None or reset_interval <= 0:
    return np.full([num_units], -1, np.int32)
  return np.linspace(0, reset_interval - 1, num_units).astype(np.int32)


def reset_mask(iteration, indices, reset_interval):
  """bool [n]: the units re-initialised at the start of outer iteration ``iteration`` (1-based).

  Works on Python ints / numpy and on tensors (inside ``tf.function``)."""
  if reset_interval is None or reset_interval <= 0:
    return tf.zeros(tf.shape(indices), tf.bool)
  phase = tf.math.floormod(tf.cast(iteration, tf.int32) - 1, reset_interval)
  return tf.equal(tf.cast(indices, tf.int32), phase)


def select_units(mask, fresh, old):
  """Per-unit choice between two nested structures of tensors with leading unit axis [n, ...]."""
  def pick(a, b):
    m = tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([tf.rank(a) - 1], tf.int32)], 0))
    return tf.where(m, a, b)
  return tf.nest.map_structure(pick, fresh, old)
