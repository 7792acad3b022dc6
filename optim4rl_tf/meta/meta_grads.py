"""What the meta-optimizer applies: per-problem meta-gradients combined and clipped (docs/fidelity.md §5.4).

Pure TF functions of lists of tensors (one per meta-parameter, in the order of ``keys``), used by
``trainer.MetaTrainer`` inside its ``tf.function``:

  grads, norm = combine(keys, shapes, task_grads, max_norm=0.5, meta_grad_clip=1.0, meta_grad_norm=-1.0)
"""

import numpy as np
import tensorflow as tf


def redundant_gru_bias_masks(shapes):
  """{key: float32 mask} for every GRU bias ``<rnn>/bias`` of shape (2, 3H) in a meta-parameter set: 0 on
  the recurrent z and r biases (``bias[1, :2H]``, redundant with ``bias[0, :2H]``), 1 elsewhere."""
  masks = {}
  for key, shape in shapes.items():
    prefix = key[:-len("/bias")]
    shape = tuple(shape)
    if key.endswith("/bias") and f"{prefix}/recurrent_kernel" in shapes and len(shape) == 2 and shape[0] == 2:
      mask = np.ones(shape, np.float32)
      mask[1, :2 * (shape[1] // 3)] = 0.0
      masks[key] = tf.constant(mask)
  return masks


def global_norm(tensors):
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


def combine(keys, shapes, task_grads, max_norm, meta_grad_clip, meta_grad_norm):
  """Per-problem max_norm normalisation, mean over problems, then clipping (§5.4).

  ``task_grads``: one dict {key: tensor} per inner problem; ``shapes``: {key: shape} of phi. Returns
  ``(grads, norm)``: the combined meta-gradient as a list in ``keys`` order and its global norm before
  clipping. ``meta_grad_clip > 0`` clips elementwise, else ``meta_grad_norm > 0`` clips the global norm.
  Keras's GRU keeps recurrent z/r biases that duplicate the input ones (flax has none): their meta-gradient
  is masked to zero here, so they stay at their initial value (zero), meta-Adam moves the effective bias at
  the official rate and no norm counts them twice (docs/fidelity.md §6.6)."""
  masks = redundant_gru_bias_masks(shapes)
  per_task = []
  for grads in task_grads:
    g = [grads[k] * masks[k] if k in masks else grads[k] for k in keys]
    if max_norm > 0:
      norm = global_norm(g)
      g = [x * (max_norm / tf.maximum(norm, 1e-12)) for x in g]  # §5.4 item 2: guard a zero norm
    per_task.append(g)
  grads = [tf.add_n(list(xs)) / len(per_task) for xs in zip(*per_task)]
  norm = global_norm(grads)
  if meta_grad_clip > 0:
    grads = [tf.clip_by_value(g, -meta_grad_clip, meta_grad_clip) for g in grads]
  elif meta_grad_norm > 0:
    grads, _ = tf.clip_by_global_norm(grads, meta_grad_norm, use_norm=norm)
  return grads, norm
