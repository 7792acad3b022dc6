"""MetaPPO for STAR (the official MetaPPOstar, docs/fidelity.md §6.5 "Gradient flow", §7.6): one outer iteration.

The task, configs, trainer, pipeline schedule and outputs are MetaPPO's (``meta_ppo.py``; chosen with
``--config.optimizer.name=star``). What differs is the meta-gradient: STAR's inputs (the agent gradient and
parameters) are NOT under stop-gradient, so, as in ``meta_a2c_star``, the M inner PPO training steps
(update_epochs x num_minibatches STAR steps each, ``ppo.sgd_epochs``) run under an outer
``tf.GradientTape`` that watches phi. Each agent gradient comes from ``ppo.loss_and_grads``'s own tape,
recorded by the outer one, so d g / d theta (the second-order path) is part of the meta-gradient.

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

from optim4rl_tf.meta import meta_ppo
from optim4rl_tf.meta import meta_ppo_grad
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import transforms


class StarPPOUnitState(NamedTuple):
  params: Any       # list [U, ...]
  states: Any       # list of star.StarState (unit axis), one per parameter tensor
  norm: Any         # ppo.NormState [U, ...]
  env_state: Any    # flat Brax state (leading axis U * E)
  obs: Any          # [U, E, D]


def fresh_units(task, core, key):
  """Brand-new units: agents, zero STAR accumulators, normalisers and freshly reset envs."""
  params, norm, flat, obs = meta_ppo.fresh_agents(task, key)
  return StarPPOUnitState(params=params, states=core.init_states(params, unit_axis=True), norm=norm,
                          env_state=flat, obs=obs)


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units whose reset index matches ``iteration`` (pipeline schedule)."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)

  def reset():
    fresh = fresh_units(task, core, key)
    kept = pipeline.select_units(mask, fresh._replace(env_state=()), units._replace(env_state=()))
    env_mask = tf.repeat(mask, task.env.num_envs // task.num_units)          # unit mask -> per env
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
    new_params, states = core.update_list(phi, states, grads, params, task.learning_rate, unit_axis=True)
    return [n - p for n, p in zip(new_params, params)], states

  return transforms.AgentOptimizer("meta_ppo_star", None, update)


def outer_iteration(task, core, phi, units, iteration, key, second_order=True):
  """Reset, M PPO training steps with STAR and the meta-loss unroll, under one outer tape. Returns
  (new_units, meta-gradient dict (mean over units), metrics dict of scalars). ``second_order=False``
  drops the path through the agent gradients (not the official method; for comparison). With
  ``task.meta_grad_through_env`` (default) the rollouts are recorded too (docs/fidelity.md §7.5-§7.6);
  otherwise they run outside the tape with stop-gradient inputs (the approximation)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  key = keys[1]
  names = sorted(phi)
  phi_list = [phi[k] for k in names]
  params, states, norm, flat, obs = units
  with tf.GradientTape() as outer:
    outer.watch(phi_list)
    opt = _differentiable_star(task, core, dict(zip(names, phi_list)), second_order)
    params, states, norm, flat, obs, mbatch, loss_key, sums = meta_ppo_grad.unroll(
        task, opt, params, states, norm, flat, obs, key, constant_grads=not second_order,
        rollout_scope=None if task.meta_grad_through_env else outer.stop_recording)
    meta_loss, mm = meta_ppo_grad.meta_loss_fn(task, params, norm, mbatch, loss_key)
  grads = outer.gradient(meta_loss, phi_list, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  metrics = meta_ppo.iteration_metrics(meta_loss, mm, mbatch, sums)
  stop = lambda s: tf.nest.map_structure(tf.stop_gradient, s)
  new_units = StarPPOUnitState(params=stop(params), states=stop(states), norm=stop(norm),
                               env_state=stop(flat), obs=stop(obs))
  return new_units, dict(zip(names, grads)), metrics
