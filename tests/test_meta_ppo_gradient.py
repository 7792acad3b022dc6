"""MetaPPO's meta-gradient (docs/fidelity.md §7.5) against one computed entirely in JAX.

A tiny MetaPPO problem (inverted_pendulum, 2 units x 2 envs, episodes of 5 steps so auto-resets and
truncations happen, 2 inner PPO training steps of 2 epochs x 2 minibatches, unrolls of 3 steps, Optim4RL
without MLP heads) runs through the project's ``trainer.outer_iteration``. The reference is ``jax.grad``
of a JAX transcription (below) of the same iteration -- PPO loss, normaliser, Optim4RL update, rollout
assembly -- over the SAME Brax step (``BraxEnv.jax_step``), the same initial state, the same sampled noise
(drawn here with the project's keys) and the same minibatch permutations, with no stop-gradient on rollout
data, as the official MetaPPO. The agent gradients enter the learned optimizer under stop-gradient.

The through-environment estimator (the default) must agree to float32 tolerance; the approximation
(``meta_grad_through_env=False``: rollout data held constant) must miss by far more than that tolerance,
so this test fails if the bridge or the meta-gradient drops the environment paths.

The reference is computed once by the transcription below and stored with everything it was computed from
(the tiny config, phi, the initial agent, optimizer and environment state, the drawn noise and permutations)
in tests/data/meta_ppo_jax_reference.npz, which saves the suite JAX's trace and compilation of the unrolled
iteration; a change to any of those inputs makes the test fail until it is regenerated:

  .venv/bin/python tests/test_meta_ppo_gradient.py --write
"""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from optim4rl_tf.agents import ppo
from optim4rl_tf.configs import ppo as ppo_configs
from optim4rl_tf.meta import meta_ppo
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import meta_ppo_task
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.optimizers import meta_params
from conftest import set_fields  # noqa: E402

KEY = (7, 11)
SEEDS = (3, 4)
REL_TOL = 2e-4  # max |ours - jax| / max |jax| (float32; measured 1.0e-7; the approximation: 9.3e-2)


def tiny_config():
  c = ppo_configs.get_config("meta_inverted_pendulum")
  return set_fields(
      c, **{
          "env.num_envs": 4,
          "env.episode_length": 5,
          "num_units": 2,
          "batch_size": 2,
          "num_minibatches": 2,
          "unroll_length": 3,
          "update_epochs": 2,
          "inner_updates": 2,
          "learning_rate": 3e-3,
          "pipeline": False,
          "network.policy_hidden": (8,),
          "network.value_hidden": (8, 8),
          "optimizer.mlp_dims": (),
          "optimizer.hidden_size": 3
      })


REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "meta_ppo_jax_reference.npz")


@pytest.fixture(scope="module")
def problem():
  return build_problem()


def build_problem():
  """(task, core, phi, units, brax state) of the tiny problem, with a hand-made initial state."""
  c = tiny_config()
  task = meta_ppo_task.build_task(c)  # the task and phi a MetaTrainer of ``c`` builds (trainer.build)
  core, phi0 = meta_params.resolve(c.optimizer.name,
                                   None,
                                   mlp_dims=tuple(c.optimizer.mlp_dims),
                                   hidden_size=c.optimizer.hidden_size,
                                   seed=c.seed)
  assert (task.unrolls, task.meta_unrolls, task.num_units, task.env.num_envs) == (2, 1, 2, 4)
  phi = {k: tf.constant(v) for k, v in phi0.items()}
  u, net = task.num_units, task.net
  params = net.init(tf.constant([[1, 2], [5, 6]], tf.int32))
  state = task.env.reset(list(SEEDS))
  flat = task.env.to_flat(state)
  obs = tf.reshape(task.env.flat_obs(flat), [u, -1, net.obs_size])
  hidden = core.init_state_feature_major([u, net.num_params])
  units = meta_ppo.UnitState(params=params,
                             opt_state=hidden,
                             norm=ppo.norm_init(u, net.obs_size),
                             env_state=flat,
                             obs=obs)
  return task, core, phi, units, state


def project_meta_gradient(task, core, phi, units, through_env):
  t = task._replace(meta_grad_through_env=through_env)
  est = trainer_lib.estimator_for(meta_ppo.MetaPPO(t), core, through_data=through_env)
  fn = tf.function(lambda: trainer_lib.outer_iteration(est, core, phi, units, tf.constant(1, tf.int64),
                                                       tf.constant(KEY, tf.int32), pipeline.reset_indices(2, -1), -1))
  _, grads, metrics = fn()
  return {k: v.numpy() for k, v in grads.items()}, float(metrics["meta_loss"])


