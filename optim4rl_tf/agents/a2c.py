"""A2C of docs/fidelity.md §4 as pure TensorFlow functions on unit-batched agents.

Layout conventions (U = units: seeds of an evaluation or training units of meta-training; B = environments
per unit; T = rollout steps):

  * parameters: list of tensors [U, ...] (see :mod:`optim4rl_tf.agents.networks`);
  * the environment batch is flat with ``num_envs = U * B``; env ``u * B + b`` belongs to unit ``u``;
  * observations carried between iterations: [U, B, *obs_shape];
  * trajectories (:class:`Trajectory`): obs [U, T+1, B, *obs_shape], actions/rewards/dones [U, T, B].

Reusable pieces (the meta-trainer uses them with B = 1 per unit):

  * :func:`rollout` -- T steps with auto-reset inside a ``tf.while_loop`` (``acting.generate_unroll``);
  * :func:`lambda_returns` -- rlax ``lambda_returns`` (backwards, done-masked, bootstrap from v_T);
  * :func:`a2c_loss` -- per-unit losses (mean over time and envs) + per-unit metrics;
  * :func:`episode_returns` -- §4.3 bookkeeping (running return per env; sum/count of finished episodes);
  * :func:`a2c_update` -- one full A2C iteration (rollout, loss, env-averaged gradient, optimizer);
  * :func:`make_trainer` -- init + a ``tf.function`` that runs K iterations per call.
"""

from typing import Any, NamedTuple

import tensorflow as tf

from optim4rl_tf.agents import acting
from optim4rl_tf.agents.networks import dim, unit_seeds


class Trajectory(NamedTuple):
  """One rollout, unit-major. obs [U, T+1, B, *obs_shape] (obs[:, T] = bootstrap observation),
  actions int32 [U, T, B], rewards float32 [U, T, B], dones float32 [U, T, B]."""
  obs: Any
  actions: Any
  rewards: Any
  dones: Any


class A2CHParams(NamedTuple):
  discount: float = 0.995
  gae_lambda: float = 0.95
  critic_weight: float = 0.5
  entropy_weight: float = 0.01


class A2CState(NamedTuple):
  """Carry of the training loop (all tensors)."""
  params: Any  # list [U, ...]
  opt_state: Any  # optimizer state (structure of the optimizer)
  env_state: Any  # env state, leading axis U*B
  obs: Any  # [U, B, *obs_shape] observation of env_state
  ep_return: Any  # [U, B] running (unfinished) episode return
  iteration: Any  # int32 scalar: iterations done so far
  key: Any  # int32 [2]: base stateless key of the run
  healthy: Any = None  # bool [U]: unit has not diverged (None: no divergence guard, see a2c_update)


METRIC_NAMES = ("return_sum", "return_count", "loss", "actor_loss", "critic_loss", "entropy_loss", "entropy",
                "grad_norm", "update_norm", "healthy")

# Divergence guard: a unit whose parameters or policy logits hold NaN/Inf or an entry with |x| above this
# bound (absurd for these float32 nets, whose initial weights are ~0.1) has diverged.
DIVERGENCE_BOUND = 1e8


def unit_finite(tensors, bound=DIVERGENCE_BOUND):
  """bool [U]: every entry of unit u in the [U, ...] ``tensors`` is finite and, unless ``bound`` is None,
  at most ``bound`` in absolute value."""
  oks = []
  for x in tensors:
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    ok = tf.math.is_finite(flat) if bound is None else tf.abs(flat) <= bound  # NaN <= b is False
    oks.append(tf.reduce_all(ok, axis=1))
  return tf.reduce_all(tf.stack(oks), axis=0)


def _where_units(ok, x, y):
  """Per unit: x where ok [U] else y ([U, ...] tensors, or a scalar: a stand-in zero is a scalar, since
  grappler folds ``zeros_like`` into a full-size constant that a compiled graph keeps for its lifetime)."""
  return tf.where(tf.reshape(ok, [-1] + [1] * (x.shape.rank - 1)), x, y)


