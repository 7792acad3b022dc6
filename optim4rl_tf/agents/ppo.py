"""PPO of docs/fidelity.md §7.3-§7.4 (Brax 0.9.4 ``ppo`` losses/networks, as the official code uses) as pure TF functions.

Layout: every agent quantity carries a LEADING UNIT AXIS ``U`` (the seeds of a run), so U agents train as
one graph, each with its own parameters, normaliser and optimizer state:

  * parameters: list of [U, ...] tensors, policy layers first (:class:`PPONetworks`);
  * observation normaliser :class:`NormState`: count [U], mean/summed_variance/std [U, D];
  * a batch of trajectories :class:`Batch`: obs [U, B, T+1, D] (obs[:, :, T] = the next observation of the
    last step, used for the bootstrap value), raw (pre-tanh) actions [U, B, T, A], behaviour log-probs,
    rewards (unscaled), dones and truncations [U, B, T].

Pieces:
  * :func:`norm_init` / :func:`norm_update` / :func:`normalize` -- running mean/std (batched Welford);
  * :class:`PPONetworks` -- policy MLP (32,)x4 -> 2A and value MLP (256,)x5 -> 1, swish, LeCun-uniform;
  * :class:`TanhNormal` -- the tanh-squashed Normal (TensorFlow Probability Normal + Tanh bijector):
    sampling, log-prob of a pre-tanh action, the entropy estimate of §7.3;
  * :func:`compute_gae` -- GAE with truncation and the vs_{t+1} advantage of §7.4;
  * :func:`ppo_loss` -- clipped surrogate + value + entropy losses per unit, with metrics;
  * :func:`sgd_epochs` -- normaliser update then ``epochs`` x ``num_minibatches`` gradient steps with any
    :class:`optim4rl_tf.optimizers.transforms.AgentOptimizer` (classical or learned).
"""

import math
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from optim4rl_tf.agents.networks import ParamSpec, dim

tfd = tfp.distributions
tfb = tfp.bijectors

# ------------------------------------------------------------------------------------------------
# Observation normaliser (brax.training.acme.running_statistics, Welford, batched).


class NormState(NamedTuple):
  count: Any  # [U] float32: observations seen
  mean: Any  # [U, D]
  summed_variance: Any  # [U, D]: sum of squared deviations (Welford's M2)
  std: Any  # [U, D]


STD_MIN, STD_MAX = 1e-6, 1e6


def norm_init(num_units, obs_size):
  """count 0, mean 0, summed variance 0, std 1 (so normalising before any update is the identity)."""
  return NormState(count=tf.zeros([num_units]),
                   mean=tf.zeros([num_units, obs_size]),
                   summed_variance=tf.zeros([num_units, obs_size]),
                   std=tf.ones([num_units, obs_size]))


def norm_update(state, obs):
  """Adds a batch of observations obs [U, ..., D] (all but the first and last axes are batch axes).

  count += n; mean += sum(x - mean_old) / count; M2 += sum((x - mean_old) * (x - mean_new));
  std = clip(sqrt(max(M2, 1e-12) / count), 1e-6, 1e6)."""
  d = obs.shape[-1]
  x = tf.reshape(tf.cast(obs, tf.float32), [dim(obs, 0), -1, d])
  n = tf.cast(tf.shape(x)[1], tf.float32)
  count = state.count + n
  diff_old = x - state.mean[:, None, :]
  mean = state.mean + tf.reduce_sum(diff_old, axis=1) / count[:, None]
  diff_new = x - mean[:, None, :]
  summed = state.summed_variance + tf.reduce_sum(diff_old * diff_new, axis=1)
  std = tf.clip_by_value(tf.sqrt(tf.maximum(summed, 1e-12) / count[:, None]), STD_MIN, STD_MAX)
  return NormState(count=count, mean=mean, summed_variance=summed, std=std)


