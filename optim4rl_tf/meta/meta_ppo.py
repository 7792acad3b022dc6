"""MetaPPO (docs/fidelity.md §7.5): meta-training a learned optimizer through PPO inner updates on a Brax task.

Same interface as :mod:`optim4rl_tf.meta.meta_a2c` (``fresh_units``, ``outer_iteration``), so the
meta-trainer's machinery is shared: the pipeline schedule and per-unit selection (``pipeline.py``), the
flat [U, P] coordinate layout, the XLA-compiled learned-optimizer step and the chunked replay that computes
the meta-gradient (``meta_a2c.meta_gradient``), and the Adam/clip/NaN-guard/checkpoint loop
(``trainer.MetaTrainer``, subclassed by :class:`MetaPPOTrainer` only to build PPO tasks).

Training units: U units (``num_units``; the official code has one per accelerator device, so 1 on one
device), each with ``env.num_envs / U`` Brax envs, its own agent (policy (32,)x4, value (64,)x5), its own
observation normaliser and optimizer hidden state. Unit d is reset at outer iteration t iff
(t - 1) mod m == r_d (new agent, normaliser, zero hidden state, its envs reset).

One outer iteration per unit (all units batched on the unit axis):
  1. reset due units;
  2. M inner updates, each one FULL PPO training step (§7.4 items 1-3 via ``ppo_train.graph_rollout`` and
     ``ppo.sgd_epochs``): update_epochs x num_minibatches steps of the learned optimizer, phi passed
     explicitly; every clipped per-unit gradient g is recorded (M x epochs x minibatches of them);
  3. meta-loss: one unroll with theta_M and the unit's normaliser, the PPO loss of the whole batch with
     behaviour log-probs = target log-probs under theta_M (``on_policy=True``: rho == 1 as a function of
     theta, so, as in the official code, the clipped surrogate gives no meta-gradient);
  4. meta-gradient (``Task.meta_grad_through_env``, config ``meta_grad_through_env``):
     * True (default, the official estimator): steps 2-3 run under one outer tape and the meta-gradient
       flows through the reparameterised actions, the differentiable Brax step, the env state carried
       between rollouts, the running normaliser and the meta rollout's observations, as the official
       ``jax.grad`` does (``meta_ppo_grad.outer_gradient``; the agent gradients stay stop-gradient inside
       the learned optimizer);
     * False (a cheaper APPROXIMATION): rollout data are constants, so only theta_M's direct use in the
       meta-loss remains (value loss and entropy term): the VJP of theta_M(phi) with d meta-loss /
       d theta_M, replayed from (h_0, g_0..g_K) in chunks of units (``meta_a2c.meta_gradient``).
Steps 2-3 are ``meta_ppo_grad.unroll`` for both (same keys: the same forward numbers).
"""

import math
import os
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_train
from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_ppo_grad
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc


class Task(NamedTuple):
  """Static description of the MetaPPO task (fields read by ``meta_a2c.meta_gradient`` included)."""
  name: str
  env: Any                 # brax_bridge.BraxEnv, num_envs = num_units * envs per unit
  net: Any                 # ppo.PPONetworks
  num_units: int
  learning_rate: float     # agent lr inside the optimizer network (docs/fidelity.md §7.5: 3e-4)
  grad_clip: float         # elementwise clip of the agent gradient (1)
  reset_indices: Any
  reset_interval: int      # m (<= 0: never reset)
  hparams: Any             # ppo.PPOHParams
  unroll_length: int
  unrolls: int             # K = batch_size * num_minibatches / envs per unit
  update_epochs: int
  num_minibatches: int
  inner_updates: int = 4
  meta_unrolls: int = 1    # max(batch_size // envs per unit, 1)
  normalize_observations: bool = True
  chunk_size: int = 0      # approximation only: units per replay chunk
  meta_grad_through_env: bool = True   # False: the value/entropy-path approximation (module doc, step 4)


class UnitState(NamedTuple):
  params: Any       # list [U, ...]
  hidden: Any       # tuple of [H, U, P]
  norm: Any         # ppo.NormState [U, ...]
  env_state: Any    # flat Brax state (leading axis U * E)
  obs: Any          # [U, E, D]


def fresh_agents(task, key):
  """(params list [U, ...], normaliser, flat env state, obs [U, E, D]) of brand-new units."""
  keys = tf.random.experimental.stateless_split(key, 2)
  u = task.num_units
  params = task.net.init(tf.random.experimental.stateless_split(keys[0], u))
  seeds = tf.random.stateless_uniform([u], keys[1], minval=0, maxval=2 ** 31 - 1, dtype=tf.int32)
  flat = task.env.graph_reset(seeds)
  obs = tf.reshape(task.env.flat_obs(flat), [u, -1, task.net.obs_size])
  return params, ppo.norm_init(u, task.net.obs_size), flat, obs