def _to_units(x, num_units):
  """[U*B, ...] -> [U, B, ...]."""
  return tf.reshape(x, [num_units, -1] + x.shape[1:].as_list())


def sample_actions(logits, seed):
  """One action per row of ``logits`` [N, A] (stateless): int32 [N]."""
  return tf.random.stateless_categorical(logits, 1, seed=seed, dtype=tf.int32)[:, 0]


def rollout(logits_fn, params, env, env_state, obs, key, num_steps, num_units, sample_fn=sample_actions):
  """Rolls out ``num_steps`` steps of all U*B envs with actions sampled from the policy.

  Args:
    logits_fn: ``(params, obs [U, B, *obs_shape]) -> logits [U, B, A]`` (e.g. ``net.logits``).
    params: list of unit-batched parameters.
    env: environment with ``num_envs == U * B`` (``step(state, action, seed)`` with auto-reset).
    env_state: env state (leading axis U*B).
    obs: [U, B, *obs_shape], the observation of ``env_state`` (``None``: computed with ``env.observe``).
    key: int32 [2] stateless key; step t uses keys folded from (key, t).
    num_steps: T (Python int).
    num_units: U (Python int).
    sample_fn: ``(logits [U*B, A], seed) -> actions int32 [U*B]`` (default :func:`sample_actions`).

  Returns:
    (traj, env_state, obs): :class:`Trajectory` with obs [U, T+1, B, ...] (the last one is the observation
    after the last step, i.e. a reset observation where the last step ended an episode), the final env
    state, and its observation [U, B, ...].
  """
  return guarded_rollout(logits_fn, params, env, env_state, obs, key, num_steps, num_units, sample_fn=sample_fn)[:3]


def guarded_rollout(logits_fn,
                    params,
                    env,
                    env_state,
                    obs,
                    key,
                    num_steps,
                    num_units,
                    healthy=None,
                    sample_fn=sample_actions):
  """:func:`rollout` that also returns ``healthy`` [U] (None in, None out).

  With ``healthy`` (bool [U]), a unit that is not healthy, or whose logits hold NaN/Inf or |logit| >
  ``DIVERGENCE_BOUND`` at some step, samples from uniform logits from then on (so actions stay valid: NaN
  logits would give out-of-range actions and crash the env's gathers, or read zeros on a GPU) and is
  returned as not healthy.
  """
  guard = healthy is not None
  if obs is None:
    obs = _to_units(env.observe(env_state), num_units)

  def actor(obs, step_key, ok):  # acting.actor: the policy's action, sampled with split(step_key)[0]
    logits = logits_fn(params, obs)
    if guard:
      ok = ok & unit_finite([logits])
      logits = _where_units(ok, logits, tf.zeros([], logits.dtype))
    a = sample_fn(tf.reshape(logits, [-1, logits.shape[-1]]), tf.random.experimental.stateless_split(step_key, 2)[0])
    return a, (a,), ok

  ok = healthy if guard else tf.ones([num_units], tf.bool)
  unroll, env_state, obs, ok = acting.generate_unroll(env,
                                                      env_state,
                                                      obs,
                                                      actor,
                                                      key,
                                                      num_steps,
                                                      record_dtypes=(tf.int32,),
                                                      carry=ok,
                                                      obs_fn=lambda x: _to_units(x, num_units))

  def unit_major(x):  # [T, U, ...] -> [U, T, ...]
    perm = [1, 0] + list(range(2, x.shape.rank))
    return tf.transpose(x, perm)

  def per_unit(x):  # [T, U*B] -> [T, U, B]
    return tf.reshape(x, [num_steps, num_units, -1])

  traj = Trajectory(obs=unit_major(unroll.obs),
                    actions=unit_major(per_unit(unroll.record[0])),
                    rewards=unit_major(per_unit(unroll.reward)),
                    dones=unit_major(per_unit(unroll.done)))
  return traj, env_state, obs, (ok if guard else None)


