"""The TF functions of one PPO run on Brax (docs/fidelity.md §7.4): state, rollouts, SGD epochs, evaluation.

:class:`Trainer` is built by :func:`optim4rl_tf.agents.ppo_train.build` from a validated config; all
``num_seeds`` agents are one graph (shapes: a leading seed axis S on every parameter, normaliser and
optimizer state; E envs per seed, N = S * E, D observation and A action sizes, T = ``unroll_length``, K
unrolls per training step).

Bridges (``env.bridge``, :mod:`optim4rl_tf.envs.brax_bridge`):
  * ``graph``: one ``tf.function`` runs ``k`` whole training steps (rollout through the jax2tf-converted
    Brax step inside a ``tf.while_loop``, then the SGD epochs); the evaluation is another while loop.
  * ``numpy``: Python drives the rollout -- per env step one TF call (policy) and one jitted JAX call
    (Brax step); the SGD epochs are one ``tf.function`` call per training step. (This Python loop, and the
    evaluations' loops that stop once every episode ended, are the rollouts not run by
    ``acting.generate_unroll``: one has no graph, the others record nothing but returns.)
Both use the same keys, so for the same config they produce the same run up to float rounding.
"""

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from optim4rl_tf.agents import acting
from optim4rl_tf.agents import ppo


class PPOState(NamedTuple):
  params: Any  # list [S, ...]
  opt_state: Any
  norm: Any  # ppo.NormState
  env_state: Any  # numpy bridge: JAX Brax state; graph bridge: tuple of TF tensors
  obs: Any  # [S, E, D]
  iteration: Any  # int32 scalar: training steps done
  key: Any  # int32 [2]


def _assemble(obs, raw, logp, reward, done, trunc, unrolls, unroll, num_seeds, envs):
  """Step-major rollout (obs [K*T+1, N, D], others [K*T, N, ...]) -> ppo.Batch of K*E trajectories of T
  steps per seed: trajectory (k, e) = unroll k of env e (Brax's order), obs with T+1 entries."""
  idx = np.arange(unrolls)[:, None] * unroll + np.arange(unroll + 1)[None, :]  # [K, T+1]

  def per_seed(x, t_len):  # x [K, t_len, N, ...] -> [S, K*E, t_len, ...]
    rest = x.shape[3:].as_list()
    x = tf.reshape(x, [unrolls, t_len, num_seeds, envs] + rest)
    x = tf.transpose(x, [2, 0, 3, 1] + list(range(4, 4 + len(rest))))
    return tf.reshape(x, [num_seeds, unrolls * envs, t_len] + rest)

  obs = per_seed(tf.gather(obs, idx), unroll + 1)
  steps = [
      per_seed(tf.reshape(x, [unrolls, unroll] + x.shape[1:].as_list()), unroll)
      for x in (raw, logp, reward, done, trunc)
  ]
  return ppo.Batch(obs, *steps)


def act(nets, params, norm, obs, key, j, num_units, deterministic=False):
  """Acting for all units: obs [U, B, D] or [U*B, D] -> (u [U*B, A], log pi [U*B], env action [U*B, A])
  with the step key fold_in(key, j). Reads only the policy's parameters and the normaliser's mean/std."""
  return act_with_key(nets, params, norm, obs, tf.random.experimental.stateless_fold_in(key, j), num_units,
                      deterministic)


def act_with_key(nets, params, norm, obs, step_key, num_units, deterministic=False):
  """:func:`act` with the step's key given (``acting.generate_unroll``'s fold_in(key, j))."""
  norm = ppo.NormState(count=None, mean=norm.mean, summed_variance=None, std=norm.std)
  obs = tf.reshape(obs, [num_units, -1, nets.obs_size])
  u, logp, action = ppo.policy_step(nets, params[:nets.num_policy], norm, obs, step_key, deterministic)
  a = nets.action_size
  return tf.reshape(u, [-1, a]), tf.reshape(logp, [-1]), tf.reshape(action, [-1, a])


