"""Actor-critic (A2C with GAE) on gymnasium's CartPole-v1 with a Keras model and a chosen optimizer.

  .venv/bin/python examples/keras_cartpole.py --optimizer=adam --lr=1e-3 --seed=0 --steps=60000
  .venv/bin/python examples/keras_cartpole.py --optimizer=optim4rl:catch --lr=1e-3 --seed=0
  .venv/bin/python examples/keras_cartpole.py --env=Acrobot-v1 --optimizer=optim4rl:inverted_pendulum --lr=3e-4

The point: a shipped learned optimizer (``optim4rl_tf.Optim4RL.from_pretrained(name)``) drives an
ordinary Keras model in a custom training loop exactly as Adam does, on a task it was never meta-trained on.

* Environment: ``--envs`` copies of ``--env`` (CartPole-v1 unless named; any gymnasium task with discrete
  actions and a flat Box observation, e.g. Acrobot-v1 or MountainCar-v0) in a ``gymnasium.vector.SyncVectorEnv``
  (same-step autoreset), seeded with ``--seed``. A truncated episode (CartPole's 500 steps) is bootstrapped
  with the value of its last observation; a terminated one is not.
* Network: two ``keras.Sequential`` MLPs (64-64 tanh): the policy (one logit per action) and the value (1
  output).
* Update: every ``--rollout`` steps of all envs, one gradient step on the A2C loss
  (policy gradient with GAE(gamma, lambda) advantages + value loss + entropy bonus), computed with
  ``tf.GradientTape`` and applied with ``optimizer.apply_gradients`` inside a ``tf.function``.
* Optimizer: ``--optimizer=adam`` (``keras.optimizers.Adam``), ``--optimizer=optim4rl:NAME`` for NAME in
  ``optim4rl_tf.pretrained.names()`` (``Optim4RL.from_pretrained(NAME)``) or ``--optimizer=optim4rl:PATH.npz``
  for a phi of your own meta-training (``Optim4RL(meta_params=PATH.npz)``), all with ``learning_rate=--lr``
  and the same gradient clip, ``clipvalue=--clipvalue`` (elementwise; default 1.0, "none" for no clip).
  ``--value_optimizer=SPEC@LR`` (SPEC as for ``--optimizer``) gives the value network its own optimizer and
  learning rate, the actor-critic practice of separate actor and critic optimizers; ``--optimizer`` then trains
  the policy alone.
* Deterministic under ``--seed``: weights (``keras.utils.set_random_seed``), env resets and the action
  sampling (a numpy generator) all derive from it.

Prints progress and, at the end, the mean return of the last ``--last`` finished episodes. ``main(argv)``
returns a dict (episode returns with the env step each ended at, the final mean, the settings). With
``--log_updates`` it also records what each update did (``updates``: one row per update, columns named in
``update_columns``): the policy's entropy, the RMS of the clipped gradients and the RMS of the parameter change
of the policy and of the value network. Adam's update shrinks as training settles; a learned optimizer in its
sign-descent range (``launch/optimizer_response.py``) moves every parameter by the same step throughout.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import optim4rl_tf  # noqa: E402
from optim4rl_tf import pretrained  # noqa: E402

DEFAULT_ENV = "CartPole-v1"


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--env", default=DEFAULT_ENV, help="gymnasium task id with discrete actions, e.g. Acrobot-v1")
  p.add_argument("--optimizer", default="adam", help="adam | optim4rl:catch | optim4rl:grid6 | ... | optim4rl:PATH.npz")
  p.add_argument("--lr", type=float, default=1e-3, help="learning rate (the same argument for every optimizer)")
  p.add_argument("--clipvalue", default="1.0", help='elementwise gradient clip for every optimizer, or "none"')
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=60000, help="env steps, all envs together")
  p.add_argument("--envs", type=int, default=8)
  p.add_argument("--rollout", type=int, default=16, help="steps per env between updates")
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--gamma", type=float, default=0.99)
  p.add_argument("--gae_lambda", type=float, default=0.95)
  p.add_argument("--entropy_coef", type=float, default=0.01)
  p.add_argument("--value_coef", type=float, default=0.5)
  p.add_argument("--last", type=int, default=20, help="the final return is the mean of the last N episodes")
  p.add_argument("--log_every", type=int, default=10000, help="print progress every N env steps (0: never)")
  p.add_argument("--json", default="", help="write the result dict to this file")
  p.add_argument("--value_optimizer",
                 default="",
                 help="SPEC@LR, e.g. adam@3e-3: a separate optimizer (SPEC as --optimizer) for the value network; "
                 "empty: --optimizer trains both networks")
  p.add_argument("--log_updates",
                 action="store_true",
                 help="record per update: policy entropy, gradient RMS (after the clip) and update RMS of the "
                 "policy and value networks (the result's 'updates'; the progress line shows them)")
  return p.parse_args(argv)


def make_optimizer(spec, lr, clipvalue):
  """``adam`` -> keras Adam; ``optim4rl:NAME`` -> the shipped learned optimizer NAME; ``optim4rl:PATH.npz`` ->
  Optim4RL with the meta-parameters in that file. All get ``lr`` and ``clipvalue`` explicitly (so none falls
  back to its own default clip)."""
  if spec == "adam":
    return keras.optimizers.Adam(learning_rate=lr, clipvalue=clipvalue)
  kind, _, name = spec.partition(":")
  if kind != "optim4rl" or not name:
    raise ValueError(f"--optimizer must be adam, optim4rl:NAME (NAME in {pretrained.names()}) or "
                     f"optim4rl:PATH.npz; got {spec!r}")
  if name.endswith(".npz"):
    if not os.path.isfile(name):
      raise ValueError(f"--optimizer={spec}: no meta-parameter file {name!r}")
    return optim4rl_tf.Optim4RL(meta_params=name, learning_rate=lr, clipvalue=clipvalue)
  return optim4rl_tf.Optim4RL.from_pretrained(name, learning_rate=lr, clipvalue=clipvalue)


def parse_spec_at_lr(text, flag):
  """"SPEC@LR" (SPEC as ``--optimizer``) -> (SPEC, LR as a float > 0); one ValueError naming ``flag`` otherwise.
  The examples' one reader of an optimizer with its learning rate."""
  spec, at, lr = text.rpartition("@")
  try:
    rate = float(lr)
  except ValueError:
    rate = float("nan")
  if not at or not spec or not rate > 0:
    raise ValueError(f"{flag} must be SPEC@LR with SPEC as --optimizer and LR > 0 (e.g. adam@3e-3); got {text!r}")
  return spec, rate


