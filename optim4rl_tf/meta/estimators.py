"""Meta-gradient estimators: d meta-loss / d phi of an outer iteration (docs/fidelity.md §5.3, §5.9).

Two estimators, one per kind of learned optimizer; an inner problem (``problem.InnerProblem``) calls the
one that fits its optimizer from its ``outer_iteration``:

* ``replayed_vjp`` -- optimizers whose inputs are under stop-gradient (Optim4RL, LinearOptim, L2LGD²) and
  rollouts that are data: theta_M = theta_0 + sum_k delta_k(phi) depends on phi only through the
  optimizer's deltas and hidden-state chain, so the exact meta-gradient is the vector-Jacobian product of
  sum_k delta_k(phi) with the cotangent d meta-loss / d theta_M, recomputed ("replayed") from the stored
  (h_0, g_0..g_{M-1}) under a GradientTape, in chunks of units whose gradients are summed. The inner
  updates run first without a tape (``optimizer_step``). Chunking changes only memory, never the rollouts.
* ``full_unroll`` -- optimizers whose inputs are NOT under stop-gradient (STAR): the M inner updates run
  under one outer tape watching phi, so second-order terms (d g_k / d theta_k) are part of the gradient.
  Memory grows with every inner step's activations; no chunking.

Layout of the replay: the learned optimizer sees all agent parameters of all units as one coordinate
matrix [U, P] (``flatten_units``; each unit's parameters flattened and concatenated); hidden states are
feature-major, [H, U, P], so an update is one [H, U*P] computation, compiled with XLA.
"""

import tensorflow as tf


def flatten_units(tensors):
  """List of [U, ...] -> [U, P] (each unit's tensors flattened and concatenated)."""
  return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in tensors], axis=1)


def unflatten_units(flat, like):
  """[U, P] -> list shaped like ``like`` (inverse of ``flatten_units``)."""
  sizes = [int(t.shape[1:].num_elements()) for t in like]
  return [tf.reshape(x, tf.shape(t)) for x, t in zip(tf.split(flat, sizes, axis=1), like)]


CHUNK_COORDS = 400_000
# XLA:CPU runs one compiled call on one core; this many independent calls (chunks of the replay, halves
# of the units in the inner updates) are issued together so TensorFlow runs them on different cores.
PARALLEL = 4


def auto_chunk(num_units, params_per_unit, target=CHUNK_COORDS):
  """The largest divisor of ``num_units`` whose chunk holds at most ``target / PARALLEL`` coordinates (at
  least 1 unit): ``PARALLEL`` chunks run at once on different cores, so together they hold at most
  ``target`` coordinates. Small chunks keep the replay's working set cache-friendly (measured faster per
  coordinate on CPU than one big chunk) and bound the tapes' memory."""
  best = 1
  for c in range(1, num_units + 1):
    if num_units % c == 0 and c * params_per_unit * PARALLEL <= target:
      best = c
  return best


def replayed_vjp(core,
                 phi,
                 hidden0,
                 all_grads,
                 cotangent,
                 learning_rate,
                 chunk_size=0,
                 num_units=None,
                 params_per_unit=None,
                 name="problem"):
  """Sum over units of d(unit's meta-loss share)/d phi, replayed in chunks of units.

  hidden0: tuple of [H, U, P] (hidden states at the start of the iteration); all_grads: list of M [U, P]
  (the gradients the optimizer saw); cotangent: [U, P] (d meta-loss / d theta_M; for a meta-loss that is
  the mean over units, each unit's own gradient / U); chunk_size: units per chunk (<= 0: ``auto_chunk``).
  num_units, params_per_unit: U and P (default: the static shape of ``cotangent``). Returns a dict like
  ``phi``.
  """
  n = int(cotangent.shape[0]) if num_units is None else int(num_units)
  per_unit = int(cotangent.shape[1]) if params_per_unit is None else int(params_per_unit)
  chunk = auto_chunk(n, per_unit) if chunk_size <= 0 else min(chunk_size, n)
  if n % chunk:
    raise ValueError(f"{name}: chunk_size={chunk} must divide the number of units {n}")
  num_chunks = n // chunk
  keys = sorted(phi)
  phi_list = [phi[k] for k in keys]

  replay = _replay_vjp(core)

  def chunk_grad(c):
    start = c * chunk
    h0 = tuple(h[:, start:start + chunk] for h in hidden0)
    gs = [g[start:start + chunk] for g in all_grads]
    return replay(phi_list, h0, gs, cotangent[start:start + chunk], learning_rate)

  if num_chunks == 1:
    grads = chunk_grad(0)
  else:

    def body(c, acc):
      return c + 1, [a + g for a, g in zip(acc, chunk_grad(c))]

    _, grads = tf.while_loop(lambda c, _: c < num_chunks,
                             body, (tf.constant(0), [tf.zeros_like(p) for p in phi_list]),
                             parallel_iterations=PARALLEL)
  return dict(zip(keys, grads))


