"""MetaPPO's task (docs/fidelity.md §7.5): config checks, the Brax task and brand-new agents.

The inner problem is ``meta_ppo.MetaPPO`` (every optimizer core, STAR included). A configs/ppo.py ``meta_*`` config (``agent = "meta_ppo"``) describes one task: U training units
(``num_units``), each with ``env.num_envs / U`` Brax envs, its own agent (policy and value MLPs) and its own
observation normaliser.

Shapes: agent parameters are a list of [U, ...] tensors, the normaliser a ``ppo.NormState`` [U, ...], the
env state the bridge's flat state (leading axis U * E) and observations [U, E, D] (E = envs per unit).
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.envs import registry
from optim4rl_tf.optimizers import cores
from optim4rl_tf.utils import config_checks as cc


class Task(NamedTuple):
  """Static description of the MetaPPO task."""
  name: str
  env: Any  # brax_bridge.BraxEnv, num_envs = num_units * envs per unit
  net: Any  # ppo.PPONetworks
  num_units: int
  learning_rate: float  # agent lr inside the optimizer network (docs/fidelity.md §7.5: 3e-4)
  grad_clip: float  # elementwise clip of the agent gradient (1)
  hparams: Any  # ppo.PPOHParams
  unroll_length: int
  unrolls: int  # K = batch_size * num_minibatches / envs per unit
  update_epochs: int
  num_minibatches: int
  inner_updates: int = 4
  meta_unrolls: int = 1  # max(batch_size // envs per unit, 1)
  normalize_observations: bool = True
  meta_grad_through_env: bool = True  # False: rollout data are constants (the approximation, ``meta_ppo``)


def validate_config(config):
  """The MetaPPO fields of a configs/ppo.py meta config (``meta.run.validate_config`` checks the fields
  every meta-training config shares first). One clear ValueError per bad field; returns the number of
  outer iterations."""
  cc.check_choice("task (env.name)", config.env.name, registry.BRAX_ENV_NAMES)
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
  iterations = num_iterations(config)
  if iterations < 1:
    raise ValueError(f"train_steps={config.train_steps} is less than one outer iteration "
                     f"({batch * unroll * mbs * inner:,} env steps); raise train_steps or set num_iterations")
  return iterations


def num_iterations(config):
  """T = floor(train_steps / (batch_size * unroll * num_minibatches * M)) (docs/fidelity.md §7.5: 610 for Brax)."""
  if config.num_iterations > 0:
    return int(config.num_iterations)
  return int(config.train_steps //
             (config.batch_size * config.unroll_length * config.num_minibatches * config.inner_updates))


def build_task(config):
  """The :class:`Task` of a (validated) MetaPPO config; builds the Brax env (graph bridge)."""
  from optim4rl_tf.envs import brax_bridge  # pylint: disable=import-outside-toplevel
  env = brax_bridge.make(config.env.name,
                         int(config.env.num_envs),
                         episode_length=int(config.env.episode_length),
                         action_repeat=int(config.env.action_repeat),
                         backend=config.env.backend,
                         bridge="graph")
  net = ppo.PPONetworks(env.obs_size, env.action_size, tuple(config.network.policy_hidden),
                        tuple(config.network.value_hidden))
  units = int(config.num_units)
  per_unit = int(config.env.num_envs) // units
  hp = ppo.PPOHParams(reward_scaling=float(config.reward_scaling),
                      discount=float(config.discount),
                      gae_lambda=float(config.gae_lambda),
                      clipping_epsilon=float(config.clipping_epsilon),
                      entropy_cost=float(config.entropy_cost),
                      normalize_advantage=bool(config.normalize_advantage))
  return Task(name=env.name,
              env=env,
              net=net,
              num_units=units,
              learning_rate=float(config.learning_rate),
              grad_clip=float(config.grad_clip),
              hparams=hp,
              unroll_length=int(config.unroll_length),
              unrolls=int(config.batch_size) * int(config.num_minibatches) // per_unit,
              update_epochs=int(config.update_epochs),
              num_minibatches=int(config.num_minibatches),
              inner_updates=int(config.inner_updates),
              meta_unrolls=max(int(config.batch_size) // per_unit, 1),
              normalize_observations=bool(config.normalize_observations),
              meta_grad_through_env=bool(config.get("meta_grad_through_env", True)))


def env_steps_per_iteration(task):
  """Env steps of one outer iteration, all units: M inner updates of K unrolls and the meta unrolls."""
  return task.env.num_envs * task.unroll_length * (task.inner_updates * task.unrolls + task.meta_unrolls)


def fresh_agents(task, key):
  """(params list [U, ...], normaliser, flat env state, obs [U, E, D]) of brand-new units."""
  keys = tf.random.experimental.stateless_split(key, 2)
  u = task.num_units
  params = task.net.init(tf.random.experimental.stateless_split(keys[0], u))
  seeds = tf.random.stateless_uniform([u], keys[1], minval=0, maxval=2**31 - 1, dtype=tf.int32)
  flat = task.env.graph_reset(seeds)
  obs = tf.reshape(task.env.flat_obs(flat), [u, -1, task.net.obs_size])
  return params, ppo.norm_init(u, task.net.obs_size), flat, obs