def normalize(state, obs):
  """(obs - mean) / std per unit; obs [U, ..., D] (no clipping, docs/fidelity.md §7.3)."""
  extra = obs.shape.rank - 2
  shape = lambda t: tf.reshape(t, [dim(t, 0)] + [1] * extra + [t.shape[-1]])
  return (obs - shape(state.mean)) / shape(state.std)


# ------------------------------------------------------------------------------------------------
# Networks.


def _mlp_specs(prefix, n_in, hidden, n_out):
  specs, sizes = [], list(hidden) + [n_out]
  for i, h in enumerate(sizes):
    specs += [
        ParamSpec(f"{prefix}/hidden_{i}/kernel", (n_in, h), n_in),
        ParamSpec(f"{prefix}/hidden_{i}/bias", (h,), 0)
    ]
    n_in = h
  return specs


def _dense(x, kernel, bias):
  # x [U, B, I], kernel [U, I, O], bias [U, O]
  return tf.einsum("ubi,uio->ubo", x, kernel) + bias[:, None, :]


def _mlp(params, x):
  n = len(params) // 2
  for i in range(n):
    x = _dense(x, params[2 * i], params[2 * i + 1])
    if i < n - 1:
      x = tf.nn.silu(x)  # flax swish
  return x


class PPONetworks:
  """Brax PPO networks (docs/fidelity.md §7.3) for one agent per unit.

  Parameter list order: policy layers (``policy/hidden_i/{kernel,bias}``) then value layers
  (``value/hidden_i/...``); :attr:`param_names` holds the names (Brax's MLP layer names).
  """

  def __init__(self, obs_size, action_size, policy_hidden=(32,) * 4, value_hidden=(256,) * 5):
    self.obs_size, self.action_size = int(obs_size), int(action_size)
    self.policy_hidden, self.value_hidden = tuple(policy_hidden), tuple(value_hidden)
    self.specs = (_mlp_specs("policy", self.obs_size, self.policy_hidden, 2 * self.action_size) +
                  _mlp_specs("value", self.obs_size, self.value_hidden, 1))
    self.num_policy = 2 * (len(self.policy_hidden) + 1)
    self.param_names = [s.name for s in self.specs]
    self.num_params = sum(int(np.prod(s.shape)) for s in self.specs)

  def init_one(self, key):
    """One agent's parameters from a stateless key int32 [2]: LeCun-uniform kernels
    U(+-sqrt(3 / fan_in)), zero biases."""
    out = []
    for i, s in enumerate(self.specs):
      if s.fan_in == 0:
        out.append(tf.zeros(s.shape, tf.float32))
      else:
        lim = math.sqrt(3.0 / s.fan_in)
        k = tf.random.experimental.stateless_fold_in(key, i)
        out.append(tf.random.stateless_uniform(s.shape, seed=k, minval=-lim, maxval=lim))
    return out

  def init(self, keys):
    """keys int32 [U, 2] -> list of [U, *shape] tensors (each unit from its own key)."""
    keys = tf.convert_to_tensor(keys, tf.int32)
    sig = [tf.TensorSpec(s.shape, tf.float32) for s in self.specs]
    return list(tf.map_fn(self.init_one, keys, fn_output_signature=sig))

  def policy(self, params, obs):
    """Normalised obs [U, B, D] -> distribution parameters [U, B, 2A] (loc, pre-softplus scale)."""
    return _mlp(params[:self.num_policy], obs)

  def value(self, params, obs):
    """Normalised obs [U, B, D] -> values [U, B]."""
    return _mlp(params[self.num_policy:], obs)[..., 0]

  def to_dict(self, params):
    return dict(zip(self.param_names, params))


# ------------------------------------------------------------------------------------------------
# Action distribution.