def full_unroll(phi, unroll_fn):
  """The meta-gradient of a whole unroll differentiated end to end (STAR's estimator).

  ``unroll_fn(phi_watched, tape) -> (meta_loss, aux)`` runs the inner updates and the meta-loss with the
  dict ``phi_watched`` inside an outer ``tf.GradientTape`` that watches phi (use ``tape.stop_recording()``
  for work that is data, such as rollouts). Returns ``(grads dict like phi, aux)``; phi entries the loss
  does not reach get zero gradients.
  """
  names = sorted(phi)
  phi_list = [phi[k] for k in names]
  with tf.GradientTape() as outer:
    outer.watch(phi_list)
    meta_loss, aux = unroll_fn(dict(zip(names, phi_list)), outer)
  grads = outer.gradient(meta_loss, phi_list, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return dict(zip(names, grads)), aux


_COMPILED = {}


def optimizer_step(core, phi, hidden, flat_grads, learning_rate, parts=None):
  """One learned-optimizer update of all units: hidden tuple of [H, U, P], flat_grads [U, P] ->
  (delta [U, P], new hidden). The units are cut into ``parts`` (default ``PARALLEL``) groups, each one
  XLA-compiled call, so the groups run on different cores; the numbers are those of one call."""
  step = _compiled_step(core)
  n = int(flat_grads.shape[0])
  parts = min(n, PARALLEL if parts is None else parts)
  if parts <= 1:
    return step(phi, hidden, flat_grads, learning_rate)
  sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
  grads = tf.split(flat_grads, sizes, axis=0)
  states = [tf.split(h, sizes, axis=1) for h in hidden]
  outs = [step(phi, tuple(s[i] for s in states), grads[i], learning_rate) for i in range(parts)]
  delta = tf.concat([o[0] for o in outs], axis=0)
  new_hidden = tuple(tf.concat([o[1][j] for o in outs], axis=1) for j in range(len(hidden)))
  return delta, new_hidden


def _compiled_step(core):
  """XLA-compiled ``core.update_feature_major`` (forward only)."""
  key = ("step", core.name, core.mlp_dims, core.hidden_size)
  if key not in _COMPILED:
    _COMPILED[key] = tf.function(core.update_feature_major, jit_compile=True)
  return _COMPILED[key]


def _replay_vjp(core):
  """XLA-compiled replay of the M updates of one chunk and its vector-Jacobian product w.r.t. phi.

  (phi_list, h0 tuple of [H, C, P], grads list of M [C, P], cotangent [C, P], lr) -> list like
  phi_list. Compiling forward and backward
  together lets XLA fuse the GRU/MLP elementwise work of both passes (about 3x faster on CPU).
  """
  key = ("replay", core.name, core.mlp_dims, core.hidden_size)
  if key not in _COMPILED:

    def replay(phi_list, h0, grads, cotangent, lr):
      keys = sorted(core.meta_param_shapes())
      with tf.GradientTape() as tape:
        tape.watch(phi_list)
        local = dict(zip(keys, phi_list))
        hidden, total = h0, 0.0
        for g_k in grads:
          delta, hidden = core.update_feature_major(local, hidden, g_k, lr)
          total += delta
      return tape.gradient(total, phi_list, output_gradients=cotangent)

    _COMPILED[key] = tf.function(replay, jit_compile=True)
  return _COMPILED[key]
