"""MetaA2C: one outer iteration of meta-training a learned optimizer on one task (docs/fidelity.md §5.1-§5.5).

``MetaA2C(task)`` is the inner problem the meta-trainer runs (``problem.InnerProblem``); its methods are the
functions of this module with the task bound.

Every training unit is ONE environment with its own agent, its own optimizer hidden state and its own
environment state; agent parameters and hidden states carry the unit axis U (shapes [U, ...]).

One outer iteration, top to bottom (``outer_iteration``):

  1. reset the units whose turn it is (pipeline schedule, ``pipeline.py``);
  2. for k = 0..M-1: roll out 20 steps with theta_k, g_k = grad of the unit's own single-env A2C loss,
     clip g_k elementwise, delta_k, h_{k+1} = core.update(phi, h_k, g_k, lr), theta_{k+1} = theta_k + delta_k;
  3. validation rollout with theta_M; meta-loss = mean over units of the same A2C loss;
     cotangent = d meta-loss / d theta_M (per unit: its own gradient / U);
  4. meta-gradient (``meta_gradient``, i.e. ``estimators.replayed_vjp``): g_k enters the optimizer under
     stop-gradient and the rollouts are constants, so theta_M = theta_0 + sum_k delta_k(phi) depends on
     phi only through the optimizer's deltas and hidden-state chain. The meta-gradient is therefore the
     vector-Jacobian product of sum_k delta_k(phi) with that cotangent, recomputed ("replayed") from the
     stored (h_0, g_0..g_{M-1}) under a GradientTape, in chunks of units whose gradients are summed.
     Chunking changes only memory, never the rollouts, so chunked and unchunked meta-gradients agree to
     float rounding.

Layout: the learned optimizer sees all agent parameters of all units as one coordinate matrix
[U, P] (each unit's parameters flattened and concatenated); hidden states are kept feature-major,
[H, U, P], so an update is one [H, U*P] computation, compiled with XLA.

Memory: steps 1-3 keep g_k for all units (M floats per coordinate); the tape of step 4 holds the
optimizer's activations for one chunk only.
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf import envs
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import cores
from optim4rl_tf.utils import config_checks as cc

# The flat [U, P] layout and the learned-optimizer step live with the estimator that replays them; these
# names stay importable from here (the tests and benchmarks use them).
CHUNK_COORDS = estimators.CHUNK_COORDS
PARALLEL = estimators.PARALLEL
auto_chunk = estimators.auto_chunk
flatten_units = estimators.flatten_units
unflatten_units = estimators.unflatten_units
optimizer_step = estimators.optimizer_step


class Task(NamedTuple):
  """Static description of one meta-training task."""
  name: str
  env: Any  # optim4rl_tf.envs environment with num_envs == num_units (one env per unit)
  net: Any  # optim4rl_tf.agents.networks.ActorCriticNet
  num_units: int
  learning_rate: float  # agent lr, a multiplier on the optimizer output (docs/fidelity.md §5.5)
  grad_clip: float  # elementwise clip of the agent gradient (<= 0: off)
  reset_indices: Any  # int32 [num_units] (pipeline.reset_indices)
  reset_interval: int  # m (<= 0: no pipeline)
  hparams: Any  # a2c.A2CHParams
  rollout_steps: int = 20
  inner_updates: int = 4
  chunk_size: int = 0  # units per meta-gradient chunk (0: auto, about CHUNK_COORDS coordinates)


class UnitState(NamedTuple):
  """Per-unit state carried across outer iterations (leading axis U everywhere)."""
  params: Any  # list of [U, ...]
  hidden: Any  # tuple (one per optimizer state) of [H, U, P] (feature-major, P = params per unit)
  env_state: Any  # env state, leading axis U
  obs: Any  # [U, 1, *obs_shape]
  ep_return: Any  # [U, 1] running return of each unit's unfinished episode


def validate_config(config):
  """The MetaA2C fields of a configs/meta_a2c.py config (``meta.run.validate_config`` checks the fields
  every meta-training config shares first). One clear ValueError per bad field, two tasks of one name
  included (a task's metrics and units are keyed by its env_name); returns the number of outer iterations."""
  cc.check_choice("optimizer.name", config.optimizer.name, cores.LEARNED_NAMES + ("star",))
  if config.optimizer.name != "star":  # STAR has its own fixed sizes
    cores.positive_int(config.optimizer.hidden_size, "optimizer.hidden_size")
    cores.positive_ints(config.optimizer.mlp_dims, "optimizer.mlp_dims")
  if config.optimizer.name == "star" and len(config.tasks) > 1:
    raise ValueError("STAR meta-training is single-task (as in the official MetaA2Cstar)")
  if not config.tasks:
    raise ValueError("config.tasks is empty: give at least one task")
  first = {}
  for i, task in enumerate(config.tasks):
    cc.check_choice(f"tasks[{i}].env_name", task.env_name, envs.ENV_NAMES)
    if task.env_name in first:
      raise ValueError(f"tasks[{first[task.env_name]}] and tasks[{i}] are both {task.env_name!r}: each task "
                       "may appear once (its metrics and units are named after its env_name)")
    first[task.env_name] = i
    n = task_units(config, task)
    cc.check_positive_int(f"tasks[{i}].num_units", n)
    cc.check_positive(f"tasks[{i}].learning_rate", task.learning_rate)
    cc.check_positive(f"tasks[{i}].reward_scale", task.reward_scale)
    chunk = int(config.chunk_size)
    if 0 < chunk < n and n % chunk:
      raise ValueError(f"chunk_size={chunk} must divide the number of units of tasks[{i}] ({n})")
  units = config.get("num_units", 0)
  if isinstance(units, bool) or not isinstance(units, int) or units < 0:
    raise ValueError(f"num_units must be a non-negative integer (0: each task's own), got {units!r}")
  cc.check_positive_int("rollout_steps", config.rollout_steps)
  cc.check_positive_int("inner_updates", config.inner_updates)
  cc.check_nonnegative_int("chunk_size", config.chunk_size)
  iterations = num_iterations(config)
  if iterations < 1:
    raise ValueError(f"train_steps={config.train_steps} is less than one outer iteration; "
                     "raise train_steps or set num_iterations")
  return iterations


def num_iterations(config):
  """T = floor(train_steps / macro_step), macro_step = n * rollout_steps * (M + 1) (§5.8)."""
  if config.num_iterations > 0:
    return int(config.num_iterations)
  macro = task_units(config, config.tasks[0]) * config.rollout_steps * (config.inner_updates + 1)
  return int(config.train_steps // macro)


def task_units(config, spec):
  """A task's number of units (``config.num_units`` > 0 overrides every task's own)."""
  return int(config.num_units) if config.get("num_units", 0) > 0 else int(spec.num_units)


def build_tasks(config):
  """Builds :class:`Task`s from the config's ``tasks`` list."""
  hparams = a2c.A2CHParams(discount=config.discount,
                           gae_lambda=config.gae_lambda,
                           critic_weight=config.critic_weight,
                           entropy_weight=config.entropy_weight)
  tasks = []
  for spec in config.tasks:
    n = task_units(config, spec)
    env = envs.make(spec.env_name, n, reward_scale=spec.reward_scale)
    net = networks.make_network(spec.env_name, env.obs_shape, env.num_actions)
    interval = config.reset_interval if config.pipeline else -1
    tasks.append(
        Task(name=spec.env_name,
             env=env,
             net=net,
             num_units=n,
             learning_rate=float(spec.learning_rate),
             grad_clip=float(config.agent_grad_clip),
             reset_indices=tf.constant(pipeline.reset_indices(n, interval)),
             reset_interval=int(interval),
             hparams=hparams,
             rollout_steps=config.rollout_steps,
             inner_updates=config.inner_updates,
             chunk_size=config.chunk_size))
  return tasks


def fresh_units(task, core, key):
  """Brand-new units: fresh agents (independent per unit), zero hidden states, fresh envs."""
  keys = tf.random.experimental.stateless_split(key, 3)
  unit_keys = tf.random.experimental.stateless_split(keys[0], task.num_units)
  params = task.net.init(unit_keys)
  hidden = core.init_state_feature_major([task.num_units, task.net.num_params])
  env_state = task.env.reset(keys[1])
  obs = tf.reshape(task.env.observe(env_state), [task.num_units, 1] + list(task.env.obs_shape))
  return UnitState(params=params, hidden=hidden, env_state=env_state, obs=obs, ep_return=tf.zeros([task.num_units, 1]))


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units whose reset index matches ``iteration`` (§5.2); others unchanged."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)

  def reset():
    fresh = fresh_units(task, core, key)
    kept = pipeline.select_units(mask, fresh._replace(hidden=()), units._replace(hidden=()))
    # Zero the reset units' hidden states in place (no [H, U, P] tensor of zeros is materialised).
    hidden = tuple(tf.where(mask[None, :, None], tf.zeros([], h.dtype), h) for h in units.hidden)
    return kept._replace(hidden=hidden)

  return tf.cond(tf.reduce_any(mask), reset, lambda: units)


def iteration_metrics(task, params, meta_loss, loss_metrics, ret_sum, ret_count, update_abs):
  """Scalars logged per task and outer iteration (shared by MetaA2C and MetaA2Cstar)."""
  num_coords = float(sum(int(p.shape.num_elements()) for p in params))
  return {
      "meta_loss": meta_loss,
      "agent_return": ret_sum / tf.maximum(ret_count, 1.0),  # episodes ended in this iteration's rollouts
      "episodes": ret_count,
      "entropy": tf.reduce_mean(loss_metrics["entropy"]),
      "update_abs_mean": update_abs / (num_coords * task.inner_updates),
  }


def inner_loop(task, core, phi, units, key):
  """Steps 2-3 for all units, without a tape.

  Returns (new_units, grads: list of M [U, P] clipped per-unit gradients, cotangent [U, P],
  metrics dict of scalars, validation trajectory).
  """
  params, hidden, env_state, obs, ep_return = units
  n = task.num_units
  all_grads, ret_sum, ret_count, update_abs = [], 0.0, 0.0, 0.0
  ok = tf.constant(True)
  for k in range(task.inner_updates + 1):
    # Divergence guard: parameters that went non-finite or absurd (pipeline.all_sane) never reach the
    # sampler; zeros stand in and ``params_ok`` = 0 makes the meta-trainer skip the iteration.
    ok = tf.logical_and(ok, pipeline.all_sane(params))
    used = pipeline.or_zeros(ok, params)
    traj, env_state, obs = a2c.rollout(task.net.logits, used, task.env, env_state, obs,
                                       tf.random.experimental.stateless_fold_in(key, k), task.rollout_steps, n)
    ep_return, rs, rc = a2c.episode_returns(ep_return, traj.rewards, traj.dones)
    ret_sum += tf.reduce_sum(rs)
    ret_count += tf.reduce_sum(rc)
    loss, metrics, grads = a2c.loss_and_grads(task.net.apply, used, traj, task.hparams)
    if k == task.inner_updates:  # validation rollout: the meta-loss, no agent update
      val_traj = traj
      cotangent = flatten_units(grads) / n
      meta_loss = tf.reduce_mean(loss)
      break
    flat = flatten_units(grads)
    if task.grad_clip > 0:
      flat = tf.clip_by_value(flat, -task.grad_clip, task.grad_clip)
    all_grads.append(flat)
    delta, hidden = optimizer_step(core, phi, hidden, flat, task.learning_rate)
    params = [p + d for p, d in zip(params, unflatten_units(delta, params))]
    update_abs += tf.reduce_sum(tf.abs(delta))
  metrics = iteration_metrics(task, params, meta_loss, metrics, ret_sum, ret_count, update_abs)
  metrics["params_ok"] = tf.cast(tf.logical_and(ok, pipeline.all_sane(params)), tf.float32)
  new_units = UnitState(params=params, hidden=hidden, env_state=env_state, obs=obs, ep_return=ep_return)
  return new_units, all_grads, cotangent, metrics, val_traj


def meta_gradient(task, core, phi, hidden0, all_grads, cotangent):
  """Sum over units of d(unit's meta-loss share)/d phi, replayed in chunks (step 4;
  ``estimators.replayed_vjp`` with the task's lr, units and chunk size).

  hidden0: tuple of [H, U, P] (hidden states at the start of the iteration); all_grads: list of M
  [U, P]; cotangent: [U, P]. Returns a dict like ``phi``.
  """
  return estimators.replayed_vjp(core,
                                 phi,
                                 hidden0,
                                 all_grads,
                                 cotangent,
                                 task.learning_rate,
                                 chunk_size=task.chunk_size,
                                 num_units=task.num_units,
                                 params_per_unit=task.net.num_params,
                                 name=task.name)


def outer_iteration(task, core, phi, units, iteration, key):
  """Steps 1-4 for one task. Returns (new_units, meta_grad dict (mean over units), metrics)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  new_units, all_grads, cotangent, metrics, _ = inner_loop(task, core, phi, units, keys[1])
  grads = meta_gradient(task, core, phi, units.hidden, all_grads, cotangent)
  return new_units, grads, metrics


class MetaA2C:
  """MetaA2C on one task as a ``problem.InnerProblem`` (Optim4RL, LinearOptim, L2LGD²: the replayed VJP)."""

  def __init__(self, task):
    self.task = task
    self.name = task.name

  def fresh_units(self, core, key):
    return fresh_units(self.task, core, key)

  def reset_units(self, core, units, iteration, key):
    return reset_units(self.task, core, units, iteration, key)

  def outer_iteration(self, core, phi, units, iteration, key):
    return outer_iteration(self.task, core, phi, units, iteration, key)