# ------------------------------------------------------------------------------------------------
# Noise and permutations, drawn with the project's keys (the schedule of meta_ppo.MetaPPO's inner_step and meta_loss).


def _normal(shape, seed):
  """The standard normal TFP's Normal(loc, scale).sample(seed) scales: loc + scale * this."""
  return tfp.distributions.Normal(tf.zeros(shape), tf.ones(shape)).sample(seed=seed).numpy()


def draw_randomness(task):
  split, fold = tf.random.experimental.stateless_split, tf.random.experimental.stateless_fold_in
  u, a, t = task.num_units, task.net.action_size, task.unroll_length
  e = task.env.num_envs // u
  m = task.unrolls * e  # trajectories per unit and inner update
  mb = m // task.num_minibatches
  key = split(tf.constant(KEY, tf.int32), 2)[1]  # outer_iteration: keys[0] resets, keys[1] the rest
  inner = []
  for k in range(task.inner_updates):
    ks = split(fold(key, k), 2)
    act = np.stack([_normal([u, e, a], fold(ks[0], j)) for j in range(task.unrolls * t)])
    keys = split(ks[1], 2)
    perm_keys = split(keys[0], task.update_epochs)
    perms = np.stack([
        tf.argsort(tf.random.stateless_uniform([u, m], perm_keys[i]), axis=1).numpy() for i in range(task.update_epochs)
    ])
    steps = task.update_epochs * task.num_minibatches
    ent = np.stack([_normal([u, mb, t, a], fold(keys[1], i)) for i in range(steps)])
    inner.append((act, perms, ent))
  mks = split(fold(key, meta_ppo.META_KEY_SALT), 2)
  meta_act = np.stack([_normal([u, e, a], fold(mks[0], j)) for j in range(task.meta_unrolls * t)])
  meta_ent = _normal([u, task.meta_unrolls * e, t, a], mks[1])
  return inner, meta_act, meta_ent


# ------------------------------------------------------------------------------------------------
# The JAX transcription of one MetaPPO outer iteration (docs/fidelity.md §7.3-§7.5, §6.2).


