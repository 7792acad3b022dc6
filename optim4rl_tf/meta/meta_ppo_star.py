"""MetaPPO for STAR (the official MetaPPOstar, docs/fidelity.md §6.5 "Gradient flow", §7.6): one outer iteration.

``MetaPPOstar(task)`` is the inner problem (``problem.InnerProblem``) the meta-trainer runs for STAR. The
task, configs, pipeline schedule and outputs are MetaPPO's (``meta_ppo_task``, ``meta_ppo``; chosen with
``--config.optimizer.name=star``). What differs is the meta-gradient: STAR's inputs (the agent gradient and
parameters) are NOT under stop-gradient, so, as in ``meta_a2c_star``, the M inner PPO training steps
(update_epochs x num_minibatches STAR steps each, ``ppo.sgd_epochs``) run under an outer
``tf.GradientTape`` that watches phi (``estimators.full_unroll``). Each agent gradient comes from
``ppo.loss_and_grads``'s own tape, recorded by the outer one, so d g / d theta (the second-order path) is
part of the meta-gradient.

As in MetaPPO (``meta_ppo_grad``), by default the rollouts are recorded by the outer tape too, so the
meta-gradient also runs through the reparameterised actions, the differentiable Brax step, the env state
and the running normaliser -- and, since STAR's gradient input is not stop-gradient, through the data's
effect on every agent gradient: the official ``jax.grad``. With ``meta_grad_through_env=False`` the
rollouts run with stop-gradient inputs under ``outer.stop_recording()`` (data constants; the
approximation). The meta-loss is the on-policy PPO loss of a fresh unroll with theta_M. Memory grows with
every inner step's activations (kept for the backward pass), so there is no unit chunking: use few units
or a GPU.

Shapes: agent parameters are a list of [U, ...] tensors, STAR states a list of ``star.StarState`` with the
unit axis, the normaliser ``ppo.NormState`` [U, ...], observations [U, E, D].
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import meta_ppo_grad
from optim4rl_tf.meta import meta_ppo_task
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import transforms


class StarPPOUnitState(NamedTuple):
  params: Any  # list [U, ...]
  states: Any  # list of star.StarState (unit axis), one per parameter tensor
  norm: Any  # ppo.NormState [U, ...]
  env_state: Any  # flat Brax state (leading axis U * E)
  obs: Any  # [U, E, D]


def fresh_units(task, core, key):
  """Brand-new units: agents, zero STAR accumulators, normalisers and freshly reset envs."""
  params, norm, flat, obs = meta_ppo_task.fresh_agents(task, key)
  return StarPPOUnitState(params=params,
                          states=core.init_states(params, unit_axis=True),
                          norm=norm,
                          env_state=flat,
                          obs=obs)


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units whose reset index matches ``iteration`` (pipeline schedule)."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)

  def reset():
    fresh = fresh_units(task, core, key)
    kept = pipeline.select_units(mask, fresh._replace(env_state=()), units._replace(env_state=()))
    env_mask = tf.repeat(mask, task.env.num_envs // task.num_units)  # unit mask -> per env
    return kept._replace(env_state=pipeline.select_units(env_mask, fresh.env_state, units.env_state))

  return tf.cond(tf.reduce_any(mask), reset, lambda: units)


def _differentiable_star(task, core, phi, second_order=True):
  """An AgentOptimizer for ``ppo.sgd_epochs``: clip, then a STAR step with the explicit (watched) phi.
  ``second_order=False`` stops the gradient at the agent gradient (a first-order ablation)."""

  def update(grads, states, phi_=None, params=None):
    del phi_
    if not second_order:
      grads = [tf.stop_gradient(g) for g in grads]
    if task.grad_clip > 0:
      grads = [tf.clip_by_value(g, -task.grad_clip, task.grad_clip) for g in grads]
    return core.update_list(phi, states, grads, task.learning_rate, params=params, unit_axis=True)

  return transforms.AgentOptimizer("meta_ppo_star", None, update)


def outer_iteration(task, core, phi, units, iteration, key, second_order=True):
  """Reset, M PPO training steps with STAR and the meta-loss unroll, under one outer tape
  (``estimators.full_unroll``). Returns (new_units, meta-gradient dict (mean over units), metrics dict of
  scalars). ``second_order=False`` drops the path through the agent gradients (not the official method;
  for comparison). With ``task.meta_grad_through_env`` (default) the rollouts are recorded too
  (docs/fidelity.md §7.5-§7.6); otherwise they run outside the tape with stop-gradient inputs (the
  approximation)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])

  def unroll_fn(local, outer):
    opt = _differentiable_star(task, core, local, second_order)
    params, states, norm, flat, obs, mbatch, loss_key, sums = meta_ppo_grad.unroll(
        task,
        opt,
        units.params,
        units.states,
        units.norm,
        units.env_state,
        units.obs,
        keys[1],
        constant_grads=not second_order,
        rollout_scope=None if task.meta_grad_through_env else outer.stop_recording)
    meta_loss, mm = meta_ppo_grad.meta_loss_fn(task, params, norm, mbatch, loss_key)
    state = StarPPOUnitState(params=params, states=states, norm=norm, env_state=flat, obs=obs)
    return meta_loss, (state, meta_ppo_grad.iteration_metrics(meta_loss, mm, mbatch, sums))

  grads, (state, metrics) = estimators.full_unroll(phi, unroll_fn)
  return tf.nest.map_structure(tf.stop_gradient, state), grads, metrics


class MetaPPOstar:
  """MetaPPOstar on one Brax task (``meta_ppo_task.Task``) as a ``problem.InnerProblem`` (STAR: the
  full-unroll meta-gradient, second-order path included unless ``second_order=False``)."""

  estimator = "full_unroll"

  def __init__(self, task, second_order=True):
    self.task = task
    self.name = task.name
    self.second_order = second_order

  def fresh_units(self, core, key):
    return fresh_units(self.task, core, key)

  def reset_units(self, core, units, iteration, key):
    return reset_units(self.task, core, units, iteration, key)

  def outer_iteration(self, core, phi, units, iteration, key):
    return outer_iteration(self.task, core, phi, units, iteration, key, second_order=self.second_order)
