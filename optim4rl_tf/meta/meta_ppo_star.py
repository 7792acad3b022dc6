"""MetaPPO for STAR (the official MetaPPOstar, notes §6.5 "Gradient flow", §7.5): one outer iteration.

The task, configs, trainer, pipeline schedule and outputs are MetaPPO's (``meta_ppo.py``; chosen with
``--config.optimizer.name=star``). What differs is the meta-gradient: STAR's inputs (the agent gradient and
parameters) are NOT under stop-gradient, so, as in ``meta_a2c_star``, the M inner PPO training steps
(update_epochs x num_minibatches STAR steps each, ``ppo.sgd_epochs``) run under an outer
``tf.GradientTape`` that watches phi. Each agent gradient comes from ``ppo.loss_and_grads``'s own tape,
recorded by the outer one, so d g / d theta (the second-order path) is part of the meta-gradient; the
rollouts run with stop-gradient parameters under ``outer.stop_recording()`` (data, notes §5.3).

As in MetaPPO (see its module doc), Brax sits behind the bridge, so paths through the data that theta_k
generated (actions, simulator, normaliser statistics) are absent; the meta-loss is the on-policy PPO loss of
a fresh unroll with theta_M (value and entropy paths). Memory grows with every inner step's activations
(kept for the backward pass), so there is no unit chunking: use few units or a GPU.

Shapes: agent parameters are a list of [U, ...] tensors, STAR states a list of ``star.StarState`` with the
unit axis, the normaliser ``ppo.NormState`` [U, ...], observations [U, E, D].
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_train
from optim4rl_tf.meta import meta_ppo
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
  drops the path through the agent gradients (not the official method; for comparison)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  key = keys[1]
  u = task.num_units
  names = sorted(phi)
  phi_list = [phi[k] for k in names]
  params, states, norm, flat, obs = units
  sums = {k: 0.0 for k in ("loss", "entropy", "value_loss", "update_norm", "reward")}
  with tf.GradientTape() as outer:
    outer.watch(phi_list)
    opt = _differentiable_star(task, core, dict(zip(names, phi_list)), second_order)
    for k in range(task.inner_updates):
      ks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(key, k), 2)
      with outer.stop_recording():
        frozen = [tf.stop_gradient(p) for p in params]
        batch, flat, obs = ppo_train.graph_rollout(task.env, task.net, frozen, norm, flat, obs, ks[0],
                                                   task.unrolls, task.unroll_length, u)
      params, states, norm, m = ppo.sgd_epochs(task.net, opt, task.hparams, params, states, norm, batch,
                                               ks[1], task.update_epochs, task.num_minibatches,
                                               task.normalize_observations)
      with outer.stop_recording():
        for name in ("loss", "entropy", "value_loss", "update_norm"):
          sums[name] += tf.reduce_mean(m[name]) / task.inner_updates
        sums["reward"] += tf.reduce_mean(batch.reward) / task.inner_updates
    mks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(key, 1 << 16), 2)
    with outer.stop_recording():
      frozen = [tf.stop_gradient(p) for p in params]
      mbatch, flat, obs = ppo_train.graph_rollout(task.env, task.net, frozen, norm, flat, obs, mks[0],
                                                  task.meta_unrolls, task.unroll_length, u)
    loss, mm = ppo.ppo_loss(task.net, params, norm, mbatch, mks[1], task.hparams, on_policy=True)
    meta_loss = tf.reduce_mean(loss)
  grads = outer.gradient(meta_loss, phi_list, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  metrics = meta_ppo.iteration_metrics(meta_loss, mm, mbatch, sums)
  new_units = StarPPOUnitState(params=[tf.stop_gradient(p) for p in params],
                               states=tf.nest.map_structure(tf.stop_gradient, states),
                               norm=tf.nest.map_structure(tf.stop_gradient, norm), env_state=flat, obs=obs)
  return new_units, dict(zip(names, grads)), metrics
