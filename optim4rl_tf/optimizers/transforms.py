"""One optimizer interface for agents: classical and learned optimizers on lists of unit-batched tensors.

An :class:`AgentOptimizer` is a pair of pure functions, in the spirit of optax:

  state = opt.init(params)                       # params: list of tensors, any shapes (e.g. [U, ...])
  updates, state = opt.update(grads, state, params=params)   # updates: list like params; theta + update

Every optimizer here is coordinatewise, so a leading unit axis (seeds of an evaluation, units of pipeline
training) batches for free. Elementwise gradient clipping (``grad_clip > 0``, docs/fidelity.md §4.1, §6.1) is applied to
the gradient before the optimizer, as in the official ``optax.chain(optax.clip(c), opt)``: here
``chain(clip(c), opt)``, which every agent optimizer of the package (A2C, PPO, the meta-training inner
updates) is built with. ``clip`` is stateless, so the chain keeps ``opt``'s state as it is.

For learned optimizers, ``update`` takes an optional ``phi`` (dict of meta-parameters) so the meta-trainer
can pass the differentiable meta-parameters explicitly; by default the fixed ``opt.phi`` is used.

Learned optimizers run their core's ``update`` (``cores.Core``: one signature for all four, returning the
update to add). ``params`` (the current parameters) is required by STAR only (its features read them); the
others ignore it. STAR normalises its features per parameter tensor: with ``unit_axis=True`` (the default:
agents here are unit-batched [U, ...]) every unit is a separate agent.
"""

from typing import Any, Callable, NamedTuple, Optional

import tensorflow as tf

from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import star as star_lib

CLASSICAL = ("adam", "rmsprop")
LEARNED = cores.LEARNED_NAMES + (star_lib.NAME,)
OPTIMIZER_NAMES = CLASSICAL + LEARNED


def untrained_warning(optimizer_config):
  """The warning for an agent optimizer config (``name``, ``meta_params``) that runs a learned optimizer
  without ``meta_params`` (an untrained, random phi); None otherwise."""
  if optimizer_config.name in CLASSICAL or optimizer_config.meta_params:
    return None
  return f"{optimizer_config.name} without optimizer.meta_params uses an untrained (random) phi"


class AgentOptimizer(NamedTuple):
  """Pure optimizer functions; see the module docstring."""
  name: str
  init: Callable[[list], Any]
  update: Callable[..., tuple]
  phi: Optional[dict] = None
  core: Optional[Any] = None


def clip(max_delta):
  """The elementwise clip of a gradient list to [-max_delta, max_delta] (``optax.clip``), as a function
  ``grads -> grads`` (lists of tensors, any shapes); ``max_delta`` None or <= 0: no clip (the list as is)."""
  if max_delta is None or max_delta <= 0:
    return list
  return lambda grads: [tf.clip_by_value(g, -max_delta, max_delta) for g in grads]


class _Chained:
  """An optimizer object whose ``update`` maps the gradient (its first argument) first; every other
  attribute is the wrapped optimizer's (``init``, ``second_order``, ...)."""

  def __init__(self, transform, optimizer):
    self._transform, self._optimizer = transform, optimizer

  def update(self, grads, *args, **kwargs):
    return self._optimizer.update(self._transform(grads), *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._optimizer, name)


def chain(transform, optimizer):
  """``optimizer`` with the stateless gradient ``transform`` (e.g. :func:`clip`) applied first, like
  ``optax.chain(transform, optimizer)``: the same ``init`` and state, and ``update(grads, *args)`` =
  ``optimizer.update(transform(grads), *args)``, whatever the rest of ``update``'s signature (an
  :class:`AgentOptimizer`'s, or the meta-training optimizers' ``(grads, opt_state, params, learning_rate)``).
  An :class:`AgentOptimizer` stays one (its ``update`` replaced); any other optimizer object is wrapped."""
  if isinstance(optimizer, AgentOptimizer):
    update = optimizer.update
    return optimizer._replace(update=lambda grads, *args, **kwargs: update(transform(grads), *args, **kwargs))
  return _Chained(transform, optimizer)


def make_agent_optimizer(name, learning_rate, grad_clip=-1.0, meta_params=None, mlp_dims=None, seed=0, unit_axis=True):
  """Builds an :class:`AgentOptimizer`.

  Args:
    name: one of ``OPTIMIZER_NAMES`` (adam, rmsprop, optim4rl, linear_optim, l2lgd2, star).
    learning_rate: float; for learned optimizers the multiplier alpha of docs/fidelity.md §5.5, §10; for STAR its
      ``step_mult``.
    grad_clip: elementwise clip applied to gradients first (``chain(clip(grad_clip), ...)``); <= 0 disables it.
    meta_params: learned optimizers only: path to an ``.npz`` file or dict of arrays. ``None`` initialises
      phi from ``seed`` like the official code (an untrained learned optimizer).
    mlp_dims: head sizes of the learned optimizer; ``None`` takes them from the file (or (16, 16)).
    seed: int seed for a fresh phi.
    unit_axis: STAR only: parameters carry a leading unit axis (separate agents); see the module doc.
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}")
  lr = float(learning_rate)
  if name in CLASSICAL:
    if meta_params:
      raise ValueError(f"meta_params was given, but optimizer {name!r} is not a learned optimizer")
    init_fn = classical.adam_init if name == "adam" else classical.rmsprop_init
    update_fn = classical.adam_update if name == "adam" else classical.rmsprop_update

    def init(params):
      return [init_fn(p) for p in params]

    def update(grads, state, phi=None, params=None):
      del phi, params
      out = [update_fn(s, g, lr) for s, g in zip(state, grads)]
      return [u for u, _ in out], [s for _, s in out]

    return chain(clip(grad_clip), AgentOptimizer(name, init, update))

  core, phi = meta_params_lib.resolve(name, meta_params, mlp_dims=mlp_dims, seed=seed)
  phi = {k: tf.constant(v, tf.float32) for k, v in phi.items()}

  fixed_phi = phi
  needs_params = name == star_lib.NAME

  def init(params):
    return core.init_states(params, unit_axis=unit_axis)

  def update(grads, state, phi=None, params=None):
    if params is None and needs_params:
      raise ValueError("STAR needs the current parameters: call opt.update(grads, state, params=params)")
    # A fixed phi needs no gradient: the GRU cores' XLA-compiled update (about 3x faster on CPU).
    fn = core.update if phi is not None or needs_params else core.compiled_update()
    phi = fixed_phi if phi is None else phi
    params = [None] * len(state) if params is None else params
    out = [fn(phi, s, g, lr, param=p, unit_axis=unit_axis) for s, g, p in zip(state, grads, params)]
    return [u for u, _ in out], [s for _, s in out]

  return chain(clip(grad_clip), AgentOptimizer(name, init, update, phi=phi, core=core))
