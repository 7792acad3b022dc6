"""MetaPPO's unroll and its meta-gradient THROUGH THE ENVIRONMENT (docs/fidelity.md §7.5), the default.

One outer iteration of MetaPPO runs M full PPO training steps (``unroll``: rollout, normaliser update,
``update_epochs`` x ``num_minibatches`` learned-optimizer steps) and one meta rollout with theta_M; the
meta-loss is the on-policy PPO loss of the meta rollout. Every MetaPPO estimator shares ``unroll`` (same
keys, so the same forward numbers); they differ in what the meta-gradient differentiates.

The official MetaPPO takes ``jax.grad`` of the whole iteration with no stop-gradient on rollout data, so
its meta-gradient also runs through (a) phi -> theta_k -> the reparameterised actions u = loc + sigma*eps
-> Brax -> the observations (and rewards and dones) of later rollouts, (b) the running observation
normaliser, (c) the environment state carried between rollouts and into the meta rollout and (d) the meta
rollout's own observations, through V(obs) in the value loss and the logits in the entropy term. The
agent gradients g_k enter the learned optimizer under stop-gradient (as in MetaA2C), and the clipped
surrogate contributes nothing (rho == 1 as a function of theta). Because rollout data depend on phi, the
replay shortcut (``estimators.replayed_vjp``, which assumes constant data) does not apply:
``outer_gradient`` (``estimators.full_unroll``) records the whole iteration -- rollouts through the
differentiable graph bridge (``brax_bridge``: the jax2tf-converted Brax step with JAX's own VJP), normaliser
updates, the learned-optimizer steps -- on ONE outer ``tf.GradientTape`` and differentiates the meta-loss
w.r.t. phi.
The agent gradients are computed from stop-gradient inputs (``ppo.sgd_epochs(constant_grads=True)``), so
the tape never holds the inner backward passes. ``meta_ppo_star`` uses the same ``unroll`` with STAR's
differentiable gradient input (second-order terms included).

Memory: the tape keeps every rollout step's Brax state and activations and every optimizer step's
learned-optimizer activations (M x epochs x minibatches of them, [H, U*P] each) of ALL units at once (no
unit chunking); see docs/fidelity.md §7.5 for measured sizes. The cheaper approximation
(``meta_grad_through_env=False``: rollout data constants, only theta_M's direct value and entropy paths,
replayed in chunks) is ``meta_ppo.inner_loop`` + ``estimators.replayed_vjp``.
"""

import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_train
from optim4rl_tf.meta import estimators
from optim4rl_tf.optimizers import transforms

SUM_METRICS = ("loss", "entropy", "value_loss", "update_norm", "reward")
META_KEY_SALT = 1 << 16  # the meta rollout's key: fold_in(key, META_KEY_SALT)


def _stop(structure):
  return tf.nest.map_structure(tf.stop_gradient, structure)


def unroll(task, opt, params, opt_state, norm, flat, obs, key, constant_grads=False, rollout_scope=None):
  """Steps 2-3 of an outer iteration (``meta_ppo`` module doc) up to, not including, the meta-loss.

  opt: an ``AgentOptimizer`` for ``ppo.sgd_epochs``; params list [U, ...]; norm ``ppo.NormState``; flat
  the env's flat state; obs [U, E, D]; key int32 [2]. ``constant_grads``: see ``ppo.sgd_epochs``.
  ``rollout_scope``: None -- the rollouts use the live parameters and normaliser, so an active outer tape
  records them (through the environment); or a context-manager factory (e.g. ``tape.stop_recording``)
  under which the rollouts run with stop-gradient inputs (rollout data are constants).

  Returns (params, opt_state, norm, flat, obs, meta_batch, loss_key, sums): the state after the M updates
  and the meta rollout (the normaliser is not updated with the meta batch), the meta rollout's
  ``ppo.Batch``, the key of the meta-loss's entropy sample, and the inner updates' mean metrics
  (``SUM_METRICS``, stop-gradient).
  """
  u = task.num_units

  def rollout(params, norm, flat, obs, rkey, unrolls):
    if rollout_scope is None:
      return ppo_train.graph_rollout(task.env, task.net, params, norm, flat, obs, rkey, unrolls, task.unroll_length, u)
    with rollout_scope():
      return ppo_train.graph_rollout(task.env, task.net, _stop(params), _stop(norm), _stop(flat), _stop(obs), rkey,
                                     unrolls, task.unroll_length, u)

  sums = {k: 0.0 for k in SUM_METRICS}
  for k in range(task.inner_updates):
    ks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(key, k), 2)
    batch, flat, obs = rollout(params, norm, flat, obs, ks[0], task.unrolls)
    params, opt_state, norm, m = ppo.sgd_epochs(task.net,
                                                opt,
                                                task.hparams,
                                                params,
                                                opt_state,
                                                norm,
                                                batch,
                                                ks[1],
                                                task.update_epochs,
                                                task.num_minibatches,
                                                task.normalize_observations,
                                                constant_grads=constant_grads)
    for name in ("loss", "entropy", "value_loss", "update_norm"):
      sums[name] += tf.reduce_mean(m[name]) / task.inner_updates
    sums["reward"] += tf.stop_gradient(tf.reduce_mean(batch.reward)) / task.inner_updates
  mks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(key, META_KEY_SALT), 2)
  meta_batch, flat, obs = rollout(params, norm, flat, obs, mks[0], task.meta_unrolls)
  return params, opt_state, norm, flat, obs, meta_batch, mks[1], sums