class TanhNormal:
  """Brax ``NormalTanhDistribution``: logits [..., 2A] -> loc, sigma = softplus(s) + min_std; pre-tanh
  action u ~ Normal(loc, sigma) (a TFP ``Normal``), env action = tanh(u) (TFP ``Tanh`` bijector).

    log pi(u)  = sum_dims [log N(u; loc, sigma) - log|d tanh(u)/du|],
    log|d tanh/du| = 2 (log 2 - u - softplus(-2u))   (``Tanh().forward_log_det_jacobian``);
    entropy estimate = sum_dims [H(N(loc, sigma)) + log|d tanh/du'|] with a fresh sample u'.
  """

  def __init__(self, logits, min_std=0.001):
    loc, s = tf.split(logits, 2, axis=-1)
    self.loc = loc
    self.scale = tf.nn.softplus(s) + min_std
    self.base = tfd.Normal(loc=self.loc, scale=self.scale)
    self.bijector = tfb.Tanh()

  def sample_raw(self, seed):
    """Pre-tanh sample u (stateless: ``seed`` is an int32 [2] tensor)."""
    return self.base.sample(seed=seed)

  def postprocess(self, u):
    return self.bijector.forward(u)

  def log_prob(self, u):
    """log-prob of the squashed action, evaluated at its pre-tanh value u: [..., A] -> [...]."""
    lp = self.base.log_prob(u) - self.bijector.forward_log_det_jacobian(u, event_ndims=0)
    return tf.reduce_sum(lp, axis=-1)

  def entropy(self, seed):
    """Brax's single-sample entropy estimate: [..., 2A] logits -> [...]."""
    u = self.sample_raw(seed)
    ent = self.base.entropy() + self.bijector.forward_log_det_jacobian(u, event_ndims=0)
    return tf.reduce_sum(ent, axis=-1)


def policy_step(nets, params, norm, obs, seed, deterministic=False):
  """Acting: raw obs [U, B, D] -> (u [U, B, A] pre-tanh action, log pi(u) [U, B], env action tanh(u)).

  ``deterministic``: u = loc (evaluation with the mean action; Brax's default evaluation is stochastic)."""
  dist = TanhNormal(nets.policy(params, normalize(norm, obs)))
  u = dist.loc if deterministic else dist.sample_raw(seed)
  return u, dist.log_prob(u), dist.postprocess(u)


# ------------------------------------------------------------------------------------------------
# GAE and the loss.


def compute_gae(truncation, termination, rewards, values, bootstrap_value, lambda_, discount):
  """Brax 0.9.4 ``compute_gae`` with time on the LAST axis.

  truncation, termination, rewards, values: [..., T]; bootstrap_value [...] (v_T). Returns (vs,
  advantages), both [..., T] and stop-gradient:
    delta_t = (r_t + gamma (1 - term_t) v_{t+1} - v_t)(1 - trunc_t);
    A_t = delta_t + gamma (1 - term_t)(1 - trunc_t) lambda A_{t+1}, A_T = 0;  vs_t = A_t + v_t;
    adv_t = (r_t + gamma (1 - term_t) vs_{t+1} - v_t)(1 - trunc_t), vs_T = v_T (vs_{t+1}, not A_t).
  """
  num_steps = rewards.shape[-1]
  v_next = tf.concat([values[..., 1:], bootstrap_value[..., None]], axis=-1)
  mask = 1.0 - truncation
  deltas = (rewards + discount * (1.0 - termination) * v_next - values) * mask
  acc = tf.zeros_like(bootstrap_value)
  out = [None] * num_steps
  for t in reversed(range(num_steps)):
    acc = deltas[..., t] + discount * (1.0 - termination[..., t]) * mask[..., t] * lambda_ * acc
    out[t] = acc
  vs = tf.stack(out, axis=-1) + values
  vs_next = tf.concat([vs[..., 1:], bootstrap_value[..., None]], axis=-1)
  adv = (rewards + discount * (1.0 - termination) * vs_next - values) * mask
  return tf.stop_gradient(vs), tf.stop_gradient(adv)


class PPOHParams(NamedTuple):
  reward_scaling: float = 10.0
  discount: float = 0.97
  gae_lambda: float = 0.95
  clipping_epsilon: float = 0.3
  entropy_cost: float = 1e-2
  normalize_advantage: bool = True
  value_weight: float = 0.25  # Brax: 0.5 * 0.5 (vf coefficient 0.5 times the 1/2 of the square)


