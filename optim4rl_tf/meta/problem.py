"""The inner problem: what ``trainer.MetaTrainer`` meta-trains a learned optimizer on.

In the spirit of learned_optimization's TruncatedStep / GradientEstimator / GradientLearner split:

* an :class:`InnerProblem` (the truncated step) owns the training units -- U agents, each with its own
  learned-optimizer hidden state and data/environment state, every tensor with a leading unit axis -- and
  runs one outer iteration: reset the units whose turn it is (pipeline schedule, ``pipeline.py``), M inner
  updates with the learned optimizer (``core``, ``phi``), the meta-loss and its meta-gradient;
* a meta-gradient estimator (``estimators.py``) computes that gradient: ``replayed_vjp`` for optimizers
  whose inputs are under stop-gradient (Optim4RL, LinearOptim, L2LGD²) and data that do not depend on phi,
  ``full_unroll`` for STAR and for MetaPPO's meta-gradient through the environment;
* the learner is ``trainer.MetaTrainer``: one phi shared by all problems, per-problem gradients combined,
  clipped and applied with Adam, the NaN guard, checkpoints (units included) and ``phi.npz``.

Implementations here: ``meta_a2c.MetaA2C``, ``meta_a2c_star.MetaA2Cstar`` (one per task of a MetaA2C
config), ``meta_ppo.MetaPPO`` and ``meta_ppo_star.MetaPPOstar`` (MetaPPO's Brax task); ``trainer.build`` picks
them for a config. ``examples/custom_task.py`` is one written outside the package.
"""

from typing import Any, Dict, Protocol, Tuple, runtime_checkable

Units = Any  # a nested structure (NamedTuple) of tensors, leading axis U; ``params``: the agents' parameters
Phi = Dict[str, Any]


@runtime_checkable
class InnerProblem(Protocol):
  """One inner problem of a meta-training run (all methods run inside the trainer's ``tf.function``).

  ``name``: prefix of the problem's metrics (``"<name>/meta_loss"``), distinct within a run.
  ``key``: a stateless-RNG key (int32 [2]), derived from (seed, iteration, problem); ``iteration``: the
  outer iteration t = 1, 2, ... (an int32/int64 scalar tensor). The units are held in ``tf.Variable``s
  between iterations (and checkpointed), so every call must return the same structure, shapes and dtypes.
  """

  name: str

  def fresh_units(self, core: Any, key: Any) -> Units:
    """Brand-new units: fresh agents, zero optimizer hidden states (``core.init_state_feature_major`` or
    ``core.init_states``), fresh data/environments. If the units have a ``params`` field (the agents'
    parameters), the trainer's divergence guard checks it; otherwise it checks every float tensor."""

  def reset_units(self, core: Any, units: Units, iteration: Any, key: Any) -> Units:
    """``units`` with the ones scheduled at ``iteration`` (``pipeline.reset_mask``) replaced by fresh ones."""

  def outer_iteration(self, core: Any, phi: Phi, units: Units, iteration: Any,
                      key: Any) -> Tuple[Units, Phi, Dict[str, Any]]:
    """Reset due units, run the M inner updates with ``core`` and ``phi``, compute the meta-loss and its
    meta-gradient. Returns ``(new_units, meta_grads, metrics)``: ``meta_grads`` a dict like ``phi`` (the
    gradient of the mean over units of the meta-loss), ``metrics`` a dict of float scalars holding at least
    ``"meta_loss"``; a ``"params_ok"`` entry of 0 makes the trainer skip the iteration."""


def as_problems(problems):
  """The inner problems of a run as a list, checked: TypeError for anything that is not an InnerProblem,
  ValueError for none at all and for two problems of one name (their metrics would collide)."""
  problems = list(problems)
  if not problems:
    raise ValueError("meta-training needs at least one inner problem")
  for p in problems:
    if not isinstance(p, InnerProblem):
      missing = [m for m in ("name", "fresh_units", "reset_units", "outer_iteration") if not hasattr(p, m)]
      raise TypeError(f"{type(p).__name__} is not an InnerProblem (optim4rl_tf.meta.problem): it lacks "
                      f"{', '.join(missing)}")
  names = [p.name for p in problems]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"inner problems need distinct names (their metrics' prefixes): "
                     f"{', '.join(map(repr, repeated))} appears more than once in {names}")
  return problems


def agent_params(units):
  """What the divergence guard checks of a problem's units: ``units.params`` if there is one, else all."""
  return getattr(units, "params", units)