def meta_loss_fn(task, params, norm, meta_batch, loss_key):
  """(mean over units of the on-policy PPO loss of the meta batch with theta_M, its metrics)."""
  loss, metrics = ppo.ppo_loss(task.net, params, norm, meta_batch, loss_key, task.hparams, on_policy=True)
  return tf.reduce_mean(loss), metrics


def iteration_metrics(meta_loss, meta_loss_metrics, meta_batch, sums):
  """The logged scalars of one outer iteration (``sums``: inner-update means of loss, entropy,
  value_loss, update_norm and reward)."""
  stop = tf.stop_gradient
  return {
      "meta_loss": stop(meta_loss),
      "meta_value_loss": stop(tf.reduce_mean(meta_loss_metrics["value_loss"])),
      "meta_entropy": stop(tf.reduce_mean(meta_loss_metrics["entropy"])),
      "agent_reward_per_step": stop(tf.reduce_mean(meta_batch.reward)),
      "inner_loss": sums["loss"],
      "inner_value_loss": sums["value_loss"],
      "inner_entropy": sums["entropy"],
      "inner_update_norm": sums["update_norm"],
      "inner_reward_per_step": sums["reward"]
  }


def differentiable_optimizer(task, core, phi):
  """An AgentOptimizer for ``ppo.sgd_epochs`` whose state is the feature-major hidden state [H, U, P]:
  clip the per-unit gradient, one ``core.update_feature_major`` step with the explicit phi (uncompiled, so
  an outer tape differentiates it w.r.t. phi and the hidden chain; g enters under stop-gradient)."""

  def update(grads, hidden, phi_=None, params=None):
    del phi_, params
    flat = estimators.flatten_units(grads)
    if task.grad_clip > 0:
      flat = tf.clip_by_value(flat, -task.grad_clip, task.grad_clip)
    delta, hidden = core.update_feature_major(phi, hidden, flat, task.learning_rate)
    return estimators.unflatten_units(delta, grads), hidden

  return transforms.AgentOptimizer("meta_ppo_through_env", None, update)


def outer_gradient(task, core, phi, units, key):
  """The through-environment meta-gradient (``estimators.full_unroll``) of one outer iteration for
  Optim4RL, LinearOptim and L2LGD² (``units``: ``meta_ppo.UnitState`` after the pipeline reset).

  Returns ((params, hidden, norm, flat, obs) after the iteration, stop-gradient; meta-gradient dict like phi
  (mean over units, as the meta-loss is); metrics dict of scalars)."""
  params, hidden, norm, flat, obs = units

  def unroll_fn(local, tape):
    del tape  # everything is recorded, the rollouts too
    opt = differentiable_optimizer(task, core, local)
    params_m, hidden_m, norm_m, flat_m, obs_m, meta_batch, loss_key, sums = unroll(task,
                                                                                   opt,
                                                                                   params,
                                                                                   hidden,
                                                                                   norm,
                                                                                   flat,
                                                                                   obs,
                                                                                   key,
                                                                                   constant_grads=True)
    meta_loss, mm = meta_loss_fn(task, params_m, norm_m, meta_batch, loss_key)
    state = (params_m, hidden_m, norm_m, flat_m, obs_m)
    return meta_loss, (state, iteration_metrics(meta_loss, mm, meta_batch, sums))

  grads, (state, metrics) = estimators.full_unroll(phi, unroll_fn)
  return _stop(state), grads, metrics
