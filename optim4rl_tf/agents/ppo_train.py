"""PPO on Brax as a library function: ``train(config, workdir) -> results`` (docs/fidelity.md §7.2-§7.4, §10).

One training step (§7.4): roll out ``K = batch_size * num_minibatches / num_envs`` consecutive unrolls of
``unroll_length`` steps on all envs with the current policy and normaliser; update the normaliser with
the batch's observations; ``update_epochs`` passes of ``num_minibatches`` gradient steps on shuffled
trajectories with Adam / RMSProp (elementwise clip ``optimizer.grad_clip``) or a fixed learned optimizer
(meta-parameters from an ``.npz``). Evaluation (§7.4 item 5) at step 0 and after each of ``num_evals``
epochs of ``floor(train_steps / (num_evals * env steps per training step))`` training steps:
``num_eval_envs`` episodes per seed, stochastic policy, mean summed UNSCALED reward.

All ``num_seeds`` agents train as ONE graph: every parameter, normaliser and optimizer state carries a
leading seed axis, and the Brax batch holds ``num_seeds * env.num_envs`` environments.

Bridges (``env.bridge``, :mod:`optim4rl_tf.envs.brax_bridge`):
  * ``graph``: one ``tf.function`` runs ``k`` whole training steps (rollout through the jax2tf-converted
    Brax step inside a ``tf.while_loop``, then the SGD epochs); the evaluation is another while loop.
  * ``numpy``: Python drives the rollout -- per env step one TF call (policy) and one jitted JAX call
    (Brax step); the SGD epochs are one ``tf.function`` call per training step.
Both use the same keys, so for the same config they produce the same run up to float rounding.

Writes into ``workdir``: ``config.json``, ``tb/`` (TensorBoard), ``returns.csv`` (``step,seed,return``: one
row per evaluation and seed; step = env steps per seed so far), ``returns.png``, ``summary.json`` (final
performance = mean of the last ``final_last`` (2) evaluation returns, 90% bootstrap CI over seeds) and
``params.npz`` (final parameters and normaliser, leading seed axis).
"""

import math
import os
import time
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from optim4rl_tf.agents import ppo
from optim4rl_tf.eval import stats
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib

# Kept in step with brax_bridge (not imported here: that would import nothing heavy, but the check
# messages should not need JAX).
BRAX_ENV_NAMES = ("ant", "humanoid", "inverted_double_pendulum", "walker2d", "inverted_pendulum")
BRIDGES = ("graph", "numpy")
BACKENDS = ("spring", "generalized", "positional")


class Schedule(NamedTuple):
  unrolls: int                 # K unrolls of unroll_length steps per training step
  env_steps_per_train_step: int  # per seed
  train_steps_per_epoch: int
  num_epochs: int
  total_env_steps: int         # per seed


def _hidden(name, value):
  try:
    sizes = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}") from None
  if any(s <= 0 for s in sizes) or any(int(v) != v for v in value):
    raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}")
  return sizes