def lambda_returns(rewards, discounts, values, lam):
  """rlax ``lambda_returns`` along axis 1 (time), computed backwards.

  rewards, discounts: [U, T, ...]; values: [U, T+1, ...] (v_0 .. v_T); lam: float.
  G_{T-1} = r_{T-1} + d_{T-1} v_T;  G_t = r_t + d_t [(1 - lam) v_{t+1} + lam G_{t+1}].
  With ``discounts = gamma * (1 - done)`` this is the done-masked return of docs/fidelity.md §4.2.
  Returns G [U, T, ...].
  """
  num_steps = rewards.shape[1]
  g = values[:, num_steps]
  out = [None] * num_steps
  for t in reversed(range(num_steps)):
    g = rewards[:, t] + discounts[:, t] * ((1.0 - lam) * values[:, t + 1] + lam * g)
    out[t] = g
  return tf.stack(out, axis=1)


def a2c_loss(apply_fn, params, traj, hparams=A2CHParams()):
  """A2C losses of docs/fidelity.md §4.2, per unit.

  Args:
    apply_fn: ``(params, obs [U, N, *obs_shape]) -> (logits [U, N, A], values [U, N])`` (``net.apply``).
    params: list of unit-batched parameters.
    traj: :class:`Trajectory` (obs [U, T+1, B, ...]; actions/rewards/dones [U, T, B]).
    hparams: :class:`A2CHParams`.

  Returns:
    (loss [U], metrics): ``loss[u]`` = mean over the B envs of unit u of the per-env total loss
    (actor + critic_weight*critic + entropy term, each a mean over time), so
    ``tape.gradient(tf.reduce_sum(loss), params)`` is, for every unit, its env-averaged gradient.
    ``metrics`` maps actor_loss, critic_loss (weighted), entropy_loss (weighted), entropy (mean policy
    entropy) and loss to [U] tensors.
  """
  obs = traj.obs
  u_dim, t1, b_dim = dim(obs, 0), obs.shape[1], dim(obs, 2)
  flat_obs = tf.reshape(obs, [u_dim, -1] + obs.shape[3:].as_list())
  logits, values = apply_fn(params, flat_obs)
  num_actions = logits.shape[-1]
  logits = tf.reshape(logits, [u_dim, t1, b_dim, num_actions])[:, :-1]  # [U, T, B, A]
  values = tf.reshape(values, [u_dim, t1, b_dim])  # [U, T+1, B]

  discounts = hparams.discount * (1.0 - traj.dones)
  returns = lambda_returns(traj.rewards, discounts, values, hparams.gae_lambda)
  td = tf.stop_gradient(returns) - values[:, :-1]
  critic = hparams.critic_weight * tf.reduce_mean(tf.square(td), axis=[1, 2])

  log_pi = tf.nn.log_softmax(logits)
  log_pi_a = tf.gather(log_pi, traj.actions, batch_dims=3)
  actor = -tf.reduce_mean(log_pi_a * tf.stop_gradient(td), axis=[1, 2])
  ent = -tf.reduce_sum(tf.exp(log_pi) * log_pi, axis=-1)  # [U, T, B]
  mean_ent = tf.reduce_mean(ent, axis=[1, 2])
  ent_loss = -hparams.entropy_weight * mean_ent
  loss = actor + critic + ent_loss
  return loss, dict(loss=loss, actor_loss=actor, critic_loss=critic, entropy_loss=ent_loss, entropy=mean_ent)