def fresh_units(task, core, key):
  """Brand-new units: agents, normalisers, zero hidden states and freshly reset envs."""
  params, norm, flat, obs = fresh_agents(task, key)
  hidden = core.init_state_feature_major([task.num_units, task.net.num_params])
  return UnitState(params=params, hidden=hidden, norm=norm, env_state=flat, obs=obs)


def reset_units(task, core, units, iteration, key):
  """Re-initialises the units whose reset index matches ``iteration`` (pipeline schedule)."""
  mask = pipeline.reset_mask(iteration, task.reset_indices, task.reset_interval)

  def reset():
    fresh = fresh_units(task, core, key)
    kept = pipeline.select_units(mask, fresh._replace(hidden=(), env_state=()),
                                 units._replace(hidden=(), env_state=()))
    env_mask = tf.repeat(mask, task.env.num_envs // task.num_units)          # unit mask -> per env
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
    flat = meta_a2c.flatten_units(grads)
    if task.grad_clip > 0:
      flat = tf.clip_by_value(flat, -task.grad_clip, task.grad_clip)
    delta, hidden = meta_a2c.optimizer_step(core, phi, hidden, flat, task.learning_rate)
    return meta_a2c.unflatten_units(delta, grads), (hidden, tape.write(count, flat), count + 1)

  return transforms.AgentOptimizer("meta_ppo_recorder", None, update)


def inner_loop(task, core, phi, units, key):
  """Steps 2-3 of the APPROXIMATION (``meta_grad_through_env=False``), without a tape on phi. Returns
  (new_units, grads: list of [U, P], cotangent [U, P], metrics dict of scalars)."""
  params, hidden, norm, flat, obs = units
  steps_per_update = task.update_epochs * task.num_minibatches
  grads_ta = tf.TensorArray(tf.float32, size=task.inner_updates * steps_per_update,
                            element_shape=[task.num_units, task.net.num_params])
  opt = _recording_optimizer(task, core, phi)
  params, opt_state, norm, flat, obs, mbatch, loss_key, sums = meta_ppo_grad.unroll(
      task, opt, params, (hidden, grads_ta, tf.constant(0)), norm, flat, obs, key)
  hidden, grads_ta, _ = opt_state
  all_grads = tf.unstack(grads_ta.stack(), num=task.inner_updates * steps_per_update)
  # Step 3: the meta-loss on the fresh unroll with theta_M; rollout data are constants here.
  with tf.GradientTape() as tape:
    tape.watch(params)
    meta_loss, mm = meta_ppo_grad.meta_loss_fn(task, params, norm, mbatch, loss_key)
  cotangent = meta_a2c.flatten_units(tape.gradient(meta_loss, params))
  metrics = iteration_metrics(meta_loss, mm, mbatch, sums)
  return UnitState(params=params, hidden=hidden, norm=norm, env_state=flat, obs=obs), all_grads, cotangent, \
      metrics


iteration_metrics = meta_ppo_grad.iteration_metrics


def outer_iteration(task, core, phi, units, iteration, key):
  """Steps 1-4 for one task. Returns (new_units, meta_grad dict (mean over units), metrics)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  units = reset_units(task, core, units, iteration, keys[0])
  if task.meta_grad_through_env:
    state, grads, metrics = meta_ppo_grad.outer_gradient(task, core, phi, units, keys[1])
    return UnitState(*state), grads, metrics
  new_units, all_grads, cotangent, metrics = inner_loop(task, core, phi, units, keys[1])
  grads = meta_a2c.meta_gradient(task, core, phi, units.hidden, all_grads, cotangent)
  return new_units, grads, metrics


# ------------------------------------------------------------------------------------------------
# Config -> task, trainer, run.

BRAX_ENV_NAMES = ppo_train.BRAX_ENV_NAMES


def validate_config(config):
  """One clear ValueError per bad field; returns the number of outer iterations."""
  cc.check_choice("task (env.name)", config.env.name, BRAX_ENV_NAMES)
  cc.check_choice("env.bridge", config.env.bridge, ("graph",))
  cc.check_choice("optimizer.name", config.optimizer.name, cores.LEARNED_NAMES + ("star",))
  units = cc.check_positive_int("num_units", config.num_units)
  envs = cc.check_positive_int("env.num_envs", config.env.num_envs)
  if envs % units:
    raise ValueError(f"env.num_envs={envs} must be a multiple of num_units={units}")
  per_unit = envs // units
  batch = cc.check_positive_int("batch_size", config.batch_size)
  mbs = cc.check_positive_int("num_minibatches", config.num_minibatches)
  if (batch * mbs) % per_unit:
    raise ValueError(f"batch_size * num_minibatches = {batch * mbs} must be a multiple of the envs per "
                     f"unit ({per_unit})")
  unroll = cc.check_positive_int("unroll_length", config.unroll_length)
  cc.check_positive_int("update_epochs", config.update_epochs)
  inner = cc.check_positive_int("inner_updates", config.inner_updates)
  cc.check_positive_int("env.episode_length", config.env.episode_length)
  cc.check_positive("learning_rate", config.learning_rate)
  cc.check_positive("reward_scaling", config.reward_scaling)
  if not isinstance(config.get("meta_grad_through_env", True), bool):
    raise ValueError(f"meta_grad_through_env must be True or False, got {config.meta_grad_through_env!r}")
  from optim4rl_tf.meta import run as run_lib  # pylint: disable=import-outside-toplevel
  run_lib.check_meta_fields(config)
  iterations = num_iterations(config)
  if iterations < 1:
    raise ValueError(f"train_steps={config.train_steps} is less than one outer iteration "
                     f"({batch * unroll * mbs * inner:,} env steps); raise train_steps or set num_iterations")
  return iterations


def num_iterations(config):
  """T = floor(train_steps / (batch_size * unroll * num_minibatches * M)) (docs/fidelity.md §7.5: 610 for Brax)."""
  if config.num_iterations > 0:
    return int(config.num_iterations)
  return int(config.train_steps // (config.batch_size * config.unroll_length * config.num_minibatches
                                    * config.inner_updates))


def build_task(config):
  from optim4rl_tf.envs import brax_bridge
  env = brax_bridge.make(config.env.name, int(config.env.num_envs),
                         episode_length=int(config.env.episode_length),
                         action_repeat=int(config.env.action_repeat), backend=config.env.backend,
                         bridge="graph")
  net = ppo.PPONetworks(env.obs_size, env.action_size, tuple(config.network.policy_hidden),
                        tuple(config.network.value_hidden))
  units = int(config.num_units)
  per_unit = int(config.env.num_envs) // units
  m = int(config.reset_interval) if config.pipeline else -1
  hp = ppo.PPOHParams(reward_scaling=float(config.reward_scaling), discount=float(config.discount),
                      gae_lambda=float(config.gae_lambda), clipping_epsilon=float(config.clipping_epsilon),
                      entropy_cost=float(config.entropy_cost),
                      normalize_advantage=bool(config.normalize_advantage))
  return Task(name=env.name, env=env, net=net, num_units=units, learning_rate=float(config.learning_rate),
              grad_clip=float(config.grad_clip), reset_indices=pipeline.reset_indices(units, m),
              reset_interval=m, hparams=hp, unroll_length=int(config.unroll_length),
              unrolls=int(config.batch_size) * int(config.num_minibatches) // per_unit,
              update_epochs=int(config.update_epochs), num_minibatches=int(config.num_minibatches),
              inner_updates=int(config.inner_updates),
              meta_unrolls=max(int(config.batch_size) // per_unit, 1),
              normalize_observations=bool(config.normalize_observations),
              chunk_size=int(config.chunk_size),
              meta_grad_through_env=bool(config.get("meta_grad_through_env", True)))


class MetaPPOTrainer(trainer_lib.MetaTrainer):
  """The MetaA2C trainer (Adam on phi, clipping, NaN guard, checkpoints, phi.npz) with a MetaPPO task."""

  def _build(self, config):
    import sys
    from optim4rl_tf.meta import meta_ppo_star  # pylint: disable=import-outside-toplevel
    is_star = config.optimizer.name == "star"
    # STAR (MetaPPOstar) needs second-order meta-gradients: its own outer iteration (meta_ppo_star).
    core, phi0 = meta_params_lib.resolve(
        config.optimizer.name, config.optimizer.init_meta_params or None,
        mlp_dims=None if is_star else tuple(config.optimizer.mlp_dims),
        hidden_size=None if is_star else config.optimizer.hidden_size, seed=config.seed)
    algorithm = meta_ppo_star if is_star else sys.modules[__name__]
    return algorithm, core, phi0, [build_task(config)], num_iterations(config)


def meta_train(config, workdir, console=True, progress_fn=None):
  """Meta-trains (or resumes) a learned optimizer with MetaPPO; writes config.json, tb/, meta_metrics.csv,
  checkpoints/, phi.npz and summary.json into ``workdir``. Returns a dict like ``meta.run.meta_train``."""
  from optim4rl_tf.meta import run as run_lib
  total = validate_config(config)
  cc.check_writable_dir(workdir)
  from optim4rl_tf.utils import workdir as workdir_lib
  # Locked, and refused when it holds a run of another config (as MetaA2C's meta_train).
  with workdir_lib.lock(workdir):
    run_lib.prepare_workdir(workdir, run_lib.plain(config))
    if console:
      print(f"[meta_ppo {config.env.name} {config.optimizer.name}] building (Brax compiles for minutes on "
            "CPU)...", flush=True)
    trainer = MetaPPOTrainer(config, workdir)
    task = trainer.tasks[0]
    steps_per_it = (task.env.num_envs * task.unroll_length
                    * (task.inner_updates * task.unrolls + task.meta_unrolls))

    def shown(metrics):
      return {"meta-loss": metrics[f"{task.name}/meta_loss"],
              "reward/step": metrics[f"{task.name}/inner_reward_per_step"]}

    return run_lib.drive(trainer, workdir, total, steps_per_it, shown, prefix=f"[meta_ppo {task.name}] ",
                         console=console, progress_fn=progress_fn)
