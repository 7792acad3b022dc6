"""Meta-gradient estimators: classes that drive an inner problem and return d meta-loss / d phi.

An estimator HOLDS an ``problem.InnerProblem`` and knows nothing else about it than the protocol: it hands
the problem a ``problem.UnitOptimizer`` (the learned optimizer with phi), runs the problem's
``inner_steps`` inner updates (``inner_step``, step k keyed ``fold_in(key, k)``) and its ``meta_loss``,
and returns ``(units after the iteration, meta-gradient dict like phi, metrics)`` (``estimate``). The
learner (``trainer.MetaTrainer``) resets units (``pipeline.reset``) before and applies the gradient after.

* :class:`ReplayedVJP` (docs/fidelity.md §5.3) -- optimizers whose inputs are under stop-gradient
  (Optim4RL, LinearOptim, L2LGD²) on data that do not depend on phi: theta_M = theta_0 + sum_k delta_k(phi)
  depends on phi only through the optimizer's deltas and hidden-state chain, so the exact meta-gradient is
  the vector-Jacobian product of sum_k delta_k(phi) with the cotangent d meta-loss / d theta_M, recomputed
  ("replayed") from the recorded (h_0, g_0..g_{N-1}) under a GradientTape, in chunks whose gradients are
  summed (``replayed_vjp``): by default chunks of ``REPLAY_CHUNK_COORDS`` coordinates (every coordinate is an
  independent sequence, so any slice of them is a chunk), or of ``chunk_size`` units when one is given. The
  inner updates run first without a tape, XLA-compiled (``optimizer_step``). Chunking changes only speed,
  memory and the order of a sum (float32 rounding), never the rollouts.
* :class:`FullUnroll` (docs/fidelity.md §5.9) -- STAR, whose inputs are NOT under stop-gradient, and
  problems whose data depend on phi (MetaPPO through the environment): the inner updates and the meta-loss
  run under one outer tape watching phi (``full_unroll``), second-order terms (d g_k / d theta_k) included.
  Memory grows with every inner step's activations; no chunking.

Layout: a learned optimizer with hidden states (``update_feature_major``) sees all agent parameters of all
units as one coordinate matrix [U, P] (``problem.flatten_units``); its hidden states are feature-major, [H, U, P]
(unit axis 1), so an update is one [H, U*P] computation. STAR keeps per-tensor states with the unit axis
first (unit axis 0).
"""

import copy
from typing import Any, NamedTuple

import tensorflow as tf
# XLA's in-place dynamic slices (the module jax2tf builds on): the inner updates' loop over chunks.
from tensorflow.compiler.tf2xla.python import xla

from optim4rl_tf.meta import problem as problem_lib

# The replay's default chunk, in coordinates: its forward activations and tape (about 100 numbers per
# coordinate) then stay in the core's cache. Measured on this project's 2-core AMD EPYC (512 KB L2 per core),
# replaying 4 updates of small_dense_long (64 units x 4,970 params) and of 16 units of big_dense_long
# (39,482 params): chunks of 4-8k coordinates run 2.5-3.5x faster than chunks of 80k, 16k already as slow
# as 80k (``replayed_vjp`` alone, timed both ways in one process, 2026-12-06).
REPLAY_CHUNK_COORDS = 6144
# The inner updates' chunk, in coordinates, inside each compiled call (``optimizer_step``): measured the same
# way, one update of big_dense_long's 16 units 104-137 -> 39-59 ms, of small_dense_long's 64 units 22-30 -> 20-21
# ms, the same numbers bitwise.
STEP_CHUNK_COORDS = 6144
# XLA:CPU runs one compiled call on one core; this many independent calls (chunks of the replay, halves
# of the units in the inner updates) are issued together so TensorFlow runs them on different cores.
PARALLEL = 4
# Above this many coordinates an inner update runs in groups of units one after another (optimizer_step).
GROUP_COORDS = 8_000_000


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
  """Sum over units of d(unit's meta-loss share)/d phi, replayed in chunks.

  hidden0: tuple of [H, U, P] (hidden states at the start of the iteration); all_grads: list of M [U, P]
  (the gradients the optimizer saw); cotangent: [U, P] (d meta-loss / d theta_M; for a meta-loss that is
  the mean over units, each unit's own gradient / U); chunk_size: units per chunk (<= 0: chunks of
  ``REPLAY_CHUNK_COORDS`` coordinates, ``replayed_vjp_by_coordinates``). num_units, params_per_unit: U and P
  (default: the static shape of ``cotangent``). Returns a dict like ``phi``.
  """
  n = int(cotangent.shape[0]) if num_units is None else int(num_units)
  per_unit = int(cotangent.shape[1]) if params_per_unit is None else int(params_per_unit)
  if chunk_size <= 0:
    return replayed_vjp_by_coordinates(core, phi, hidden0, all_grads, cotangent, learning_rate, n * per_unit)
  chunk = min(chunk_size, n)
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


