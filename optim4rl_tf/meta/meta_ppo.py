"""MetaPPO (docs/fidelity.md §7.5, §7.6): meta-training a learned optimizer through PPO inner updates on a Brax task.

``MetaPPO(task)`` is the inner problem (``problem.InnerProblem``) of a configs/ppo.py ``meta_*`` config, for
every optimizer core (STAR: the official MetaPPOstar); the task, its config checks and brand-new agents are
in ``meta_ppo_task``; launched with ``launch/meta_train.py``.

Training units: U units (``num_units``; the official code has one per accelerator device, so 1 on one
device), each with ``env.num_envs / U`` Brax envs (the flat env state is unit-major, U * E entries), its own
agent (policy and value MLPs), its own observation normaliser and optimizer state.

  * ``inner_step``: one FULL PPO training step (§7.4 items 1-3 via ``ppo_trainer.graph_rollout`` and
    ``ppo.sgd_epochs``): a rollout of ``unrolls`` unrolls, then update_epochs x num_minibatches optimizer
    steps (``updates`` in the returned record), each on the clipped per-unit gradient;
  * ``meta_loss``: one meta rollout with theta_M and the unit's normaliser (key ``fold_in(key,
    META_KEY_SALT)``), the on-policy PPO loss of the whole batch (behaviour log-probs = target log-probs
    under theta_M: rho == 1 as a function of theta, so, as in the official code, the clipped surrogate gives
    no meta-gradient).

``Task.meta_grad_through_env`` (config ``meta_grad_through_env``, default True, the official estimator): the
rollouts use the live parameters, normaliser and env state, so under ``estimators.FullUnroll`` the
meta-gradient also runs through the reparameterised actions, the differentiable Brax step (the graph
bridge: the jax2tf-converted step with JAX's own VJP), the env state carried between rollouts, the running
normaliser and the meta rollout's observations, as the official ``jax.grad`` does. False (a cheaper
APPROXIMATION): rollout data are constants (stop-gradient inputs), so only theta_M's direct use in the
meta-loss remains (value loss and entropy term) and ``estimators.ReplayedVJP`` applies (Optim4RL & co).
The agent gradients are computed from stop-gradient inputs unless the optimizer is second-order (STAR under
``FullUnroll``: d g / d theta is part of the meta-gradient).

Memory under FullUnroll: the tape keeps every rollout step's Brax state and activations and every
optimizer step's activations of ALL units at once (no unit chunking); see docs/fidelity.md §7.5.
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_trainer
from optim4rl_tf.meta import meta_ppo_task
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import registry
from optim4rl_tf.optimizers import transforms

SUM_METRICS = ("loss", "entropy", "value_loss", "update_norm")
META_KEY_SALT = 1 << 16  # the meta rollout's key: fold_in(key, META_KEY_SALT)


class UnitState(NamedTuple):
  params: Any  # list [U, ...]
  opt_state: Any  # Optim4RL & co: tuple of [H, U, P] (feature-major); STAR: list of star.StarState
  norm: Any  # ppo.NormState [U, ...]
  env_state: Any  # flat Brax state (leading axis U * E, unit-major)
  obs: Any  # [U, E, D]


def _stop(structure):
  return tf.nest.map_structure(tf.stop_gradient, structure)


def meta_loss_fn(task, params, norm, meta_batch, loss_key):
  """(mean over units of the on-policy PPO loss of the meta batch with theta_M, its metrics)."""
  loss, metrics = ppo.ppo_loss(task.net, params, norm, meta_batch, loss_key, task.hparams, on_policy=True)
  return tf.reduce_mean(loss), metrics


class MetaPPO:
  """MetaPPO on one Brax task (``meta_ppo_task.Task``, module doc) as a ``problem.InnerProblem``."""

  unit_axes = {}  # the unit axis first everywhere (env_state: U * E, reset in blocks of E)

  def __init__(self, task):
    self.task = task
    self.name = task.name
    self.num_units = task.num_units
    self.inner_steps = task.inner_updates

  def init_units(self, optimizer, key):
    """Brand-new units: agents, normalisers, a fresh optimizer state and freshly reset envs."""
    params, norm, flat, obs = meta_ppo_task.fresh_agents(self.task, key)
    return UnitState(params=params, opt_state=optimizer.init(params), norm=norm, env_state=flat, obs=obs)

  def _rollout(self, params, norm, flat, obs, key, unrolls):
    t = self.task
    if not t.meta_grad_through_env:  # rollout data are constants
      params, norm, flat, obs = _stop((params, norm, flat, obs))
    return ppo_trainer.graph_rollout(t.env, t.net, params, norm, flat, obs, key, unrolls, t.unroll_length, t.num_units)

  def inner_step(self, optimizer, units, key):
    t = self.task
    ks = tf.random.experimental.stateless_split(key, 2)
    batch, flat, obs = self._rollout(units.params, units.norm, units.env_state, units.obs, ks[0], t.unrolls)

    clipped = transforms.chain(transforms.clip(t.grad_clip), optimizer)

    def update(grads, opt_state, phi_=None, params=None):
      del phi_
      return clipped.update(grads, opt_state, params, t.learning_rate)

    params, opt_state, norm, m = ppo.sgd_epochs(t.net,
                                                transforms.AgentOptimizer("meta_ppo", None, update),
                                                t.hparams,
                                                units.params,
                                                units.opt_state,
                                                units.norm,
                                                batch,
                                                ks[1],
                                                t.update_epochs,
                                                t.num_minibatches,
                                                t.normalize_observations,
                                                constant_grads=False)
    metrics = {name: tf.reduce_mean(m[name]) / t.inner_updates for name in SUM_METRICS}
    metrics["reward"] = tf.stop_gradient(tf.reduce_mean(batch.reward)) / t.inner_updates
    return problem_lib.InnerStep(UnitState(params=params, opt_state=opt_state, norm=norm, env_state=flat, obs=obs),
                                 metrics,
                                 updates=t.update_epochs * t.num_minibatches)

  def meta_loss(self, units, key, sums, with_grads=False):
    t = self.task
    mks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(key, META_KEY_SALT), 2)
    meta_batch, flat, obs = self._rollout(units.params, units.norm, units.env_state, units.obs, mks[0], t.meta_unrolls)
    grads = None
    if with_grads:
      with tf.GradientTape() as tape:
        tape.watch(units.params)
        loss, mm = meta_loss_fn(t, units.params, units.norm, meta_batch, mks[1])
      grads = tape.gradient(loss, units.params)
    else:
      loss, mm = meta_loss_fn(t, units.params, units.norm, meta_batch, mks[1])
    stop = tf.stop_gradient
    metrics = {
        "meta_loss": stop(loss),
        "meta_value_loss": stop(tf.reduce_mean(mm["value_loss"])),
        "meta_entropy": stop(tf.reduce_mean(mm["entropy"])),
        "agent_reward_per_step": stop(tf.reduce_mean(meta_batch.reward)),
        "inner_loss": sums["loss"],
        "inner_value_loss": sums["value_loss"],
        "inner_entropy": sums["entropy"],
        "inner_update_norm": sums["update_norm"],
        "inner_reward_per_step": sums["reward"]
    }
    return problem_lib.MetaLoss(loss, units._replace(env_state=flat, obs=obs), metrics, grads)


def build(config):
  """The config's inner problem: one :class:`MetaPPO` (builds the Brax env)."""
  return [MetaPPO(meta_ppo_task.build_task(config))]


def env_steps_per_iteration(config, problems):
  del config
  return meta_ppo_task.env_steps_per_iteration(problems[0].task)


REGISTRATION = registry.Registration(validate=meta_ppo_task.validate_config,
                                     num_iterations=meta_ppo_task.num_iterations,
                                     build=build,
                                     env_steps_per_iteration=env_steps_per_iteration,
                                     console={"reward/step": "inner_reward_per_step"},
                                     prefix=lambda config, problems: f"[meta_ppo {problems[0].name}] ",
                                     building_message=lambda config:
                                     (f"[meta_ppo {config.env.name} {config.optimizer.name}] building (Brax "
                                      "compiles for minutes on CPU)..."),
                                     through_data=lambda config: bool(config.get("meta_grad_through_env", True)))