def jax_meta_gradient(task, core, phi, units, state, randomness):
  import jax
  import jax.numpy as jnp
  inner, meta_act, meta_ent = randomness
  hp, net, u = task.hparams, task.net, task.num_units
  e, t, d, a = task.env.num_envs // u, task.unroll_length, net.obs_size, net.action_size
  step = task.env.jax_step
  sg = jax.lax.stop_gradient

  def mlp(ps, x):
    n = len(ps) // 2
    for i in range(n):
      x = jnp.einsum("ubi,uio->ubo", x, ps[2 * i]) + ps[2 * i + 1][:, None, :]
      x = jax.nn.silu(x) if i < n - 1 else x
    return x

  policy = lambda p, x: mlp(p[:net.num_policy], x)
  value = lambda p, x: mlp(p[net.num_policy:], x)[..., 0]

  def normalize(norm, x):
    shape = (u,) + (1,) * (x.ndim - 2) + (d,)
    return (x - norm["mean"].reshape(shape)) / norm["std"].reshape(shape)

  def norm_update(norm, x):
    x = x.reshape(u, -1, d)
    count = norm["count"] + x.shape[1]
    diff_old = x - norm["mean"][:, None]
    mean = norm["mean"] + diff_old.sum(1) / count[:, None]
    summed = norm["summed"] + (diff_old * (x - mean[:, None])).sum(1)
    std = jnp.clip(jnp.sqrt(jnp.maximum(summed, 1e-12) / count[:, None]), 1e-6, 1e6)
    return dict(count=count, mean=mean, summed=summed, std=std)

  def dist(logits):
    loc, s = jnp.split(logits, 2, axis=-1)
    return loc, jax.nn.softplus(s) + 0.001

  fldj = lambda x: 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))

  def log_prob(loc, scale, x):
    lp = -0.5 * ((x - loc) / scale)**2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)
    return (lp - fldj(x)).sum(-1)

  def rollout(params, norm, js, eps):

    def body(js, eps_j):
      obs = js.obs.reshape(u, e, d)
      loc, scale = dist(policy(params, normalize(norm, obs)))
      raw = loc + scale * eps_j
      js = step(js, jnp.tanh(raw).reshape(-1, a))
      return js, (obs.reshape(-1,
                              d), raw.reshape(-1,
                                              a), log_prob(loc, scale,
                                                           raw).reshape(-1), js.reward, js.done, js.info["truncation"])

    js, cols = jax.lax.scan(body, js, eps)
    obs = jnp.concatenate([cols[0], js.obs[None]], 0)
    k = eps.shape[0] // t  # meta_ppo / ppo_train._assemble, in JAX
    idx = np.arange(k)[:, None] * t + np.arange(t + 1)[None, :]

    def per_unit(x, t_len):
      x = x.reshape((k, t_len, u, e) + x.shape[3:])
      x = jnp.transpose(x, (2, 0, 3, 1) + tuple(range(4, x.ndim)))
      return x.reshape((u, k * e, t_len) + x.shape[4:])

    steps = [per_unit(c.reshape((k, t) + c.shape[1:]), t) for c in cols[1:]]
    return js, dict(zip(("obs", "raw", "logp", "reward", "done", "trunc"), [per_unit(obs[idx], t + 1)] + steps))

  def ppo_loss(params, norm, b, eps_ent, on_policy):
    obs = normalize(norm, b["obs"])
    nb, t1 = obs.shape[1], obs.shape[2]
    values = value(params, obs.reshape(u, -1, d)).reshape(u, nb, t1)
    logits = policy(params, obs[:, :, :t].reshape(u, -1, d)).reshape(u, nb, t, 2 * a)
    v, boot = values[..., :t], values[..., t]
    rewards, trunc = b["reward"] * hp.reward_scaling, b["trunc"]
    term = b["done"] * (1.0 - trunc)
    v_next = jnp.concatenate([v[..., 1:], boot[..., None]], -1)
    deltas = (rewards + hp.discount * (1 - term) * v_next - v) * (1 - trunc)
    acc, out = jnp.zeros_like(boot), [None] * t
    for i in reversed(range(t)):
      acc = deltas[..., i] + hp.discount * (1 - term[..., i]) * (1 - trunc[..., i]) * hp.gae_lambda * acc
      out[i] = acc
    vs = jnp.stack(out, -1) + v
    vs_next = jnp.concatenate([vs[..., 1:], boot[..., None]], -1)
    adv = sg((rewards + hp.discount * (1 - term) * vs_next - v) * (1 - trunc))
    vs = sg(vs)
    flat_adv = adv.reshape(u, -1)
    adv = (adv - flat_adv.mean(1)[:, None, None]) / (flat_adv.std(1)[:, None, None] + 1e-8)
    loc, scale = dist(logits)
    lp = log_prob(loc, scale, b["raw"])
    rho = jnp.exp(lp - (lp if on_policy else b["logp"]))
    eps = hp.clipping_epsilon
    surrogate = jnp.minimum(rho * adv, jnp.clip(rho, 1 - eps, 1 + eps) * adv)
    mean_u = lambda x: x.reshape(u, -1).mean(1)
    entropy = (0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(scale) + fldj(loc + scale * eps_ent)).sum(-1)
    return (-mean_u(surrogate) + hp.value_weight * mean_u((vs - v)**2) - hp.entropy_cost * mean_u(entropy))

  def gru(ph, prefix, x, h):
    kernel, rec, bias = ph[f"{prefix}/kernel"], ph[f"{prefix}/recurrent_kernel"], ph[f"{prefix}/bias"]
    hs = rec.shape[0]
    xw, hw = kernel.T @ x + bias[0][:, None], rec.T @ h + bias[1][:, None]
    z, r = jax.nn.sigmoid(xw[:hs] + hw[:hs]), jax.nn.sigmoid(xw[hs:2 * hs] + hw[hs:2 * hs])
    n = jnp.tanh(xw[2 * hs:] + r * hw[2 * hs:])
    return n + z * (h - n)

  def optim4rl(ph, hidden, g):  # no MLP heads: o = out layer of h
    g = sg(g).reshape(1, -1)
    h1, h2 = gru(ph, "rnn1", g, hidden[0]), gru(ph, "rnn2", g * g, hidden[1])
    o1 = ph["mlp1/out/kernel"].T @ h1 + ph["mlp1/out/bias"][:, None]
    o2 = ph["mlp2/out/kernel"].T @ h2 + ph["mlp2/out/bias"][:, None]
    return -task.learning_rate * jnp.sign(g) * jnp.exp(o1) / jnp.sqrt(jnp.exp(o2) + 1e-8), (h1, h2)

  def flatten(xs):
    return jnp.concatenate([x.reshape(u, -1) for x in xs], 1)

  def unflatten(flat, like):
    sizes = np.cumsum([int(np.prod(x.shape[1:])) for x in like])[:-1]
    return [x.reshape(l.shape) for x, l in zip(jnp.split(flat, sizes, axis=1), like)]

  def meta_loss(ph):
    params = [jnp.asarray(p.numpy()) for p in units.params]
    hidden = tuple(jnp.asarray(h.numpy()).reshape(h.shape[0], -1) for h in units.opt_state)
    norm = dict(count=jnp.zeros(u), mean=jnp.zeros((u, d)), summed=jnp.zeros((u, d)), std=jnp.ones((u, d)))
    js = state
    mb = task.unrolls * e // task.num_minibatches
    for act_eps, perms, ent in inner:
      js, b = rollout(params, norm, js, jnp.asarray(act_eps))
      norm = norm_update(norm, b["obs"][:, :, :t])
      for i in range(task.update_epochs * task.num_minibatches):
        idx = perms[i // task.num_minibatches][:, (i % task.num_minibatches) * mb:][:, :mb]
        mini = {k: jnp.take_along_axis(v, idx.reshape(idx.shape + (1,) * (v.ndim - 2)), axis=1) for k, v in b.items()}
        grads = jax.grad(lambda p: ppo_loss(p, norm, mini, jnp.asarray(ent[i]), False).sum())(params)
        flat = jnp.clip(flatten(grads), -task.grad_clip, task.grad_clip)
        delta, hidden = optim4rl(ph, hidden, flat)
        params = [p + x for p, x in zip(params, unflatten(delta.reshape(u, -1), params))]
    js, b = rollout(params, norm, js, jnp.asarray(meta_act))
    return ppo_loss(params, norm, b, jnp.asarray(meta_ent), True).mean()

  ph = {k: jnp.asarray(v.numpy()) for k, v in phi.items()}
  loss, grads = jax.jit(jax.value_and_grad(meta_loss))(ph)
  return {k: np.asarray(v) for k, v in grads.items()}, float(loss)


def reference_inputs(problem, randomness):
  """Everything the reference is a function of, as arrays: the config (JSON), phi, the initial units and env
  state, and the noise and permutations."""
  _, _, phi, units, _ = problem
  arrays = [phi[k].numpy() for k in sorted(phi)] + [tf.convert_to_tensor(x).numpy() for x in tf.nest.flatten(units)]
  inner, meta_act, meta_ent = randomness
  arrays += [x for step in inner for x in step] + [meta_act, meta_ent]
  config = json.dumps(tiny_config().to_dict(), sort_keys=True, default=str)
  return {"__config__": np.array(config), **{f"__input_{i}__": np.asarray(x) for i, x in enumerate(arrays)}}


def write_reference():
  p = build_problem()
  randomness = draw_randomness(p[0])
  grads, loss = jax_meta_gradient(*p, randomness)
  np.savez(REFERENCE, __loss__=np.float64(loss), **reference_inputs(p, randomness), **grads)
  print("wrote", REFERENCE)


@pytest.fixture(scope="module")
def reference(problem):
  """(grads, loss) of the stored JAX reference, after checking that it was computed from these inputs (to
  float32 rounding: the initial Brax state and the noise come from XLA and TF kernels that may round
  differently on another CPU)."""
  stale = ("tests/data/meta_ppo_jax_reference.npz was computed from other inputs: regenerate it with "
           "`python tests/test_meta_ppo_gradient.py --write`")
  inputs = reference_inputs(problem, draw_randomness(problem[0]))
  with np.load(REFERENCE) as z:
    stored = {k: z[k] for k in z.files}
  assert sorted(k for k in stored if k.startswith("__input_")) == sorted(k for k in inputs if k.startswith("__input_"))
  assert str(stored["__config__"]) == str(inputs["__config__"]), stale
  for k, x in inputs.items():
    if k.startswith("__input_"):
      assert stored[k].shape == x.shape and stored[k].dtype == x.dtype, (stale, k)
      np.testing.assert_allclose(stored[k], x, rtol=1e-6, atol=1e-7, err_msg=f"{stale} ({k})")
  return {k: v for k, v in stored.items() if not k.startswith("__")}, float(stored["__loss__"])


def _max_rel_diff(ours, ref):
  scale = max(float(np.max(np.abs(v))) for v in ref.values())
  return max(float(np.max(np.abs(ours[k] - ref[k]))) for k in ref) / scale


@pytest.mark.slow(150)  # the unit: fixtures (Brax, the jax.grad reference) and both parametrizations
@pytest.mark.parametrize("through_env", [True, False])
def test_meta_ppo_gradient_matches_jax_grad_through_brax(problem, reference, through_env):
  task, core, phi, units, _ = problem
  ref, ref_loss = reference
  ours, loss = project_meta_gradient(task, core, phi, units, through_env)
  assert sorted(ours) == sorted(ref)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)  # the same forward iteration
  rel = _max_rel_diff(ours, ref)
  print(f"through_env={through_env}: max |ours - jax| / max |jax| = {rel:.3g} "
        f"(max |jax| = {max(float(np.max(np.abs(v))) for v in ref.values()):.3g})")
  if through_env:
    assert rel < REL_TOL
  else:  # the approximation drops the paths through the simulator, env state and normaliser
    assert rel > 20 * REL_TOL