def validate_config(config):
  """Raises one clear ValueError for a bad config; returns the :class:`Schedule`."""
  name = config.env.name
  if isinstance(name, str) and name.startswith("brax:"):
    name = name[5:]
  cc.check_choice("task (env.name)", name, BRAX_ENV_NAMES)
  cc.check_choice("env.bridge", config.env.bridge, BRIDGES)
  cc.check_choice("env.backend", config.env.backend, BACKENDS)
  cc.check_choice("optimizer.name", config.optimizer.name, transforms.OPTIMIZER_NAMES)
  num_envs = cc.check_positive_int("env.num_envs", config.env.num_envs)
  cc.check_positive_int("env.episode_length", config.env.episode_length)
  action_repeat = cc.check_positive_int("env.action_repeat", config.env.action_repeat)
  cc.check_positive_int("num_seeds", config.num_seeds)
  train_steps = cc.check_positive_int("train_steps", config.train_steps)
  batch = cc.check_positive_int("batch_size", config.batch_size)
  mbs = cc.check_positive_int("num_minibatches", config.num_minibatches)
  unroll = cc.check_positive_int("unroll_length", config.unroll_length)
  cc.check_positive_int("update_epochs", config.update_epochs)
  num_evals = cc.check_positive_int("num_evals", config.num_evals)
  cc.check_positive_int("num_eval_envs", config.num_eval_envs)
  cc.check_positive_int("final_last", config.final_last)
  cc.check_nonnegative_int("iterations_per_call", config.iterations_per_call)
  cc.check_seed(config.seed, config.num_seeds)
  cc.check_positive("optimizer.learning_rate", config.optimizer.learning_rate)
  cc.check_finite("optimizer.grad_clip", config.optimizer.grad_clip)
  cc.check_positive("reward_scaling", config.reward_scaling)
  cc.check_unit_interval("discount", config.discount)
  cc.check_unit_interval("gae_lambda", config.gae_lambda)
  cc.check_positive("clipping_epsilon", config.clipping_epsilon)
  cc.check_nonnegative("entropy_cost", config.entropy_cost)
  _hidden("network.policy_hidden", config.network.policy_hidden)
  _hidden("network.value_hidden", config.network.value_hidden)
  if config.optimizer.meta_params:
    if config.optimizer.name in transforms.CLASSICAL:
      raise ValueError(f"optimizer.meta_params is set, but optimizer {config.optimizer.name!r} is not a "
                       "learned optimizer")
    cc.check_file("optimizer.meta_params", config.optimizer.meta_params)
  if (batch * mbs) % num_envs:
    raise ValueError(f"batch_size * num_minibatches = {batch * mbs} must be a multiple of env.num_envs = "
                     f"{num_envs} (each training step rolls out whole unrolls of all envs)")
  unrolls = batch * mbs // num_envs
  per_step = batch * mbs * unroll * action_repeat
  per_epoch = train_steps // (num_evals * per_step)
  if per_epoch < 1:
    raise ValueError(f"train_steps={train_steps} is less than num_evals={num_evals} training steps of "
                     f"{per_step} env steps (batch_size * num_minibatches * unroll_length * action_repeat)")
  return Schedule(unrolls=unrolls, env_steps_per_train_step=per_step, train_steps_per_epoch=per_epoch,
                  num_epochs=num_evals, total_env_steps=num_evals * per_epoch * per_step)


class PPOState(NamedTuple):
  params: Any       # list [S, ...]
  opt_state: Any
  norm: Any         # ppo.NormState
  env_state: Any    # numpy bridge: JAX Brax state; graph bridge: tuple of TF tensors
  obs: Any          # [S, E, D]
  iteration: Any    # int32 scalar: training steps done
  key: Any          # int32 [2]


def _assemble(obs, raw, logp, reward, done, trunc, unrolls, unroll, num_seeds, envs):
  """Step-major rollout (obs [K*T+1, N, D], others [K*T, N, ...]) -> ppo.Batch of K*E trajectories of T
  steps per seed: trajectory (k, e) = unroll k of env e (Brax's order), obs with T+1 entries."""
  idx = np.arange(unrolls)[:, None] * unroll + np.arange(unroll + 1)[None, :]        # [K, T+1]

  def per_seed(x, t_len):        # x [K, t_len, N, ...] -> [S, K*E, t_len, ...]
    rest = x.shape[3:].as_list()
    x = tf.reshape(x, [unrolls, t_len, num_seeds, envs] + rest)
    x = tf.transpose(x, [2, 0, 3, 1] + list(range(4, 4 + len(rest))))
    return tf.reshape(x, [num_seeds, unrolls * envs, t_len] + rest)

  obs = per_seed(tf.gather(obs, idx), unroll + 1)
  steps = [per_seed(tf.reshape(x, [unrolls, unroll] + x.shape[1:].as_list()), unroll)
           for x in (raw, logp, reward, done, trunc)]
  return ppo.Batch(obs, *steps)