def parse_value_optimizer(text):
  """``--value_optimizer``: "" -> None; "SPEC@LR" -> (SPEC, LR) (``parse_spec_at_lr``)."""
  return parse_spec_at_lr(text, "--value_optimizer") if text else None


def env_sizes(env_id):
  """(observation size, number of actions) of gymnasium task ``env_id``; one ValueError naming ``--env`` for an
  unknown id or a task this agent cannot act in (continuous actions, image or dict observations)."""
  try:
    env = gym.make(env_id)
  except gym.error.Error as err:
    raise ValueError(f"--env={env_id}: not a gymnasium task here ({err})") from None
  obs_space, action_space = env.observation_space, env.action_space
  env.close()
  if not isinstance(action_space, gym.spaces.Discrete) or not (isinstance(obs_space, gym.spaces.Box) and
                                                               len(obs_space.shape) == 1):
    raise ValueError(f"--env={env_id}: this A2C agent needs discrete actions and a flat Box observation; the task "
                     f"has actions {action_space} and observations {obs_space}")
  return int(obs_space.shape[0]), int(action_space.n)


def mlp(obs_dim, hidden, outputs, last_scale):
  """A 64-64 tanh MLP as a keras.Sequential (orthogonal init, small last layer: the usual A2C start)."""
  return keras.Sequential([
      keras.Input((obs_dim,)),
      keras.layers.Dense(hidden, activation="tanh", kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2))),
      keras.layers.Dense(hidden, activation="tanh", kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2))),
      keras.layers.Dense(outputs, kernel_initializer=keras.initializers.Orthogonal(last_scale)),
  ])