class Batch(NamedTuple):
  """Trajectories, unit-major: obs [U, B, T+1, D]; raw_action [U, B, T, A]; log_prob, reward, done,
  truncation [U, B, T] (reward unscaled; done includes time-limit ends; discount = 1 - done)."""
  obs: Any
  raw_action: Any
  log_prob: Any
  reward: Any
  done: Any
  truncation: Any


LOSS_METRICS = ("loss", "policy_loss", "value_loss", "entropy_loss", "entropy", "approx_kl", "clip_fraction")


def _mean_ut(x):
  """Mean over every axis but the unit axis: [U, ...] -> [U]."""
  return tf.reduce_mean(tf.reshape(x, [dim(x, 0), -1]), axis=1)


def ppo_loss(nets, params, norm, batch, seed, hp=PPOHParams(), on_policy=False):
  """PPO loss of docs/fidelity.md §7.4 item 4 for every unit.

  Returns (loss [U], metrics {name: [U]}); d sum_u loss[u] / d params gives each unit its own gradient.
  ``norm`` is the (already updated) normaliser; ``seed`` int32 [2] drives the entropy sample.
  ``on_policy=True`` (MetaPPO's meta-loss, docs/fidelity.md §7.5): the behaviour log-probs are the target log-probs
  under the same parameters, so rho = exp(log pi - log pi) = 1 AS A FUNCTION of the parameters and the
  clipped surrogate contributes no gradient (``batch.log_prob`` is ignored).
  """
  obs = normalize(norm, batch.obs)  # [U, B, T+1, D]
  u_dim, b_dim, t1 = dim(obs, 0), dim(obs, 1), obs.shape[2]
  t = t1 - 1
  flat = tf.reshape(obs, [u_dim, -1, obs.shape[-1]])
  values = tf.reshape(nets.value(params, flat), [u_dim, b_dim, t1])
  logits = nets.policy(params, tf.reshape(obs[:, :, :t], [u_dim, -1, obs.shape[-1]]))
  logits = tf.reshape(logits, [u_dim, b_dim, t, logits.shape[-1]])
  v, bootstrap = values[..., :t], values[..., t]

  rewards = batch.reward * hp.reward_scaling
  truncation = batch.truncation
  termination = batch.done * (1.0 - truncation)  # (1 - discount)(1 - trunc)
  vs, adv = compute_gae(truncation, termination, rewards, v, bootstrap, hp.gae_lambda, hp.discount)
  if hp.normalize_advantage:
    flat_adv = tf.reshape(adv, [u_dim, -1])
    mean = tf.reduce_mean(flat_adv, axis=1)
    std = tf.math.reduce_std(flat_adv, axis=1)
    adv = (adv - mean[:, None, None]) / (std[:, None, None] + 1e-8)

  dist = TanhNormal(logits)
  log_prob = dist.log_prob(batch.raw_action)
  log_ratio = log_prob - (log_prob if on_policy else batch.log_prob)
  rho = tf.exp(log_ratio)
  eps = hp.clipping_epsilon
  surrogate = tf.minimum(rho * adv, tf.clip_by_value(rho, 1.0 - eps, 1.0 + eps) * adv)
  policy_loss = -_mean_ut(surrogate)
  value_loss = hp.value_weight * _mean_ut(tf.square(vs - v))
  entropy = _mean_ut(dist.entropy(seed))
  entropy_loss = -hp.entropy_cost * entropy
  loss = policy_loss + value_loss + entropy_loss
  metrics = dict(loss=loss,
                 policy_loss=policy_loss,
                 value_loss=value_loss,
                 entropy_loss=entropy_loss,
                 entropy=entropy,
                 approx_kl=_mean_ut(-log_ratio),
                 clip_fraction=_mean_ut(tf.cast(tf.abs(rho - 1.0) > eps, tf.float32)))
  return loss, metrics


