"""The inner problem: what a learned optimizer is meta-trained on (the protocol every problem implements).

Three layers, in the spirit of learned_optimization's TruncatedStep / GradientEstimator / GradientLearner:

* an :class:`InnerProblem` (this module) owns nothing but its task: it makes brand-new training units
  (``init_units``), makes ONE inner update of all units with the optimizer it is given (``inner_step``)
  and evaluates the meta-loss after the inner updates (``meta_loss``). Its per-unit state is declared once:
  a NamedTuple with leading unit axis U in every tensor, ``params`` (the agents' parameters) and
  ``opt_state`` (the optimizer's state, made by ``optimizer.init``) among its fields, and ``unit_axes``
  for fields whose unit axis is not 0;
* an estimator (``estimators.ReplayedVJP``, ``estimators.FullUnroll``) HOLDS a problem and drives it: it
  hands the problem a :class:`UnitOptimizer` (the learned optimizer with phi), runs ``inner_steps`` inner
  updates and the meta-loss, and returns d meta-loss / d phi. Estimators know only this protocol;
* the learner (``trainer.MetaTrainer``) takes estimators: pipeline resets (``pipeline.reset``, generic over
  any problem's declared unit state), one phi shared by all, gradients combined, clipped and applied with
  Adam, the NaN guard, checkpoints. Which problem a config means is the registry's business (``registry``).

Problems of this package: ``meta_a2c.MetaA2C`` (gridworlds; one per task of a configs/meta_a2c.py config)
and ``meta_ppo.MetaPPO`` (Brax); each works with every optimizer core (STAR included: the estimator
decides how the meta-gradient is taken). ``examples/custom_task.py`` is one written outside the package.
"""

from typing import Any, Dict, NamedTuple, Optional, Protocol, runtime_checkable

import tensorflow as tf

Units = Any  # a NamedTuple of tensors, leading unit axis U (see unit_axes), with fields params and opt_state
Phi = Dict[str, Any]


class InnerStep(NamedTuple):
  """What ``InnerProblem.inner_step`` returns.

  units: the units after the update. metrics: dict of float scalars of this step; the estimator sums them
  over the ``inner_steps`` steps (in order, from 0.0) and hands the sums to ``meta_loss``. updates: how
  many ``optimizer.update`` calls the step made (a Python int; ``ReplayedVJP`` replays that many)."""
  units: Any
  metrics: Dict[str, Any]
  updates: int = 1


class MetaLoss(NamedTuple):
  """What ``InnerProblem.meta_loss`` returns.

  loss: float scalar, the mean over units of each unit's meta-loss, a differentiable function of
  ``units.params`` (and of whatever else an estimator's tape watches). units: the units after the meta-loss
  evaluation (e.g. environments advanced by a validation rollout). metrics: dict of float scalars, at least
  ``"meta_loss"``; a ``"params_ok"`` entry of 0 makes the learner skip the iteration. grads: with
  ``with_grads=True``, d loss / d units.params (a list like params), else None."""
  loss: Any
  units: Any
  metrics: Dict[str, Any]
  grads: Optional[Any] = None


@runtime_checkable
class UnitOptimizer(Protocol):
  """The optimizer an estimator hands to a problem: the learned optimizer (core and phi) of all units.

  ``init(params)`` -> the optimizer state of brand-new units (params: list of [U, ...]);
  ``update(grads, opt_state, params, learning_rate)`` -> ``(updates like grads, new opt_state)``, one step
  of every unit (the problem clips the gradients first, if it does). ``second_order``: True when the
  optimizer differentiates through ``grads`` (STAR under ``FullUnroll``): compute them from live, not
  stop-gradient, parameters then. ``unit_axis``: the unit axis of every tensor of the optimizer state
  (1 for the feature-major [H, U, P] hidden states of Optim4RL, LinearOptim and L2LGD², 0 for STAR)."""

  second_order: bool
  unit_axis: int

  def init(self, params: Any) -> Any:
    ...

  def update(self, grads: Any, opt_state: Any, params: Any, learning_rate: float) -> Any:
    ...


@runtime_checkable
class InnerProblem(Protocol):
  """One inner problem (all methods run inside the learner's ``tf.function``).

  ``name``: prefix of the problem's metrics (``"<name>/meta_loss"``), distinct within a run;
  ``num_units``: U; ``inner_steps``: M, the inner updates per outer iteration; ``unit_axes``: dict {field of
  the unit state: its unit axis} for fields whose axis is not 0 (``opt_state`` takes the optimizer's
  ``unit_axis``); a field whose tensors have k * U entries on that axis (e.g. E environments per unit,
  unit-major) is reset in blocks of k. ``key``: a stateless-RNG key (int32 [2]). The units live in
  ``tf.Variable``s between iterations (and in checkpoints), so every call must return the same structure,
  shapes and dtypes.
  """

  name: str
  num_units: int
  inner_steps: int
  unit_axes: Dict[str, int]

  def init_units(self, optimizer: UnitOptimizer, key: Any) -> Units:
    """Brand-new units: fresh agents, ``optimizer.init(params)``, fresh data/environments."""

  def inner_step(self, optimizer: UnitOptimizer, units: Units, key: Any) -> InnerStep:
    """One inner update of every unit with ``optimizer`` (``key``: this step's own key)."""

  def meta_loss(self, units: Units, key: Any, sums: Dict[str, Any], with_grads: bool = False) -> MetaLoss:
    """The meta-loss after the inner updates (``key``: the iteration's key; ``sums``: the inner steps'
    summed metrics)."""


PROTOCOL = ("name", "num_units", "inner_steps", "unit_axes", "init_units", "inner_step", "meta_loss")


def check_problem(problem):
  """``problem`` if it implements :class:`InnerProblem`, else TypeError naming what it lacks."""
  if not isinstance(problem, InnerProblem):
    missing = [m for m in PROTOCOL if not hasattr(problem, m)]
    raise TypeError(f"{type(problem).__name__} is not an InnerProblem (optim4rl_tf.meta.problem): it lacks "
                    f"{', '.join(missing)}")
  return problem


def check_names(problems):
  """ValueError for no problem at all and for two problems of one name (their metrics would collide)."""
  problems = list(problems)
  if not problems:
    raise ValueError("meta-training needs at least one inner problem")
  names = [p.name for p in problems]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"inner problems need distinct names (their metrics' prefixes): "
                     f"{', '.join(map(repr, repeated))} appears more than once in {names}")
  return problems


def as_problems(problems):
  """The inner problems of a run as a checked list (:func:`check_problem`, :func:`check_names`)."""
  return check_names([check_problem(p) for p in problems])


def agent_params(units):
  """What the divergence guard checks of a problem's units: ``units.params`` if there is one, else all."""
  return getattr(units, "params", units)


def flatten_units(tensors):
  """List of [U, ...] -> [U, P] (each unit's tensors flattened and concatenated)."""
  return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in tensors], axis=1)


def unflatten_units(flat, like):
  """[U, P] -> list shaped like ``like`` (inverse of ``flatten_units``)."""
  sizes = [int(t.shape[1:].num_elements()) for t in like]
  return [tf.reshape(x, tf.shape(t)) for x, t in zip(tf.split(flat, sizes, axis=1), like)]