def episode_returns(ep_return, rewards, dones):
  """Episode-return bookkeeping of docs/fidelity.md §4.3 for one iteration.

  ep_return [U, B]: running return of the unfinished episode of each env; rewards, dones [U, T, B].
  Returns (ep_return [U, B], return_sum [U], return_count [U]): the sum and number of episode returns of
  episodes that ended during these T steps (per unit, over its envs).
  """
  ret_sum = tf.zeros_like(ep_return[:, 0])
  count = tf.zeros_like(ep_return[:, 0])
  for t in range(rewards.shape[1]):
    c = ep_return + rewards[:, t]
    d = dones[:, t]
    ret_sum += tf.reduce_sum(c * d, axis=1)
    count += tf.reduce_sum(d, axis=1)
    ep_return = c * (1.0 - d)
  return ep_return, ret_sum, count


def unit_norm(tensors):
  """Global L2 norm per unit over a list of [U, ...] tensors -> [U]."""
  sq = [tf.reduce_sum(tf.reshape(tf.square(x), [tf.shape(x)[0], -1]), axis=1) for x in tensors]
  return tf.sqrt(tf.add_n(sq))


def loss_and_grads(apply_fn, params, traj, hparams=A2CHParams()):
  """(loss [U], metrics, grads): grads of sum_u loss[u], i.e. independent env-averaged per-unit grads."""
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss, metrics = a2c_loss(apply_fn, params, traj, hparams)
    total = tf.reduce_sum(loss)
  grads = tape.gradient(total, params)
  return loss, metrics, grads


def apply_updates(params, updates):
  return [p + u for p, u in zip(params, updates)]


def a2c_update(net, env, opt, hparams, num_steps, num_units, state, grad_probe=None):
  """One A2C iteration (§4.2) on all units: rollout, losses, env-averaged gradient, clip + optimizer.

  ``grad_probe``: optional ``fn(grads) -> [U, C]`` applied to the env-averaged gradient before clipping
  and the optimizer (gradient collection, docs/fidelity.md §8.1); its result is ``metrics["grad_probe"]``.

  Divergence guard (when ``state.healthy`` is not None): a unit is healthy while its parameters, policy
  logits, loss, gradient and updated parameters are finite and within ``DIVERGENCE_BOUND``. A unit that
  fails any check is frozen for good: it keeps its last healthy parameters, samples uniform actions, gets
  zero gradients and updates, and reports no returns (``return_count`` 0, from the iteration whose rollout
  failed) and ``healthy`` 0. The other units are unaffected (bit-identical to an unguarded run).

  Returns (new :class:`A2CState`, metrics dict of [U] tensors, see ``METRIC_NAMES``).
  """
  guard = state.healthy is not None
  healthy = (state.healthy & unit_finite(state.params)) if guard else None
  it_key = tf.random.experimental.stateless_fold_in(state.key, state.iteration)
  traj, env_state, obs, healthy = guarded_rollout(net.logits,
                                                  state.params,
                                                  env,
                                                  state.env_state,
                                                  state.obs,
                                                  it_key,
                                                  num_steps,
                                                  num_units,
                                                  healthy=healthy)
  ep_return, ret_sum, ret_count = episode_returns(state.ep_return, traj.rewards, traj.dones)
  _, metrics, grads = loss_and_grads(net.apply, state.params, traj, hparams)
  grad_norm = unit_norm(grads)
  if guard:
    ret_sum = tf.where(healthy, ret_sum, 0.0)
    ret_count = tf.where(healthy, ret_count, 0.0)
    healthy = healthy & tf.math.is_finite(metrics["loss"]) & unit_finite(grads, bound=None)
    grads = [_where_units(healthy, g, tf.zeros([], g.dtype)) for g in grads]
  updates, opt_state = opt.update(grads, state.opt_state, params=state.params)
  params = apply_updates(state.params, updates)
  if guard:
    healthy = healthy & unit_finite(params)
    params = [_where_units(healthy, p, p0) for p, p0 in zip(params, state.params)]
    updates = [_where_units(healthy, u, tf.zeros([], u.dtype)) for u in updates]
  metrics = dict(metrics,
                 return_sum=ret_sum,
                 return_count=ret_count,
                 grad_norm=grad_norm,
                 update_norm=unit_norm(updates),
                 healthy=tf.cast(healthy, tf.float32) if guard else tf.ones([num_units]))
  if grad_probe is not None:
    metrics["grad_probe"] = grad_probe(grads)
  new_state = A2CState(params=params,
                       opt_state=opt_state,
                       env_state=env_state,
                       obs=obs,
                       ep_return=ep_return,
                       iteration=state.iteration + 1,
                       key=state.key,
                       healthy=healthy)
  return new_state, metrics


