"""MetaPPO (docs/fidelity.md §7.5): meta-training a learned optimizer through PPO inner updates on a Brax task.

``MetaPPO(task)`` is the inner problem (``problem.InnerProblem``) the meta-trainer (``trainer.MetaTrainer``:
Adam on phi, clipping, NaN guard, checkpoints) runs for Optim4RL, LinearOptim and L2LGD²; STAR has its own
(``meta_ppo_star.MetaPPOstar``). The task, its config checks and brand-new agents are in ``meta_ppo_task``;
configs: configs/ppo.py ``meta_*``, launched with ``launch/meta_train.py`` (``meta.run``).

Training units: U units (``num_units``; the official code has one per accelerator device, so 1 on one
device), each with ``env.num_envs / U`` Brax envs, its own agent (policy (32,)x4, value (64,)x5), its own
observation normaliser and optimizer hidden state. Unit d is reset at outer iteration t iff
(t - 1) mod m == r_d (new agent, normaliser, zero hidden state, its envs reset; ``pipeline.py``).

One outer iteration per unit (all units batched on the unit axis):
  1. reset due units;
  2. M inner updates, each one FULL PPO training step (§7.4 items 1-3 via ``ppo_train.graph_rollout`` and
     ``ppo.sgd_epochs``): update_epochs x num_minibatches steps of the learned optimizer, phi passed
     explicitly; every clipped per-unit gradient g is recorded (M x epochs x minibatches of them);
  3. meta-loss: one unroll with theta_M and the unit's normaliser, the PPO loss of the whole batch with
     behaviour log-probs = target log-probs under theta_M (``on_policy=True``: rho == 1 as a function of
     theta, so, as in the official code, the clipped surrogate gives no meta-gradient);
  4. meta-gradient, the estimator (``estimator_name``) chosen by ``Task.meta_grad_through_env`` (config
     ``meta_grad_through_env``):
     * True (default, the official estimator): ``estimators.full_unroll`` -- steps 2-3 run under one outer
       tape and the meta-gradient flows through the reparameterised actions, the differentiable Brax step,
       the env state carried between rollouts, the running normaliser and the meta rollout's observations,
       as the official ``jax.grad`` does (``meta_ppo_grad.outer_gradient``; the agent gradients stay
       stop-gradient inside the learned optimizer);
     * False (a cheaper APPROXIMATION): ``estimators.replayed_vjp`` -- rollout data are constants, so only
       theta_M's direct use in the meta-loss remains (value loss and entropy term): the VJP of theta_M(phi)
       with d meta-loss / d theta_M, replayed from (h_0, g_0..g_K) in chunks of units.
Steps 2-3 are ``meta_ppo_grad.unroll`` for both (same keys: the same forward numbers).
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import meta_ppo_grad
from optim4rl_tf.meta import meta_ppo_task
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import transforms


class UnitState(NamedTuple):
  params: Any  # list [U, ...]
  hidden: Any  # tuple of [H, U, P]
  norm: Any  # ppo.NormState [U, ...]
  env_state: Any  # flat Brax state (leading axis U * E)
  obs: Any  # [U, E, D]


def estimator_name(task):
  """The meta-gradient estimator of ``task`` (a name in ``estimators``): "full_unroll" through the
  environment (``meta_grad_through_env``, the official one) or "replayed_vjp" (the approximation)."""
  return "full_unroll" if task.meta_grad_through_env else "replayed_vjp"


def fresh_units(task, core, key):
  """Brand-new units: agents, normalisers, zero hidden states and freshly reset envs."""
  params, norm, flat, obs = meta_ppo_task.fresh_agents(task, key)
  hidden = core.init_state_feature_major([task.num_units, task.net.num_params])
  return UnitState(params=params, hidden=hidden, norm=norm, env_state=flat, obs=obs)


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units whose reset index matches ``iteration`` (pipeline schedule)."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)

  def reset():
    fresh = fresh_units(task, core, key)
    kept = pipeline.select_units(mask, fresh._replace(hidden=(), env_state=()), units._replace(hidden=(), env_state=()))
    env_mask = tf.repeat(mask, task.env.num_envs // task.num_units)  # unit mask -> per env
    env_state = pipeline.select_units(env_mask, fresh.env_state, units.env_state)
    hidden = tuple(tf.where(mask[None, :, None], tf.zeros([], h.dtype), h) for h in units.hidden)
    return kept._replace(hidden=hidden, env_state=env_state)

  return tf.cond(tf.reduce_any(mask), reset, lambda: units)


def _recording_optimizer(task, core, phi):
  """An AgentOptimizer for ``ppo.sgd_epochs`` whose state is (hidden, TensorArray of gradients, count):
  it clips the per-unit gradient, applies the learned optimizer with the explicit phi and records g."""

  def update(grads, state, phi_=None, params=None):
    del phi_, params
    hidden, tape, count = state
    flat = estimators.flatten_units(grads)
    if task.grad_clip > 0:
      flat = tf.clip_by_value(flat, -task.grad_clip, task.grad_clip)
    delta, hidden = estimators.optimizer_step(core, phi, hidden, flat, task.learning_rate)
    return estimators.unflatten_units(delta, grads), (hidden, tape.write(count, flat), count + 1)

  return transforms.AgentOptimizer("meta_ppo_recorder", None, update)


def inner_loop(task, core, phi, units, key):
  """Steps 2-3 of the APPROXIMATION (``replayed_vjp``), without a tape on phi. Returns (new_units, grads:
  list of [U, P], cotangent [U, P], metrics dict of scalars)."""
  params, hidden, norm, flat, obs = units
  steps_per_update = task.update_epochs * task.num_minibatches
  grads_ta = tf.TensorArray(tf.float32,
                            size=task.inner_updates * steps_per_update,
                            element_shape=[task.num_units, task.net.num_params])
  opt = _recording_optimizer(task, core, phi)
  params, opt_state, norm, flat, obs, mbatch, loss_key, sums = meta_ppo_grad.unroll(task, opt, params,
                                                                                    (hidden, grads_ta, tf.constant(0)),
                                                                                    norm, flat, obs, key)
  hidden, grads_ta, _ = opt_state
  all_grads = tf.unstack(grads_ta.stack(), num=task.inner_updates * steps_per_update)
  # Step 3: the meta-loss on the fresh unroll with theta_M; rollout data are constants here.
  with tf.GradientTape() as tape:
    tape.watch(params)
    meta_loss, mm = meta_ppo_grad.meta_loss_fn(task, params, norm, mbatch, loss_key)
  cotangent = estimators.flatten_units(tape.gradient(meta_loss, params))
  metrics = meta_ppo_grad.iteration_metrics(meta_loss, mm, mbatch, sums)
  new_units = UnitState(params=params, hidden=hidden, norm=norm, env_state=flat, obs=obs)
  return new_units, all_grads, cotangent, metrics


def outer_iteration(task, core, phi, units, iteration, key):
  """Steps 1-4 for one task. Returns (new_units, meta_grad dict (mean over units), metrics)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  if estimator_name(task) == "full_unroll":
    state, grads, metrics = meta_ppo_grad.outer_gradient(task, core, phi, units, keys[1])
    return UnitState(*state), grads, metrics
  new_units, all_grads, cotangent, metrics = inner_loop(task, core, phi, units, keys[1])
  grads = estimators.replayed_vjp(core,
                                  phi,
                                  units.hidden,
                                  all_grads,
                                  cotangent,
                                  task.learning_rate,
                                  chunk_size=task.chunk_size,
                                  num_units=task.num_units,
                                  params_per_unit=task.net.num_params,
                                  name=task.name)
  return new_units, grads, metrics


class MetaPPO:
  """MetaPPO on one Brax task (``meta_ppo_task.Task``) as a ``problem.InnerProblem`` (Optim4RL,
  LinearOptim, L2LGD²); ``estimator``: see :func:`estimator_name`."""

  def __init__(self, task):
    self.task = task
    self.name = task.name
    self.estimator = estimator_name(task)

  def fresh_units(self, core, key):
    return fresh_units(self.task, core, key)

  def reset_units(self, core, units, iteration, key):
    return reset_units(self.task, core, units, iteration, key)

  def outer_iteration(self, core, phi, units, iteration, key):
    return outer_iteration(self.task, core, phi, units, iteration, key)
