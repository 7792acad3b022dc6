"""MetaA2C for STAR (the official MetaA2Cstar, docs/fidelity.md §5.9, §6.5 "Gradient flow"): one outer iteration, one task.

Unlike Optim4RL/LinearOptim/L2LGD², STAR's inputs (the agent gradient g and the parameters) are NOT under
stop-gradient, so its meta-gradient includes second-order terms: d g_k / d theta_k · d theta_k / d phi.
The replay trick of ``meta_a2c`` does not apply; instead (``estimators.full_unroll``) the M inner updates
run under an outer ``tf.GradientTape`` that watches phi, each agent gradient comes from an inner tape
recorded by the outer one (``star.differentiable_step``), and the rollouts run with stop-gradient
parameters under ``outer.stop_recording()`` (they are data, docs/fidelity.md §5.3). Memory grows with the
network's activations of every inner rollout, so STAR meta-training is single-task and unchunked (as in
the official code). ``MetaA2Cstar(task)`` is the inner problem the meta-trainer runs.

Agent parameters stay a list of [U, ...] tensors (STAR normalises and factors per tensor and per unit).
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.agents import a2c
from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import star


class StarUnitState(NamedTuple):
  """Per-unit state (leading axis U everywhere)."""
  params: Any  # list of [U, ...]
  states: Any  # list of star.StarState (unit_axis=True), one per parameter
  env_state: Any
  obs: Any  # [U, 1, *obs_shape]
  ep_return: Any  # [U, 1]


def fresh_units(task, core, key):
  """Fresh agents, zero STAR accumulators and iteration counts, fresh environments."""
  keys = tf.random.experimental.stateless_split(key, 3)
  params = task.net.init(tf.random.experimental.stateless_split(keys[0], task.num_units))
  env_state = task.env.reset(keys[1])
  obs = tf.reshape(task.env.observe(env_state), [task.num_units, 1] + list(task.env.obs_shape))
  return StarUnitState(params=params,
                       states=core.init_states(params, unit_axis=True),
                       env_state=env_state,
                       obs=obs,
                       ep_return=tf.zeros([task.num_units, 1]))


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units scheduled at ``iteration`` (docs/fidelity.md §5.2); every state field is per unit."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)
  return tf.cond(tf.reduce_any(mask), lambda: pipeline.select_units(mask, fresh_units(task, core, key), units),
                 lambda: units)


def outer_iteration(task, core, phi, units, iteration, key):
  """Reset, M STAR inner updates and the validation rollout, all under one outer tape
  (``estimators.full_unroll``); returns (new_units, meta-gradient dict (mean over units), metrics)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  grads, (params, states, env_state, obs, ep_return, meta_loss, metrics,
          sums) = estimators.full_unroll(phi, lambda local, outer: _unroll(task, core, local, units, keys[1], outer))
  metrics = meta_a2c.iteration_metrics(task, params, meta_loss, metrics, *sums)
  new_units = StarUnitState(params=[tf.stop_gradient(p) for p in params],
                            states=tf.nest.map_structure(tf.stop_gradient, states),
                            env_state=env_state,
                            obs=obs,
                            ep_return=ep_return)
  return new_units, grads, metrics


def _unroll(task, core, local, units, key, outer):
  """The M inner updates and the validation rollout with the watched phi ``local`` inside the tape
  ``outer`` (rollouts under ``outer.stop_recording()``: data). Returns (meta_loss, aux)."""
  n = task.num_units
  env_state, obs, ep_return = units.env_state, units.obs, units.ep_return
  ret_sum, ret_count, update_abs = 0.0, 0.0, 0.0
  params, states = list(units.params), list(units.states)
  for k in range(task.inner_updates + 1):
    with outer.stop_recording():
      frozen = [tf.stop_gradient(p) for p in params]
      traj, env_state, obs = a2c.rollout(task.net.logits, frozen, task.env, env_state, obs,
                                         tf.random.experimental.stateless_fold_in(key, k), task.rollout_steps, n)
      ep_return, rs, rc = a2c.episode_returns(ep_return, traj.rewards, traj.dones)
      ret_sum += tf.reduce_sum(rs)
      ret_count += tf.reduce_sum(rc)
    if k == task.inner_updates:
      loss, metrics = a2c.a2c_loss(task.net.apply, params, traj, task.hparams)
      meta_loss = tf.reduce_mean(loss)
      break

    def unit_loss_sum(p, traj=traj):
      return tf.reduce_sum(a2c.a2c_loss(task.net.apply, p, traj, task.hparams)[0])

    new_params, states, _ = star.differentiable_step(core,
                                                     local,
                                                     states,
                                                     params,
                                                     unit_loss_sum,
                                                     task.learning_rate,
                                                     task.grad_clip,
                                                     unit_axis=True)
    with outer.stop_recording():
      update_abs += tf.add_n([tf.reduce_sum(tf.abs(a - b)) for a, b in zip(new_params, params)])
    params = new_params
  return meta_loss, (params, states, env_state, obs, ep_return, meta_loss, metrics, (ret_sum, ret_count, update_abs))


class MetaA2Cstar(meta_a2c.MetaA2C):
  """MetaA2Cstar on one task as a ``problem.InnerProblem`` (STAR: the full-unroll meta-gradient)."""

  def fresh_units(self, core, key):
    return fresh_units(self.task, core, key)

  def reset_units(self, core, units, iteration, key):
    return reset_units(self.task, core, units, iteration, key)

  def outer_iteration(self, core, phi, units, iteration, key):
    return outer_iteration(self.task, core, phi, units, iteration, key)