def act(nets, params, norm, obs, key, j, num_units, deterministic=False):
  """Acting for all units: obs [U, B, D] or [U*B, D] -> (u [U*B, A], log pi [U*B], env action [U*B, A])
  with the step key fold_in(key, j). Reads only the policy's parameters and the normaliser's mean/std."""
  norm = ppo.NormState(count=None, mean=norm.mean, summed_variance=None, std=norm.std)
  obs = tf.reshape(obs, [num_units, -1, nets.obs_size])
  u, logp, action = ppo.policy_step(nets, params[:nets.num_policy], norm, obs,
                                    tf.random.experimental.stateless_fold_in(key, j), deterministic)
  a = nets.action_size
  return tf.reshape(u, [-1, a]), tf.reshape(logp, [-1]), tf.reshape(action, [-1, a])


def graph_rollout(env, nets, params, norm, flat, obs, key, unrolls, unroll, num_units):
  """In-graph rollout (graph bridge) of ``unrolls`` x ``unroll`` steps of all envs in one while loop.

  flat: the env's flat state; obs [U, E, D] its observation. Returns (ppo.Batch with K*E trajectories per
  unit, flat, obs [U, E, D])."""
  n = unrolls * unroll
  envs = env.num_envs // num_units
  tas = [tf.TensorArray(tf.float32, size=n + 1, element_shape=[env.num_envs, nets.obs_size])] + [
      tf.TensorArray(tf.float32, size=n) for _ in range(5)]

  def body(j, flat, obs, tas):
    u, logp, action = act(nets, params, norm, obs, key, j, num_units)
    flat, out = env.graph_step(flat, action)
    vals = (tf.reshape(obs, [-1, nets.obs_size]), u, logp, out.reward, out.done, out.truncation)
    tas = [ta.write(j, v) for ta, v in zip(tas, vals)]
    return j + 1, flat, tf.reshape(out.obs, [num_units, envs, nets.obs_size]), tas

  _, flat, obs, tas = tf.while_loop(lambda j, *_: j < n, body, (tf.constant(0), flat, obs, tas))
  tas[0] = tas[0].write(n, tf.reshape(obs, [-1, nets.obs_size]))
  batch = _assemble(*[ta.stack() for ta in tas], unrolls, unroll, num_units, envs)
  return batch, flat, obs