def replayed_vjp_by_coordinates(core, phi, hidden0, all_grads, cotangent, learning_rate, num_coords, chunk_coords=None):
  """``replayed_vjp`` in chunks of ``chunk_coords`` (default ``REPLAY_CHUNK_COORDS``) of the U * P =
  ``num_coords`` coordinates, flattened unit-major, and a last, shorter chunk for the rest; ``PARALLEL``
  chunks are replayed at once. Returns a dict like ``phi``."""
  size = int(REPLAY_CHUNK_COORDS if chunk_coords is None else chunk_coords)
  size = max(1, min(size, num_coords))
  full, rest = divmod(num_coords, size)
  keys = sorted(phi)
  phi_list = [phi[k] for k in keys]
  hidden = tuple(tf.reshape(h, [int(h.shape[0]), num_coords]) for h in hidden0)
  grads = [tf.reshape(g, [num_coords]) for g in all_grads]
  cot = tf.reshape(cotangent, [num_coords])
  replay = _replay_vjp(core)

  def chunk_grad(start, count):
    h0 = tuple(tf.slice(h, [0, start], [int(h.shape[0]), count]) for h in hidden)
    return replay(phi_list, h0, [tf.slice(g, [start], [count]) for g in grads], tf.slice(cot, [start], [count]),
                  learning_rate)

  def body(c, acc):
    return c + 1, [a + g for a, g in zip(acc, chunk_grad(c * size, size))]

  if full == 1:
    total = chunk_grad(0, size)
  else:
    _, total = tf.while_loop(lambda c, _: c < full,
                             body, (tf.constant(0), [tf.zeros_like(p) for p in phi_list]),
                             parallel_iterations=PARALLEL)
  if rest:
    total = [a + g for a, g in zip(total, chunk_grad(full * size, rest))]
  return dict(zip(keys, total))


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
  XLA-compiled call, so the groups run on different cores; the numbers are those of one call.

  Above ``GROUP_COORDS`` coordinates (U * P; 512 units of a big gridworld) the units are updated in groups
  of at most that many coordinates, one group after another, so that the update's activations (about 100
  numbers per coordinate) exist for one group at a time instead of for all units at once."""
  n, per_unit = int(flat_grads.shape[0]), int(flat_grads.shape[1])
  group = max(1, GROUP_COORDS // max(1, per_unit))
  if n <= group:
    return _parallel_step(core, phi, hidden, flat_grads, learning_rate, parts)
  outs, previous = [], []
  for start in range(0, n, group):
    with tf.control_dependencies(previous):
      out = _parallel_step(core, phi, tuple(h[:, start:start + group] for h in hidden), flat_grads[start:start + group],
                           learning_rate, parts)
    previous = [out[0]]
    outs.append(out)
  return _concat_units(outs)


def _parallel_step(core, phi, hidden, flat_grads, learning_rate, parts=None):
  """``optimizer_step`` of one group of units: ``parts`` XLA calls issued together."""
  step = _compiled_step(core)
  n = int(flat_grads.shape[0])
  parts = min(n, PARALLEL if parts is None else parts)
  if parts <= 1:
    return step(phi, hidden, flat_grads, learning_rate)
  sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
  grads = tf.split(flat_grads, sizes, axis=0)
  states = [tf.split(h, sizes, axis=1) for h in hidden]
  outs = [step(phi, tuple(s[i] for s in states), grads[i], learning_rate) for i in range(parts)]
  return _concat_units(outs)


def _concat_units(outs):
  """[(delta [u_i, P], hidden tuple of [H, u_i, P])] of consecutive groups of units -> one (delta, hidden)."""
  delta = tf.concat([o[0] for o in outs], axis=0)
  return delta, tuple(tf.concat([o[1][j] for o in outs], axis=1) for j in range(len(outs[0][1])))


def _compiled_step(core):
  """XLA-compiled ``core.update_feature_major`` (forward only): (phi, hidden tuple of [H, u, P], grads [u, P],
  lr) -> (delta [u, P], new hidden). The u * P coordinates are updated ``STEP_CHUNK_COORDS`` at a time in a
  loop inside the one compiled call (each chunk's activations stay in cache), writing the results in place;
  the numbers are those of one update of all coordinates (the update is coordinatewise)."""
  key = ("step", core.name, core.mlp_dims, core.hidden_size, STEP_CHUNK_COORDS)
  if key not in _COMPILED:
    size = STEP_CHUNK_COORDS

    def step(phi, hidden, grads, lr):
      n = int(grads.shape.num_elements())
      if n <= size:
        return core.update_feature_major(phi, hidden, grads, lr)
      flat_h = tuple(tf.reshape(h, [int(h.shape[0]), n]) for h in hidden)
      flat_g = tf.reshape(grads, [n])
      full, rest = divmod(n, size)

      def body(c, delta, states):
        start = c * size
        h_c = tuple(xla.dynamic_slice(h, [0, start], [int(h.shape[0]), size]) for h in flat_h)
        d, new_h = core.update_feature_major(phi, h_c, xla.dynamic_slice(flat_g, [start], [size]), lr)
        delta = xla.dynamic_update_slice(delta, d, [start])
        states = tuple(xla.dynamic_update_slice(a, b, [0, start]) for a, b in zip(states, new_h))
        return c + 1, delta, states

      _, delta, states = tf.while_loop(lambda c, *_: c < full, body,
                                       (tf.constant(0), tf.zeros([n]), tuple(tf.zeros_like(h) for h in flat_h)))
      if rest:
        start = full * size
        d, new_h = core.update_feature_major(phi, tuple(h[:, start:] for h in flat_h), flat_g[start:], lr)
        delta = xla.dynamic_update_slice(delta, d, [start])  # in place, no copy of the rest
        states = tuple(xla.dynamic_update_slice(a, b, [0, start]) for a, b in zip(states, new_h))
      return tf.reshape(delta, grads.shape), tuple(tf.reshape(h, old.shape) for h, old in zip(states, hidden))

    _COMPILED[key] = tf.function(step, jit_compile=True)
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


# ---------------------------------------------------------------------------------------------------------
# The optimizers an estimator hands to a problem (problem.UnitOptimizer).


def is_feature_major(core):
  """Whether ``core`` keeps feature-major hidden states (Optim4RL, LinearOptim, L2LGD²; not STAR)."""
  return hasattr(core, "update_feature_major")


def params_per_unit(params):
  """P: the number of parameters of one unit (params: list of [U, ...])."""
  return sum(int(p.shape[1:].num_elements()) for p in params)


class Recording(NamedTuple):
  """The optimizer state during a :class:`ReplayedVJP` iteration: hidden states, the gradients seen so far
  (a TensorArray of [U, P]) and their count."""
  hidden: Any
  grads: Any
  count: Any


class FeatureMajorOptimizer:
  """A learned optimizer with feature-major hidden states ([H, U, P], unit axis 1) for all units.

  ``record=True`` (:class:`ReplayedVJP`): XLA-compiled forward steps (``optimizer_step``) on a
  :class:`Recording` state that keeps every gradient; else one uncompiled, differentiable
  ``core.update_feature_major`` step (:class:`FullUnroll`; the gradient enters under stop-gradient)."""

  second_order = False
  unit_axis = 1

  def __init__(self, core, phi=None, record=False):
    self.core, self.phi, self.record = core, phi, record
    self.learning_rate = None

  def init(self, params):
    return self.core.init_state_feature_major([int(params[0].shape[0]), params_per_unit(params)])

  def update(self, grads, opt_state, params, learning_rate):
    del params
    flat = problem_lib.flatten_units(grads)
    if not self.record:
      delta, hidden = self.core.update_feature_major(self.phi, opt_state, flat, learning_rate)
      return problem_lib.unflatten_units(delta, grads), hidden
    if self.learning_rate is not None and self.learning_rate != learning_rate:
      raise ValueError(f"ReplayedVJP replays one learning rate, got {self.learning_rate} and {learning_rate}")
    self.learning_rate = learning_rate
    delta, hidden = optimizer_step(self.core, self.phi, opt_state.hidden, flat, learning_rate)
    state = Recording(hidden, opt_state.grads.write(opt_state.count, flat), opt_state.count + 1)
    return problem_lib.unflatten_units(delta, grads), state


class StarOptimizer:
  """STAR for all units (``core.update_list`` with the unit axis first; unit axis 0). ``second_order``:
  the agent gradients are differentiated through (False: they are constants, a first-order ablation)."""

  unit_axis = 0

  def __init__(self, core, phi=None, second_order=True):
    self.core, self.phi, self.second_order = core, phi, second_order

  def init(self, params):
    return self.core.init_states(params, unit_axis=True)

  def update(self, grads, opt_state, params, learning_rate):
    if not self.second_order:
      grads = [tf.stop_gradient(g) for g in grads]
    return self.core.update_list(self.phi, opt_state, grads, learning_rate, params=params, unit_axis=True)


def _sum_metrics(sums, metrics):
  return {k: sums.get(k, 0.0) + v for k, v in metrics.items()}


def _run(problem, optimizer, units, key):
  """The problem's inner steps with ``optimizer``: (units, summed step metrics, optimizer updates made)."""
  sums, updates = {}, 0
  for k in range(problem.inner_steps):
    step = problem.inner_step(optimizer, units, tf.random.experimental.stateless_fold_in(key, k))
    units, updates = step.units, updates + int(step.updates)
    sums = _sum_metrics(sums, step.metrics)
  return units, sums, updates


class Estimator:
  """What the learner needs of an estimator: the problem it drives, brand-new units, the unit-state layout
  (the problem's ``unit_axes`` with the optimizer's for ``opt_state``) and ``estimate``."""

  def __init__(self, problem):
    self.problem = problem_lib.check_problem(problem)
    self.name = problem.name

  def optimizer(self, core, phi=None):
    raise NotImplementedError

  def init_units(self, core, key):
    return self.problem.init_units(self.optimizer(core), key)

  def unit_axes(self, core):
    return dict(self.problem.unit_axes, opt_state=self.optimizer(core).unit_axis)

  def for_units(self, unit_slice):
    """This estimator on the problem's units ``unit_slice`` only (``problem.for_units``; workers.py)."""
    if not hasattr(self.problem, "for_units"):
      raise ValueError(f"inner problem {self.name!r} ({type(self.problem).__name__}) cannot be split across "
                       "workers: it has no for_units(unit_slice); run it in one process (no TF_CONFIG)")
    out = copy.copy(self)
    out.problem = problem_lib.check_problem(self.problem.for_units(unit_slice))
    return out

  def estimate(self, core, phi, units, key):
    """(units after the iteration, meta-gradient dict like phi (of the mean over units), metrics)."""
    raise NotImplementedError


class ReplayedVJP(Estimator):
  """The replayed vector-Jacobian product (module doc); ``chunk_size``: units per replay chunk (<= 0: chunks
  of ``REPLAY_CHUNK_COORDS`` coordinates). For cores with feature-major hidden states only."""

  def __init__(self, problem, chunk_size=0):
    Estimator.__init__(self, problem)
    self.chunk_size = int(chunk_size)

  def optimizer(self, core, phi=None):
    if not is_feature_major(core):
      raise ValueError(f"ReplayedVJP needs an optimizer whose gradient input is under stop-gradient (Optim4RL, "
                       f"LinearOptim, L2LGD²), not {core.name!r}: use FullUnroll")
    return FeatureMajorOptimizer(core, phi, record=True)

  def estimate(self, core, phi, units, key):
    p = self.problem
    opt = self.optimizer(core, phi)
    hidden0, per_unit = units.opt_state, params_per_unit(units.params)
    record = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[p.num_units, per_unit])
    units, sums, n = _run(p, opt, units._replace(opt_state=Recording(hidden0, record, tf.constant(0))), key)
    out = p.meta_loss(units, key, sums, with_grads=True)
    hidden, record, _ = out.units.opt_state
    recorded = [record.read(i) for i in range(n)]  # the N gradients the optimizer saw, [U, P] each
    grads = replayed_vjp(core,
                         phi,
                         hidden0,
                         recorded,
                         problem_lib.flatten_units(out.grads),
                         opt.learning_rate,
                         chunk_size=self.chunk_size,
                         num_units=p.num_units,
                         params_per_unit=per_unit,
                         name=p.name)
    return out.units._replace(opt_state=hidden), grads, out.metrics


class FullUnroll(Estimator):
  """The whole iteration differentiated end to end (module doc). ``second_order=False`` (STAR only) treats
  the agent gradients as constants (a first-order ablation, not the official method)."""

  def __init__(self, problem, second_order=True):
    Estimator.__init__(self, problem)
    self.second_order = bool(second_order)

  def optimizer(self, core, phi=None):
    if is_feature_major(core):
      return FeatureMajorOptimizer(core, phi)
    return StarOptimizer(core, phi, self.second_order)

  def estimate(self, core, phi, units, key):

    def unroll_fn(local, tape):
      del tape
      state, sums, _ = _run(self.problem, self.optimizer(core, local), units, key)
      out = self.problem.meta_loss(state, key, sums)
      return out.loss, (out.units, out.metrics)

    grads, (new_units, metrics) = full_unroll(phi, unroll_fn)
    stop = lambda s: tf.nest.map_structure(tf.stop_gradient, s)
    return stop(new_units), grads, stop(metrics)