UPDATE_COLUMNS = ("loss", "entropy", "policy_grad_rms", "value_grad_rms", "policy_update_rms", "value_update_rms")


def rms(tensors):
  """Root mean square over all entries of a list of tensors."""
  total = tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])
  return tf.sqrt(total / float(sum(int(np.prod(t.shape)) for t in tensors)))


def gae(rewards, values, dones, last_values, gamma, lam):
  """GAE(gamma, lambda) advantages and returns; arrays [T, N], ``dones`` cut the chain after a step."""
  advantages = np.zeros_like(rewards)
  next_adv, next_value = np.zeros_like(last_values), last_values
  for t in reversed(range(len(rewards))):
    keep = 1.0 - dones[t]
    delta = rewards[t] + gamma * next_value * keep - values[t]
    next_adv = delta + gamma * lam * keep * next_adv
    advantages[t] = next_adv
    next_value = values[t]
  return advantages, advantages + values


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  clipvalue = None if args.clipvalue.lower() == "none" else float(args.clipvalue)
  value_spec = parse_value_optimizer(args.value_optimizer)
  obs_dim, num_actions = env_sizes(args.env)
  value_note = f", value net: {args.value_optimizer}" if args.value_optimizer else ""  # for the log lines

  # --- seeding: weights, TF ops, env resets, action sampling -------------------------------------------------
  keras.backend.clear_session()
  keras.utils.set_random_seed(args.seed)
  tf.config.experimental.enable_op_determinism()
  rng = np.random.default_rng(args.seed)

  # --- model and optimizer ---------------------------------------------------------------------------------
  policy = mlp(obs_dim, args.hidden, num_actions, 0.01)
  value = mlp(obs_dim, args.hidden, 1, 1.0)
  variables = policy.trainable_variables + value.trainable_variables
  optimizer = make_optimizer(args.optimizer, args.lr, clipvalue)
  value_optimizer = None if value_spec is None else make_optimizer(value_spec[0], value_spec[1], clipvalue)
  num_policy = len(policy.trainable_variables)

  def apply(grads):
    """One optimizer step: ``optimizer`` on every variable, or on the policy's with ``value_optimizer`` on
    the value network's."""
    if value_optimizer is None:
      optimizer.apply_gradients(zip(grads, variables))
      return
    optimizer.apply_gradients(zip(grads[:num_policy], variables[:num_policy]))
    value_optimizer.apply_gradients(zip(grads[num_policy:], variables[num_policy:]))

  @tf.function(input_signature=[tf.TensorSpec([None, obs_dim], tf.float32)])
  def act(obs):
    """Action probabilities and state values of a batch of observations."""
    return tf.nn.softmax(policy(obs)), value(obs)[:, 0]

  @tf.function(input_signature=[
      tf.TensorSpec([None, obs_dim], tf.float32),
      tf.TensorSpec([None], tf.int32),
      tf.TensorSpec([None], tf.float32),
      tf.TensorSpec([None], tf.float32),
  ])
  def update(obs, actions, advantages, returns):
    """One A2C step: policy gradient + value regression - entropy bonus."""
    with tf.GradientTape() as tape:
      log_probs = tf.nn.log_softmax(policy(obs))
      action_log_probs = tf.gather(log_probs, actions, batch_dims=1)
      entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)
      policy_loss = -tf.reduce_mean(action_log_probs * advantages)
      value_loss = 0.5 * tf.reduce_mean(tf.square(value(obs)[:, 0] - returns))
      loss = policy_loss + args.value_coef * value_loss - args.entropy_coef * tf.reduce_mean(entropy)
    grads = tape.gradient(loss, variables)
    if not args.log_updates:
      apply(grads)
      return tf.reshape(loss, [1])
    before = [tf.identity(v) for v in variables]
    apply(grads)
    n = num_policy
    clipped = grads if clipvalue is None else [tf.clip_by_value(g, -clipvalue, clipvalue) for g in grads]
    change = [v - b for v, b in zip(variables, before)]
    return tf.stack([
        loss,
        tf.reduce_mean(entropy),
        rms(clipped[:n]),
        rms(clipped[n:]),
        rms(change[:n]),
        rms(change[n:]),
    ])

  # --- environments ----------------------------------------------------------------------------------------
  envs = gym.vector.SyncVectorEnv([lambda: gym.make(args.env) for _ in range(args.envs)],
                                  autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
  obs, _ = envs.reset(seed=args.seed)
  episode_return = np.zeros(args.envs)
  episodes = []  # (env step at which it ended, return)

  # --- training loop ---------------------------------------------------------------------------------------
  T, N = args.rollout, args.envs
  num_updates = max(1, args.steps // (T * N))
  start, next_log = time.time(), args.log_every
  updates = []
  for it in range(num_updates):
    batch_obs = np.zeros((T, N, obs_dim), np.float32)
    batch_actions = np.zeros((T, N), np.int32)
    rewards, values, dones = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
    for t in range(T):
      probs, v = act(obs.astype(np.float32))
      probs = probs.numpy().astype(np.float64)
      actions = (rng.random((N, 1)) > np.cumsum(probs, axis=1)[:, :-1]).sum(axis=1)  # inverse-CDF sampling
      next_obs, reward, terminated, truncated, info = envs.step(actions)
      batch_obs[t], batch_actions[t], values[t] = obs, actions, v.numpy()
      rewards[t], dones[t] = reward, np.logical_or(terminated, truncated)
      # A time limit is not a failure: bootstrap from the value of the last observation.
      cut = np.logical_and(truncated, np.logical_not(terminated))
      if cut.any():
        final_obs = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)]).astype(np.float32)
        rewards[t, cut] += args.gamma * act(final_obs)[1].numpy()
      episode_return += reward
      step = (it * T + t + 1) * N
      for i in np.flatnonzero(dones[t]):
        episodes.append((step, float(episode_return[i])))
        episode_return[i] = 0.0
      obs = next_obs
    last_values = act(obs.astype(np.float32))[1].numpy()
    advantages, returns = gae(rewards, values, dones, last_values, args.gamma, args.gae_lambda)
    stats = update(batch_obs.reshape(T * N, obs_dim), batch_actions.reshape(-1), advantages.reshape(-1),
                   returns.reshape(-1))
    if args.log_updates:
      updates.append([float(x) for x in stats.numpy()])
    step = (it + 1) * T * N
    if args.log_every and step >= next_log:
      recent = [r for _, r in episodes[-args.last:]]
      detail = ""
      if updates:
        last = dict(zip(UPDATE_COLUMNS, updates[-1]))
        detail = (f"  entropy {last['entropy']:.3f}  update rms policy {last['policy_update_rms']:.2e} "
                  f"value {last['value_update_rms']:.2e}")
      print(
          f"[{args.env} {args.optimizer} lr={args.lr:g}{value_note} seed={args.seed}] step {step:7d}  "
          f"episodes {len(episodes):5d}  "
          f"mean return (last {len(recent)}) {np.mean(recent) if recent else float('nan'):7.1f}  "
          f"{time.time() - start:6.1f}s{detail}",
          flush=True)
      next_log += args.log_every
  envs.close()

  final = float(np.mean([r for _, r in episodes[-args.last:]])) if episodes else float("nan")
  result = {
      "env": args.env,
      "optimizer": args.optimizer,
      "lr": args.lr,
      "value_optimizer": args.value_optimizer or None,
      "clipvalue": clipvalue,
      "seed": args.seed,
      "steps": num_updates * T * N,
      "final_return": final,
      "last": args.last,
      "episode_steps": [s for s, _ in episodes],
      "episode_returns": [r for _, r in episodes],
      "wall_secs": time.time() - start,
  }
  if args.log_updates:
    result.update({"update_columns": list(UPDATE_COLUMNS), "updates": updates})
  print(f"mean return of the last {args.last} episodes: {final:.1f} ({args.env}, {args.optimizer}, lr {args.lr:g}"
        f"{value_note}, seed {args.seed}, {result['steps']} env steps, {result['wall_secs']:.0f}s)")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f)
  return result


if __name__ == "__main__":
  main()