class Trainer:
  """Builds the TF functions of one PPO run (either bridge). See the module docstring."""

  def __init__(self, config, schedule, env, eval_env, nets, opt):
    self.config, self.schedule = config, schedule
    self.env, self.eval_env, self.nets, self.opt = env, eval_env, nets, opt
    self.bridge = config.env.bridge
    self.num_seeds = int(config.num_seeds)
    self.envs = int(config.env.num_envs)
    self.num_eval = int(config.num_eval_envs)
    self.unroll = int(config.unroll_length)
    self.unrolls = schedule.unrolls
    self.epochs = int(config.update_epochs)
    self.num_minibatches = int(config.num_minibatches)
    self.normalize_observations = bool(config.normalize_observations)
    self.deterministic_eval = bool(config.deterministic_eval)
    self.eval_steps = int(config.env.episode_length) // int(config.env.action_repeat)
    self.hp = ppo.PPOHParams(reward_scaling=float(config.reward_scaling), discount=float(config.discount),
                             gae_lambda=float(config.gae_lambda),
                             clipping_epsilon=float(config.clipping_epsilon),
                             entropy_cost=float(config.entropy_cost),
                             normalize_advantage=bool(config.normalize_advantage))
    self.labels = [int(config.seed) + s for s in range(self.num_seeds)]
    jit = bool(config.jit_compile)
    self._sgd = tf.function(self._sgd_py, jit_compile=jit, reduce_retracing=True) if jit else self._sgd_py
    self._policy_fn = tf.function(self._policy_py, reduce_retracing=True)
    self._update_fn = tf.function(self._update_py, reduce_retracing=True)
    self._graph_run = tf.function(self._graph_run_py, reduce_retracing=True)
    self._graph_eval = tf.function(self._graph_eval_py, reduce_retracing=True)

  # ----- pieces shared by both bridges ------------------------------------------------------------
  def _policy_py(self, params, norm, obs, key, j, deterministic=False):
    return act(self.nets, params, norm, obs, key, j, self.num_seeds, deterministic)

  def _policy_np(self, params, norm, obs, key, j, deterministic=False):
    """The numpy bridge's per-step call of the policy tf.function (policy parameters only)."""
    return self._policy_fn(params[:self.nets.num_policy], ppo.NormState(None, norm.mean, None, norm.std),
                           obs, key, tf.constant(j), deterministic)

  def _sgd_py(self, params, opt_state, norm, batch, key):
    return ppo.sgd_epochs(self.nets, self.opt, self.hp, params, opt_state, norm, batch, key, self.epochs,
                          self.num_minibatches, self.normalize_observations)

  def _update_py(self, params, opt_state, norm, obs, raw, logp, reward, done, trunc, key):
    batch = _assemble(tf.stack(obs), tf.stack(raw), tf.stack(logp), tf.stack(reward), tf.stack(done),
                      tf.stack(trunc), self.unrolls, self.unroll, self.num_seeds, self.envs)
    return self._sgd(params, opt_state, norm, batch, key)

  def _keys(self, key, iteration):
    it_key = tf.random.experimental.stateless_fold_in(key, iteration)
    ks = tf.random.experimental.stateless_split(it_key, 2)
    return ks[0], ks[1]            # rollout key, sgd key

  def _to_units(self, x, envs):
    return tf.reshape(x, [self.num_seeds, envs] + x.shape[1:].as_list())

  # ----- init -------------------------------------------------------------------------------------
  def init(self):
    keys = tf.constant([[lab, 0] for lab in self.labels], tf.int32)
    params = self.nets.init(keys)
    opt_state = self.opt.init(params)
    norm = ppo.norm_init(self.num_seeds, self.nets.obs_size)
    js = self.env.reset(self.labels, salt=0)
    obs = self._to_units(self.env.observe(js), self.envs)
    env_state = self.env.to_flat(js) if self.bridge == "graph" else js
    return PPOState(params=params, opt_state=opt_state, norm=norm, env_state=env_state, obs=obs,
                    iteration=tf.constant(0, tf.int32), key=tf.constant([int(self.config.seed), 1], tf.int32))

  # ----- graph bridge -----------------------------------------------------------------------------
  def _graph_rollout(self, params, norm, flat, obs, key):
    return graph_rollout(self.env, self.nets, params, norm, flat, obs, key, self.unrolls, self.unroll,
                         self.num_seeds)

  def _graph_run_py(self, state, num_iterations):
    tas = {k: tf.TensorArray(tf.float32, size=num_iterations) for k in ppo.SGD_METRICS}

    def body(i, state, tas):
      rkey, skey = self._keys(state.key, state.iteration)
      batch, flat, obs = self._graph_rollout(state.params, state.norm, state.env_state, state.obs, rkey)
      params, opt_state, norm, metrics = self._sgd(state.params, state.opt_state, state.norm, batch, skey)
      tas = {k: tas[k].write(i, metrics[k]) for k in ppo.SGD_METRICS}
      state = PPOState(params=params, opt_state=opt_state, norm=norm, env_state=flat, obs=obs,
                       iteration=state.iteration + 1, key=state.key)
      return i + 1, state, tas

    _, state, tas = tf.while_loop(lambda i, *_: i < num_iterations, body, (tf.constant(0), state, tas))
    return state, {k: v.stack() for k, v in tas.items()}

  def _graph_eval_py(self, params, norm, flat, key):
    obs = self._to_units(self.eval_env.flat_obs(flat), self.num_eval)
    ret = tf.zeros([self.num_seeds, self.num_eval])
    active = tf.ones([self.num_seeds, self.num_eval])
    length = tf.zeros([self.num_seeds, self.num_eval])

    def body(t, flat, obs, ret, active, length):
      _, _, act = self._policy_py(params, norm, obs, key, t, self.deterministic_eval)
      flat, out = self.eval_env.graph_step(flat, act)
      ret += self._to_units(out.reward, self.num_eval) * active
      length += active
      active *= 1.0 - self._to_units(out.done, self.num_eval)
      return t + 1, flat, self._to_units(out.obs, self.num_eval), ret, active, length

    _, _, _, ret, _, length = tf.while_loop(
        lambda t, _f, _o, _r, active, _l: tf.logical_and(t < self.eval_steps, tf.reduce_any(active > 0)),
        body, (tf.constant(0), flat, obs, ret, active, length))
    return ret, length

  # ----- numpy bridge -----------------------------------------------------------------------------
  def _numpy_step(self, state):
    rkey, skey = self._keys(state.key, state.iteration)
    n = self.unrolls * self.unroll
    js = state.env_state
    cols = [[] for _ in range(6)]
    flat_obs = tf.reshape(state.obs, [-1, self.nets.obs_size])
    for j in range(n):
      u, logp, act = self._policy_np(state.params, state.norm, flat_obs, rkey, j)
      js, out = self.env.step(js, act)
      for c, v in zip(cols, (flat_obs, u, logp, out.reward, out.done, out.truncation)):
        c.append(v)
      flat_obs = out.obs
    cols[0].append(flat_obs)
    obs = self._to_units(flat_obs, self.envs)
    params, opt_state, norm, metrics = self._update_fn(state.params, state.opt_state, state.norm, *cols,
                                                       skey)
    return PPOState(params=params, opt_state=opt_state, norm=norm, env_state=js, obs=obs,
                    iteration=state.iteration + 1, key=state.key), metrics

  def _numpy_eval(self, params, norm, js, key):
    obs = self.eval_env.observe(js)
    ret = np.zeros([self.num_seeds, self.num_eval], np.float64)
    active = np.ones([self.num_seeds, self.num_eval], np.float32)
    length = np.zeros([self.num_seeds, self.num_eval])
    for t in range(self.eval_steps):
      _, _, act = self._policy_np(params, norm, obs, key, t, self.deterministic_eval)
      js, out = self.eval_env.step(js, act)
      ret += out.reward.numpy().reshape(active.shape) * active
      length += active
      active = active * (1.0 - out.done.numpy().reshape(active.shape))
      obs = out.obs
      if not active.any():
        break
    return ret, length

  # ----- public -----------------------------------------------------------------------------------
  def run(self, state, k):
    """k training steps -> (state, {metric: [k, S] numpy})."""
    if self.bridge == "graph":
      state, m = self._graph_run(state, tf.constant(k, tf.int32))
      return state, {name: v.numpy() for name, v in m.items()}
    rows = []
    for _ in range(k):
      state, m = self._numpy_step(state)
      rows.append({name: v.numpy() for name, v in m.items()})
    return state, {name: np.stack([r[name] for r in rows]) for name in ppo.SGD_METRICS}

  def evaluate(self, state, index):
    """Evaluation ``index``: (mean return per seed [S], mean episode length per seed [S]) numpy."""
    js = self.eval_env.reset(self.labels, salt=1 + int(index))
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(self.config.seed), 2], tf.int32),
                                                  int(index))
    if self.bridge == "graph":
      ret, length = self._graph_eval(state.params, state.norm, self.eval_env.to_flat(js), key)
      ret, length = ret.numpy(), length.numpy()
    else:
      ret, length = self._numpy_eval(state.params, state.norm, js, key)
    return ret.mean(axis=1), length.mean(axis=1)