# ------------------------------------------------------------------------------------------------
# MetaPPOstar (docs/fidelity.md §7.6): the second-order path, checked by finite differences.


def fd_star_config():
  """A problem whose meta-gradient is the TOTAL derivative of the meta-loss, so finite differences can
  check it: the PPO loss stops the gradient at the GAE targets and advantages; with discount 0 and the
  pendulum's constant reward the targets are the rewards (constants), and with one step per minibatch and
  per meta batch (unroll 1, minibatches of 1 trajectory, 1 env per unit) every normalised advantage is
  exactly 0. The function must also be smooth at the scale of the differences: STAR without hidden layers
  (its ReLUs put kinks everywhere), no agent-gradient clip, and no observation normaliser (its std from 3
  nearly equal observations makes the loss very curved; the JAX test above covers the normaliser path).
  3 env steps per inner update on theta_k and the carried env state, and the meta step's V(obs), keep the
  environment paths live."""
  c = ppo_configs.get_config("meta_inverted_pendulum")
  return set_fields(
      c, **{
          "optimizer.name": "star",
          "env.num_envs": 2,
          "env.episode_length": 1000,
          "num_units": 2,
          "batch_size": 1,
          "num_minibatches": 3,
          "unroll_length": 1,
          "update_epochs": 1,
          "inner_updates": 2,
          "discount": 0.0,
          "learning_rate": 5e-2,
          "grad_clip": -1.0,
          "normalize_observations": False,
          "pipeline": False,
          "network.policy_hidden": (8,),
          "network.value_hidden": (8,)
      })