def unit_norm(tensors):
  """Global L2 norm per unit of a list of [U, ...] tensors -> [U]."""
  sq = [tf.reduce_sum(tf.reshape(tf.square(x), [dim(x, 0), -1]), axis=1) for x in tensors]
  return tf.sqrt(tf.add_n(sq))


def loss_and_grads(nets, params, norm, batch, seed, hp):
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss, metrics = ppo_loss(nets, params, norm, batch, seed, hp)
    total = tf.reduce_sum(loss)
  return loss, metrics, tape.gradient(total, params)


SGD_METRICS = LOSS_METRICS + ("grad_norm", "update_norm")


def sgd_epochs(nets,
               opt,
               hp,
               params,
               opt_state,
               norm,
               batch,
               seed,
               epochs,
               num_minibatches,
               normalize_observations=True,
               constant_grads=False):
  """docs/fidelity.md §7.4 items 2-3: update the normaliser with the batch's observations, then ``epochs`` passes
  of ``num_minibatches`` gradient steps over shuffled trajectories (one permutation per unit and epoch;
  minibatch j of an epoch = trajectories perm[j*B:(j+1)*B]).

  batch: :class:`Batch` with M trajectories per unit (M divisible by num_minibatches).
  Returns (params, opt_state, norm, metrics {name: [U]} averaged over the gradient steps).

  Under an outer ``tf.GradientTape`` (MetaPPO's meta-gradient, docs/fidelity.md §7.5) everything is
  differentiable: the normaliser update, the batch, the parameters and the optimizer state. The returned
  metrics are stop-gradient (same values). ``constant_grads=True``: the agent gradients are computed from
  stop-gradient parameters, normaliser and minibatch, i.e. they are constants to an outer tape (for learned
  optimizers whose gradient input is stop-gradient anyway: the same meta-gradient without recording the
  inner backward pass).
  """
  t = batch.raw_action.shape[2]
  if normalize_observations:
    norm = norm_update(norm, batch.obs[:, :, :t])
  u_dim = dim(batch.obs, 0)
  m = batch.obs.shape[1]
  mb = m // num_minibatches
  keys = tf.random.experimental.stateless_split(seed, 2)
  perm_keys = tf.random.experimental.stateless_split(keys[0], epochs)
  perms = tf.stack([tf.argsort(tf.random.stateless_uniform([u_dim, m], perm_keys[e]), axis=1) for e in range(epochs)
                   ])  # [E, U, M]
  num_steps = epochs * num_minibatches
  zeros = {k: tf.zeros([u_dim]) for k in SGD_METRICS}

  def body(i, params, opt_state, sums):
    e, j = i // num_minibatches, i % num_minibatches
    idx = perms[e][:, j * mb:(j + 1) * mb]  # [U, mb]
    mini = Batch(*[tf.gather(x, idx, axis=1, batch_dims=1) for x in batch])
    step_key = tf.random.experimental.stateless_fold_in(keys[1], i)
    if constant_grads:
      sg = lambda s: tf.nest.map_structure(tf.stop_gradient, s)
      _, metrics, grads = loss_and_grads(nets, sg(params), sg(norm), sg(mini), step_key, hp)
      grads = sg(grads)
    else:
      _, metrics, grads = loss_and_grads(nets, params, norm, mini, step_key, hp)
    updates, opt_state = opt.update(grads, opt_state, params=params)
    params = [p + u for p, u in zip(params, updates)]
    metrics = dict(metrics, grad_norm=unit_norm(grads), update_norm=unit_norm(updates))
    # Metrics never carry gradients (an outer tape would otherwise differentiate the norms with zero
    # cotangents, through the inner backward pass).
    sums = {k: sums[k] + tf.stop_gradient(metrics[k]) for k in SGD_METRICS}
    return i + 1, params, opt_state, sums

  _, params, opt_state, sums = tf.while_loop(lambda i, *_: i < num_steps, body,
                                             (tf.constant(0), list(params), opt_state, zeros))
  return params, opt_state, norm, {k: v / num_steps for k, v in sums.items()}