class Trainer(NamedTuple):
  init: Any  # (seed: int, unit_keys=None) -> A2CState
  run: Any  # (state, num_iterations: int32 scalar) -> (state, {metric: [K, U]})
  #              (with a grad_probe, also "grad_probe": [K, U, C])
  net: Any
  env: Any
  opt: Any


def make_trainer(net, env, opt, hparams, num_steps, num_units, jit_compile=False, grad_probe=None, probe_size=0):
  """Builds init and a ``tf.function`` running K A2C iterations per call (a ``tf.while_loop``).

  ``env.num_envs`` must be a multiple of ``num_units`` (B = num_envs / U envs per unit).
  ``run(state, k)`` takes k as a tensor, so changing the chunk size does not retrace.
  ``grad_probe`` (``fn(grads) -> [U, probe_size]``, see :func:`a2c_update`): ``run`` also returns
  ``"grad_probe"`` [K, U, probe_size], e.g. the sub-sampled gradients of :mod:`optim4rl_tf.analysis.collect`.
  Without it nothing extra is computed.
  """
  if env.num_envs % num_units:
    raise ValueError(f"env.num_envs={env.num_envs} is not a multiple of num_units={num_units}")
  envs_per_unit = env.num_envs // num_units

  def init(seed, unit_keys=None):
    """Initial :class:`A2CState` (all units healthy: the divergence guard of :func:`a2c_update` is on).
    ``unit_keys`` int32 [U, 2] seeds each unit's parameters (default: ``unit_seeds(seed, U)``); ``seed``
    seeds the env resets and the action/env randomness."""
    key = tf.constant([seed, 0], tf.int32)
    params = net.init(unit_seeds(seed, num_units) if unit_keys is None else unit_keys)
    opt_state = opt.init(params)
    env_state = env.reset(tf.random.experimental.stateless_fold_in(key, 1 << 20))
    obs = _to_units(env.observe(env_state), num_units)
    return A2CState(params=params,
                    opt_state=opt_state,
                    env_state=env_state,
                    obs=obs,
                    ep_return=tf.zeros([num_units, envs_per_unit]),
                    iteration=tf.constant(0, tf.int32),
                    key=tf.random.experimental.stateless_fold_in(key, 1 << 21),
                    healthy=tf.ones([num_units], tf.bool))

  step = lambda s: a2c_update(net, env, opt, hparams, num_steps, num_units, s, grad_probe=grad_probe)
  names = METRIC_NAMES + (("grad_probe",) if grad_probe is not None else ())

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def run(state, num_iterations):
    tas = {k: tf.TensorArray(tf.float32, size=num_iterations, element_shape=[num_units]) for k in METRIC_NAMES}
    if grad_probe is not None:
      tas["grad_probe"] = tf.TensorArray(tf.float32, size=num_iterations, element_shape=[num_units, probe_size])

    def body(i, state, tas):
      state, metrics = step(state)
      tas = {k: tas[k].write(i, tf.cast(metrics[k], tf.float32)) for k in names}
      return i + 1, state, tas

    _, state, tas = tf.while_loop(lambda i, *_: i < num_iterations, body, (tf.constant(0), state, tas))
    return state, {k: v.stack() for k, v in tas.items()}

  return Trainer(init=init, run=run, net=net, env=env, opt=opt)
