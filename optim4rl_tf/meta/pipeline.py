"""Pipeline training (docs/fidelity.md §5.2): which training units are re-initialised when.

n units, reset interval m (in OUTER iterations). Unit j has reset index r_j = int(linspace(0, m-1, n)[j])
(truncation toward zero). At the start of outer iteration t (t = 1..T) unit j is re-initialised iff
(t - 1) mod m == r_j: new random agent, zero optimizer hidden state, fresh environment. All units are
initialised together before t = 1 (ages spread out only after the first m iterations).

Without pipeline training (``m <= 0``), units are never reset.

The learner owns the schedule and applies ONE reset to any problem (``reset``): fresh units from the
problem's ``init_units`` replace the due ones, field by field on each field's declared unit axis
(``InnerProblem.unit_axes``; the optimizer's for ``opt_state``: 1 for feature-major [H, U, P] hidden
states), in blocks of k for fields with k * U entries on that axis (E environments per unit, unit-major).

Divergence guard (``all_sane``, ``or_zeros``): agent parameters with a non-finite entry or one with
``|x| > meta_params.ABSURD`` (1e15), and phi with one beyond ``meta_params.PHI_LIMIT`` (1e6), count as diverged. A diverged unit must never reach the action sampler (NaN logits
make it return an out-of-range action); the meta-trainer skips such an iteration instead.
"""

import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import meta_params


def all_sane(tensors, limit=meta_params.ABSURD):
  """Scalar bool tensor: every floating entry of the nested ``tensors`` is finite with |x| <= ``limit``
  (``meta_params.ABSURD`` for agent parameters, ``meta_params.PHI_LIMIT`` for phi)."""
  flags = [tf.reduce_all(tf.abs(x) <= limit) for x in tf.nest.flatten(tensors) if tf.as_dtype(x.dtype).is_floating
          ]  # NaN <= limit is False, like inf
  return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def or_zeros(ok, tensors):
  """``tensors`` if ``ok`` else zeros like them (a harmless stand-in for diverged agent parameters). The zeros
  are a broadcast scalar, not ``zeros_like``: grappler folds that into a full-size constant the compiled step
  would keep for its lifetime."""
  zeros = lambda x: tf.broadcast_to(tf.zeros([], x.dtype), tf.shape(x))
  return tf.cond(ok, lambda: tensors, lambda: tf.nest.map_structure(zeros, tensors))


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


def _splat_value(x):
  """The value of a graph tensor filled with one constant (``tf.zeros``/``tf.fill`` of a static value, e.g.
  fresh optimizer hidden states), else None."""
  if getattr(x, "op", None) is None or x.op.type != "Fill":
    return None
  return tf.get_static_value(x.op.inputs[1])


def _unit_select(mask, num_units, axis, fresh, old):
  """``fresh`` where ``mask`` (bool [U]) on ``axis`` of ``old`` ([..., k * U, ...]; k entries per unit).

  A ``fresh`` filled with one constant is selected as that scalar: grappler would otherwise fold the fill
  into a constant of the full size that the compiled step keeps for its lifetime (the zero hidden states of
  grid6's six tasks at 512 units: about 5 GB held for nothing). Same numbers either way."""
  size = old.shape[axis]
  if size is None or size % num_units:
    raise ValueError(f"a unit-state tensor of shape {old.shape} has no {num_units} units (or multiples) on axis "
                     f"{axis}: declare its field's unit axis in the problem's unit_axes")
  m = mask if size == num_units else tf.repeat(mask, size // num_units)
  shape = [1] * old.shape.rank
  shape[axis] = size
  value = _splat_value(fresh)
  if value is not None:
    fresh = tf.constant(value, old.dtype)
  return tf.where(tf.reshape(m, shape), fresh, old)


def reset(units, fresh_fn, mask, num_units, unit_axes=None):
  """``units`` with the units of ``mask`` (bool [U]) replaced by those of ``fresh_fn()`` (built only when
  some unit is due). ``unit_axes``: {field: unit axis} of a NamedTuple unit state (others: 0)."""
  axes = dict(unit_axes or {})

  def select():
    fresh = fresh_fn()
    if not hasattr(units, "_fields"):
      return tf.nest.map_structure(lambda f, o: _unit_select(mask, num_units, 0, f, o), fresh, units)
    return type(units)(*[
        tf.nest.map_structure(lambda f, o, a=axes.get(name, 0): _unit_select(mask, num_units, a, f, o),
                              getattr(fresh, name),
                              getattr(units, name)) for name in units._fields
    ])

  return tf.cond(tf.reduce_any(mask), select, lambda: units)