def graph_rollout(env, nets, params, norm, flat, obs, key, unrolls, unroll, num_units):
  """In-graph rollout (graph bridge) of ``unrolls`` x ``unroll`` steps of all envs in one while loop
  (``acting.generate_unroll`` on ``env.graph_env()``; the actor records u and log pi, the env's truncation is
  read from each new state).

  flat: the env's flat state; obs [U, E, D] its observation. Returns (ppo.Batch with K*E trajectories per
  unit, flat, obs [U, E, D])."""
  n = unrolls * unroll
  envs = env.num_envs // num_units
  graph_env = env.graph_env()

  def actor(obs, step_key, carry):
    u, logp, action = act_with_key(nets, params, norm, obs, step_key, num_units)
    return action, (u, logp), carry

  out, flat, obs, _ = acting.generate_unroll(graph_env,
                                             flat,
                                             obs,
                                             actor,
                                             key,
                                             n,
                                             record_dtypes=(tf.float32, tf.float32),
                                             obs_fn=lambda x: tf.reshape(x, [num_units, envs, nets.obs_size]),
                                             extras_fn=lambda state: (graph_env.truncation(state),))
  batch = _assemble(tf.reshape(out.obs, [n + 1, env.num_envs, nets.obs_size]), *out.record, out.reward, out.done,
                    out.extras[0], unrolls, unroll, num_units, envs)
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
    self.hp = ppo.PPOHParams(reward_scaling=float(config.reward_scaling),
                             discount=float(config.discount),
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
    return self._policy_fn(params[:self.nets.num_policy], ppo.NormState(None, norm.mean, None, norm.std), obs, key,
                           tf.constant(j), deterministic)

  def _sgd_py(self, params, opt_state, norm, batch, key):
    return ppo.sgd_epochs(self.nets, self.opt, self.hp, params, opt_state, norm, batch, key, self.epochs,
                          self.num_minibatches, self.normalize_observations)

  def _update_py(self, params, opt_state, norm, obs, raw, logp, reward, done, trunc, key):
    batch = _assemble(tf.stack(obs), tf.stack(raw), tf.stack(logp), tf.stack(reward), tf.stack(done), tf.stack(trunc),
                      self.unrolls, self.unroll, self.num_seeds, self.envs)
    return self._sgd(params, opt_state, norm, batch, key)

  def _keys(self, key, iteration):
    it_key = tf.random.experimental.stateless_fold_in(key, iteration)
    ks = tf.random.experimental.stateless_split(it_key, 2)
    return ks[0], ks[1]  # rollout key, sgd key

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
    return PPOState(params=params,
                    opt_state=opt_state,
                    norm=norm,
                    env_state=env_state,
                    obs=obs,
                    iteration=tf.constant(0, tf.int32),
                    key=tf.constant([int(self.config.seed), 1], tf.int32))

  def checkpoint_state(self, state):
    """``state`` as tensors only (the numpy bridge's JAX env state as the graph bridge's flat tuple), for
    :class:`optim4rl_tf.utils.run_lifecycle.StateCheckpoint`."""
    return state if self.bridge == "graph" else state._replace(env_state=self.env.to_flat(state.env_state))

  def from_checkpoint_state(self, state):
    """The inverse of :meth:`checkpoint_state`."""
    return state if self.bridge == "graph" else state._replace(env_state=self.env.from_flat(state.env_state))

  # ----- graph bridge -----------------------------------------------------------------------------
  def _graph_rollout(self, params, norm, flat, obs, key):
    return graph_rollout(self.env, self.nets, params, norm, flat, obs, key, self.unrolls, self.unroll, self.num_seeds)

  def _graph_run_py(self, state, num_iterations):
    tas = {k: tf.TensorArray(tf.float32, size=num_iterations) for k in ppo.SGD_METRICS}

    def body(i, state, tas):
      rkey, skey = self._keys(state.key, state.iteration)
      batch, flat, obs = self._graph_rollout(state.params, state.norm, state.env_state, state.obs, rkey)
      params, opt_state, norm, metrics = self._sgd(state.params, state.opt_state, state.norm, batch, skey)
      tas = {k: tas[k].write(i, metrics[k]) for k in ppo.SGD_METRICS}
      state = PPOState(params=params,
                       opt_state=opt_state,
                       norm=norm,
                       env_state=flat,
                       obs=obs,
                       iteration=state.iteration + 1,
                       key=state.key)
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
        lambda t, _f, _o, _r, active, _l: tf.logical_and(t < self.eval_steps, tf.reduce_any(active > 0)), body,
        (tf.constant(0), flat, obs, ret, active, length))
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
    params, opt_state, norm, metrics = self._update_fn(state.params, state.opt_state, state.norm, *cols, skey)
    return PPOState(params=params,
                    opt_state=opt_state,
                    norm=norm,
                    env_state=js,
                    obs=obs,
                    iteration=state.iteration + 1,
                    key=state.key), metrics

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
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(self.config.seed), 2], tf.int32), int(index))
    if self.bridge == "graph":
      ret, length = self._graph_eval(state.params, state.norm, self.eval_env.to_flat(js), key)
      ret, length = ret.numpy(), length.numpy()
    else:
      ret, length = self._numpy_eval(state.params, state.norm, js, key)
    return ret.mean(axis=1), length.mean(axis=1)
