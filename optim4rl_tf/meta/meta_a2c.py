"""MetaA2C: meta-training a learned optimizer through A2C inner updates on gridworlds (docs/fidelity.md §5.1-§5.5, §5.9).

``MetaA2C(task)`` is the inner problem (``problem.InnerProblem``) of one task of a configs/meta_a2c.py config,
for every optimizer core: an estimator drives it (``estimators.ReplayedVJP`` for Optim4RL, LinearOptim and
L2LGD², ``estimators.FullUnroll`` for STAR, the official MetaA2Cstar) and the learner resets its units on the
pipeline schedule.

Every training unit is ONE environment with its own agent, its own optimizer state and its own environment
state; agent parameters carry the unit axis U (list of [U, ...]).

  * ``inner_step``: roll out ``rollout_steps`` steps with theta_k (data: stop-gradient parameters),
    g_k = grad of the unit's own single-env A2C loss, clipped elementwise, one optimizer step,
    theta_{k+1} = theta_k + update. With a second-order optimizer (STAR under FullUnroll) g_k is taken
    from the live parameters, so an outer tape sees d g_k / d theta_k;
  * ``meta_loss``: a validation rollout with theta_M; meta-loss = mean over units of the same A2C loss
    (its gradient w.r.t. theta_M on request: the replayed VJP's cotangent, each unit's own gradient / U).

Metrics are computed from stop-gradient values (an outer tape records nothing it does not differentiate).

Divergence guard: parameters that went non-finite or absurd (``pipeline.all_sane``) never reach the
sampler (zeros stand in) and ``params_ok`` = 0 makes the learner skip the iteration.
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf import envs
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import registry
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc


class Task(NamedTuple):
  """Static description of one meta-training task."""
  name: str
  env: Any  # optim4rl_tf.envs environment with num_envs == num_units (one env per unit)
  net: Any  # optim4rl_tf.agents.networks.ActorCriticNet
  num_units: int
  learning_rate: float  # agent lr, a multiplier on the optimizer output (docs/fidelity.md §5.5)
  grad_clip: float  # elementwise clip of the agent gradient (<= 0: off)
  hparams: Any  # a2c.A2CHParams
  rollout_steps: int = 20
  inner_updates: int = 4


class UnitState(NamedTuple):
  """Per-unit state carried across outer iterations (leading axis U; ``opt_state``: the optimizer's)."""
  params: Any  # list of [U, ...]
  opt_state: Any  # Optim4RL & co: tuple of [H, U, P] (feature-major); STAR: list of star.StarState
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
    tasks.append(
        Task(name=spec.env_name,
             env=env,
             net=net,
             num_units=n,
             learning_rate=float(spec.learning_rate),
             grad_clip=float(config.agent_grad_clip),
             hparams=hparams,
             rollout_steps=config.rollout_steps,
             inner_updates=config.inner_updates))
  return tasks


def build(config):
  """The config's inner problems: a :class:`MetaA2C` per task."""
  return [MetaA2C(t) for t in build_tasks(config)]


def env_steps_per_iteration(config):
  """Env steps of one outer iteration, all tasks: units x rollout_steps x (M + 1)."""
  return sum(task_units(config, t) * config.rollout_steps * (config.inner_updates + 1) for t in config.tasks)


def _rollout(problem, params, units, key):
  """A rollout of every unit of ``problem`` with (stop-gradient, guarded) ``params``: (ok, used params, traj,
  env_state, obs, ep_return, returns sum, returns count)."""
  task = problem.task
  params = [tf.stop_gradient(p) for p in params]
  ok = pipeline.all_sane(params)
  used = pipeline.or_zeros(ok, params)
  traj, env_state, obs = a2c.rollout(task.net.logits,
                                     used,
                                     problem.env,
                                     units.env_state,
                                     units.obs,
                                     key,
                                     task.rollout_steps,
                                     problem.num_units,
                                     sample_fn=problem.sample_fn)
  ep_return, rs, rc = a2c.episode_returns(units.ep_return, traj.rewards, traj.dones)
  return ok, used, traj, env_state, obs, ep_return, tf.reduce_sum(rs), tf.reduce_sum(rc)


def _update_abs(optimizer, old, new, updates):
  """sum |update| over all coordinates: of the optimizer's output, or, for a second-order optimizer, of
  new - old parameters (the sums these runs have always logged)."""
  if optimizer.second_order:
    return tf.add_n([tf.reduce_sum(tf.abs(tf.stop_gradient(a) - tf.stop_gradient(b))) for a, b in zip(new, old)])
  return tf.reduce_sum(tf.abs(problem_lib.flatten_units(updates)))


class _SlicedEnv:
  """The environments of a slice of units (``workers.UnitSlice``) stepped with the random numbers of all
  ``total`` units' environments: the state is padded to all of them, stepped, and the slice kept."""

  def __init__(self, env, unit_slice):
    self.env, self.slice = env, unit_slice
    self.obs_shape, self.num_actions = env.obs_shape, env.num_actions

  def reset(self, seed):
    return tf.nest.map_structure(self.slice.take, self.env.reset(seed))

  def observe(self, state):
    return self.env.observe(state)

  def step(self, state, action, seed):
    out = self.env.step(tf.nest.map_structure(self.slice.pad, state), self.slice.pad(action), seed)
    return tf.nest.map_structure(self.slice.take, out)


class MetaA2C:
  """MetaA2C on one task (module doc) as a ``problem.InnerProblem``.

  ``unit_slice`` (``workers.UnitSlice``; made by :meth:`for_units`): only the units ``[start, start + count)``
  of the task's ``num_units``, with the random numbers they have when all units run in one process (every
  draw is made for all units and the slice kept: agent keys, environment resets and steps, actions)."""

  unit_axes = {}  # every field has the unit axis first (opt_state: the optimizer's)

  def __init__(self, task, unit_slice=None):
    self.task = task
    self.name = task.name
    self.inner_steps = task.inner_updates
    self.unit_slice = unit_slice
    self.num_units = task.num_units if unit_slice is None else unit_slice.count
    if unit_slice is not None and unit_slice.total != task.num_units:
      raise ValueError(f"{task.name}: a slice of {unit_slice.total} units of a task of {task.num_units}")

  @property
  def env(self):
    """The environments of this problem's units."""
    return self.task.env if self.unit_slice is None else _SlicedEnv(self.task.env, self.unit_slice)

  def sample_fn(self, logits, seed):
    """The actions of this problem's units (logits [U*B, A]), drawn as for all units."""
    if self.unit_slice is None:
      return a2c.sample_actions(logits, seed)
    return self.unit_slice.take(a2c.sample_actions(self.unit_slice.pad(logits), seed))

  def for_units(self, unit_slice):
    """This problem on the units of ``unit_slice`` only (a worker's share: ``workers.py``)."""
    return MetaA2C(self.task, unit_slice)

  def init_units(self, optimizer, key):
    """Fresh agents (independent per unit), a fresh optimizer state, fresh environments."""
    task, n = self.task, self.num_units
    keys = tf.random.experimental.stateless_split(key, 3)
    if self.unit_slice is None:
      params = task.net.init(tf.random.experimental.stateless_split(keys[0], n))
    else:  # the keys of these units among all units
      params = task.net.init(self.unit_slice.take(tf.random.experimental.stateless_split(keys[0], task.num_units)))
    env_state = self.env.reset(keys[1])
    obs = tf.reshape(task.env.observe(env_state), [n, 1] + list(task.env.obs_shape))
    return UnitState(params=params,
                     opt_state=optimizer.init(params),
                     env_state=env_state,
                     obs=obs,
                     ep_return=tf.zeros([n, 1]))

  def inner_step(self, optimizer, units, key):
    task = self.task
    ok, used, traj, env_state, obs, ep_return, ret_sum, ret_count = _rollout(self, units.params, units, key)
    # A second-order optimizer differentiates through g: take it from the live parameters.
    live = units.params if optimizer.second_order else used
    _, _, grads = a2c.loss_and_grads(task.net.apply, live, traj, task.hparams)
    optimizer = transforms.chain(transforms.clip(task.grad_clip), optimizer)
    updates, opt_state = optimizer.update(grads, units.opt_state, units.params, task.learning_rate)
    params = [p + u for p, u in zip(units.params, updates)]
    metrics = {
        "return_sum": ret_sum,
        "return_count": ret_count,
        "update_abs": _update_abs(optimizer, units.params, params, updates),
        "params_ok": tf.cast(ok, tf.float32)
    }
    units = UnitState(params=params, opt_state=opt_state, env_state=env_state, obs=obs, ep_return=ep_return)
    return problem_lib.InnerStep(units, metrics)

  def meta_loss(self, units, key, sums, with_grads=False):
    task, n = self.task, self.num_units
    key = tf.random.experimental.stateless_fold_in(key, task.inner_updates)  # the validation rollout
    ok, used, traj, env_state, obs, ep_return, ret_sum, ret_count = _rollout(self, units.params, units, key)
    grads = None
    if with_grads:  # d meta-loss / d theta_M per unit: its own gradient / U
      loss, loss_metrics, grads = a2c.loss_and_grads(task.net.apply, used, traj, task.hparams)
      grads = [g / n for g in grads]
    else:
      loss, loss_metrics = a2c.a2c_loss(task.net.apply, units.params, traj, task.hparams)
    meta_loss = tf.reduce_mean(loss)
    ret_sum, ret_count = sums["return_sum"] + ret_sum, sums["return_count"] + ret_count
    num_coords = float(sum(int(p.shape.num_elements()) for p in units.params))
    params_ok = tf.logical_and(tf.equal(sums["params_ok"], float(task.inner_updates)), ok)
    metrics = {
        "meta_loss": meta_loss,
        "agent_return": ret_sum / tf.maximum(ret_count, 1.0),  # episodes ended in this iteration's rollouts
        "episodes": ret_count,
        "entropy": tf.reduce_mean(tf.stop_gradient(loss_metrics["entropy"])),
        "update_abs_mean": sums["update_abs"] / (num_coords * task.inner_updates),
        "params_ok": tf.cast(params_ok, tf.float32),
    }
    new_units = units._replace(env_state=env_state, obs=obs, ep_return=ep_return)
    return problem_lib.MetaLoss(meta_loss, new_units, metrics, grads)


def resolve_config(config, recorded):
  """config.json records each task's num_units as the number actually used."""
  for spec, task in zip(config.tasks, recorded["tasks"]):
    task["num_units"] = task_units(config, spec)
  return recorded


def _validate_and_check_memory(config):
  iterations = validate_config(config)
  from optim4rl_tf.meta import memory_estimate  # pylint: disable=import-outside-toplevel
  memory_estimate.check(config)  # before anything is built: a config too big for this machine is one line
  return iterations


REGISTRATION = registry.Registration(validate=_validate_and_check_memory,
                                     num_iterations=num_iterations,
                                     build=build,
                                     env_steps_per_iteration=lambda config, problems: env_steps_per_iteration(config),
                                     console={"return": "agent_return"},
                                     resolve_config=resolve_config)