def build(config, schedule=None):
  """(Trainer) for a validated config."""
  from optim4rl_tf.envs import brax_bridge   # JAX imported here
  schedule = schedule or validate_config(config)
  s = int(config.num_seeds)
  kw = dict(episode_length=int(config.env.episode_length), action_repeat=int(config.env.action_repeat),
            backend=config.env.backend, bridge=config.env.bridge)
  env = brax_bridge.make(config.env.name, s * int(config.env.num_envs), **kw)
  eval_env = brax_bridge.make(config.env.name, s * int(config.num_eval_envs), **kw)
  nets = ppo.PPONetworks(env.obs_size, env.action_size, _hidden("policy", config.network.policy_hidden),
                         _hidden("value", config.network.value_hidden))
  opt = transforms.make_agent_optimizer(config.optimizer.name, float(config.optimizer.learning_rate),
                                        grad_clip=float(config.optimizer.grad_clip),
                                        meta_params=config.optimizer.meta_params or None)
  return Trainer(config, schedule, env, eval_env, nets, opt)


def train(config, workdir, progress_fn=None, console=True):
  """Trains ``config.num_seeds`` PPO agents on a Brax task and writes the run's files into ``workdir``.

  Returns a dict with ``returns`` ({seed label: (steps, eval returns)}), ``final`` (per seed: mean of the
  last ``final_last`` eval returns), ``ci`` (stats.CI over seeds), ``steps_per_sec`` (env steps/s of all
  seeds in training, excluding the first call's compilation and the evaluations), ``env_steps`` (per
  seed), ``schedule``, ``wall_secs``, ``summary``, ``aborted`` (True if an evaluation return was NaN)
  and ``params`` (list of [S, ...] numpy arrays).
  """
  schedule = validate_config(config)
  cc.check_writable_dir(workdir)
  if config.optimizer.name not in transforms.CLASSICAL and not config.optimizer.meta_params and console:
    print(f"WARNING: {config.optimizer.name} without optimizer.meta_params uses an untrained (random) phi")
  t_start = time.time()
  trainer = build(config, schedule)
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  logger = logging_lib.RunLogger(workdir)
  labels = trainer.labels
  per_step = schedule.env_steps_per_train_step
  total = schedule.total_env_steps
  tag = f"[ppo {trainer.env.name} {config.optimizer.name} {config.env.bridge}] "
  progress = logging_lib.Progress(total, every_secs=float(config.console_every_secs), prefix=tag,
                                  rate_scale=len(labels),
                                  rate_label="env steps/s" + (" (all seeds)" if len(labels) > 1 else ""))
  if console:
    print(f"{tag}{schedule.num_epochs} epochs x {schedule.train_steps_per_epoch} training steps x "
          f"{per_step:,} env steps = {total:,} env steps per seed; {len(labels)} seed(s); compiling "
          "(Brax on CPU: up to a few minutes)...", flush=True)
  runs = {lab: ([], []) for lab in labels}
  aborted = False
  timed_secs, timed_steps = 0.0, 0
  eval_secs = 0.0

  def do_eval(state, index, step):
    nonlocal aborted, eval_secs
    t0 = time.time()
    ret, length = trainer.evaluate(state, index)
    eval_secs += time.time() - t0
    scalars = {"return/mean": float(np.mean(ret)), "eval/episode_length": float(np.mean(length)),
               "eval/secs": time.time() - t0}
    for s, lab in enumerate(labels):
      runs[lab][0].append(step)
      runs[lab][1].append(float(ret[s]))
      logger.returns(step, lab, float(ret[s]))
      scalars[f"return/seed_{lab}"] = float(ret[s])
    logger.scalars(step, scalars)
    logger.flush()
    if not np.all(np.isfinite(ret)):
      aborted = True
    return ret

  state = trainer.init()
  try:
    ret = do_eval(state, 0, 0)
    if console:   # (the progress rate starts after the first training call, i.e. after compilation)
      print(f"{tag}step 0 | return {float(np.mean(ret)):.4g} | training (first call compiles)...",
            flush=True)
    done_steps = 0
    k = 1 if not config.iterations_per_call else int(config.iterations_per_call)
    first_call = True
    for epoch in range(schedule.num_epochs):
      if aborted:
        break
      left = schedule.train_steps_per_epoch
      while left > 0:
        k_now = min(k, left)
        t0 = time.time()
        state, m = trainer.run(state, k_now)
        dt = time.time() - t0
        if not first_call:
          timed_secs += dt
          timed_steps += k_now
        first_call = False
        left -= k_now
        done_steps += k_now
        step_now = done_steps * per_step
        scalars = {f"loss/{n}" if "loss" in n else f"train/{n}": float(np.mean(m[n])) for n in m}
        scalars["perf/env_steps_per_sec"] = k_now * per_step * len(labels) / max(dt, 1e-9)
        logger.scalars(step_now, scalars)
        if not all(np.all(np.isfinite(m[n])) for n in ("loss", "grad_norm")):
          print(f"WARNING: non-finite loss or gradient around training step {done_steps}", flush=True)
        if console:
          progress.update(step_now, {"return": float(np.mean(ret)), "loss": float(np.mean(m["loss"]))})
        if trainer.bridge == "graph" and not config.iterations_per_call:
          k = int(min(max(1, round(float(config.chunk_secs) / max(dt / k_now, 1e-6))), 1000))
      step_now = done_steps * per_step
      ret = do_eval(state, epoch + 1, step_now)
      if aborted:
        print(f"ERROR: evaluation return is NaN at step {step_now:,}; stopping the run", flush=True)
      info = {"return": float(np.mean(ret)), "epoch": epoch + 1}
      if console:
        progress.update(step_now, {"return": info["return"]}, force=True)
      if progress_fn is not None:
        progress_fn(step_now, dict(info, steps_per_sec=timed_steps * per_step * len(labels) /
                                   timed_secs if timed_secs else float("nan")))
  finally:
    logger.close()

  returns = {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}
  last = int(config.final_last)
  finals, ci = None, None
  try:
    finals, ci = stats.summarize_final([returns[lab][1] for lab in labels], last=last)
  except ValueError:
    pass
  env_steps = int(state.iteration.numpy()) * per_step
  if ci is not None and math.isfinite(ci.mean):
    summary = (f"final return of {trainer.env.name} with PPO + {config.optimizer.name} "
               f"(lr {config.optimizer.learning_rate:g}) after {env_steps:,} env steps, mean of the last "
               f"{last} evaluation returns over {len(labels)} seed(s): {ci.mean:.4g} ± {ci.half_width:.3g} "
               f"(90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  else:
    summary = f"no finite evaluation return after {env_steps:,} env steps"
  if aborted:
    summary = "ABORTED (NaN evaluation return): " + summary
  if config.plot and ci is not None:
    from optim4rl_tf.eval import plots
    try:
      plots.plot_returns(returns, os.path.join(workdir, "returns.png"),
                         title=f"PPO {trainer.env.name}, {config.optimizer.name} "
                               f"lr {config.optimizer.learning_rate:g}",
                         label=config.optimizer.name)
    except ValueError as e:      # e.g. non-finite returns
      print(f"WARNING: no returns.png: {e}")
  params = [p.numpy() for p in state.params]
  if config.save_params:
    norm = {f"normalizer/{k}": v.numpy() for k, v in state.norm._asdict().items()}
    np.savez(os.path.join(workdir, "params.npz"), seeds=np.array(labels),
             **{n: p for n, p in zip(trainer.nets.param_names, params)}, **norm)
  steps_per_sec = timed_steps * per_step * len(labels) / timed_secs if timed_secs > 0 else float("nan")
  wall = time.time() - t_start
  clean = lambda v: None if v is None or not math.isfinite(v) else v
  logging_lib.write_json(os.path.join(workdir, "summary.json"), dict(
      summary=summary, env_steps=env_steps, planned_env_steps=total, seeds=labels, aborted=aborted,
      final=None if finals is None else [clean(f) for f in finals.tolist()],
      mean=None if ci is None else clean(ci.mean), ci_low=None if ci is None else clean(ci.low),
      ci_high=None if ci is None else clean(ci.high),
      half_width=None if ci is None else clean(ci.half_width),
      eval_returns={str(lab): returns[lab][1].tolist() for lab in labels},
      eval_steps=returns[labels[0]][0].tolist(), env_steps_per_sec=steps_per_sec, eval_secs=eval_secs,
      wall_secs=wall, bridge=config.env.bridge))
  if console:
    print(summary, flush=True)
  return dict(returns=returns, final=finals, ci=ci, steps_per_sec=steps_per_sec, env_steps=env_steps,
              schedule=schedule, wall_secs=wall, summary=summary, aborted=aborted, params=params,
              labels=labels, eval_secs=eval_secs)