@pytest.mark.slow(120)
def test_meta_ppo_star_second_order_path_matches_finite_differences():
  from optim4rl_tf.meta import estimators
  task = meta_ppo_task.build_task(fd_star_config())
  assert (task.unrolls, task.meta_unrolls, task.meta_grad_through_env) == (3, 1, True)
  core, phi = meta_params.resolve("star", None, mlp_dims=(), seed=0)
  names = sorted(phi)
  phi0 = [tf.constant(phi[k]) for k in names]
  problem = meta_ppo.MetaPPO(task)
  units = estimators.FullUnroll(problem).init_units(core, tf.constant([1, 2], tf.int32))

  @tf.function
  def run(phi_list, second_order):
    est = estimators.FullUnroll(problem, second_order=second_order)
    _, grads, metrics = trainer_lib.outer_iteration(est, core, dict(zip(names, phi_list)), units,
                                                    tf.constant(1, tf.int64), tf.constant(KEY, tf.int32),
                                                    pipeline.reset_indices(task.num_units, -1), -1)
    return [grads[k] for k in names], metrics["meta_loss"]

  flat = lambda xs: np.concatenate([np.ravel(x) for x in xs]).astype(np.float64)
  second = flat(run(phi0, True)[0])
  first = flat(run(phi0, False)[0])
  sizes = np.cumsum([int(np.prod(p.shape)) for p in phi0])[:-1]

  def directional_fd(v, eps):
    shifted = lambda s: [
        p + s * eps * tf.constant(x.reshape(p.shape), tf.float32) for p, x in zip(phi0, np.split(v, sizes))
    ]
    return (float(run(shifted(1.0), True)[1]) - float(run(shifted(-1.0), True)[1])) / (2 * eps)

  diff = second - first
  gap = np.linalg.norm(diff)  # what the second-order path adds (measured ~2% of the gradient)
  assert gap > 1e-3 * np.linalg.norm(second)
  for v, tol in ((diff / gap, 0.05 * gap), (second / np.linalg.norm(second), 1e-3 * np.linalg.norm(second))):
    d2, d1 = directional_fd(v, 2e-3), directional_fd(v, 1e-3)
    fd = (4 * d1 - d2) / 3  # Richardson: central differences are O(eps^2)
    print(f"analytic {second @ v:.7g}, first-order {first @ v:.7g}, central differences (eps 2e-3, 1e-3) "
          f"{d2:.7g}, {d1:.7g} -> {fd:.7g}")
    assert abs(fd - second @ v) < tol and abs(d1 - second @ v) < tol
  # Along diff the first-order gradient misses by |diff| = 20x the tolerance: the check sees the path.


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: test_meta_ppo_gradient.py --write")
  write_reference()
