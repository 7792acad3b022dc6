"""Acting: the one in-graph rollout of A2C, PPO and meta-training (cf. Brax ``training/acting.py``).

An *actor* is the agent side of one step, ``actor(obs, step_key, carry) -> (action, record, carry)``: it reads
the carried observations (e.g. [U, B, *obs_shape]), returns the env action (int32 [N] or float32 [N, A], as
the env's protocol asks), a tuple of tensors to record (e.g. the action, its log-probability) and its carry
(e.g. A2C's per-unit divergence flags; ``()`` for none). :func:`actor_step` runs the actor and one
``env.step`` (``envs.base.Env``); :func:`generate_unroll` runs T of them in one ``tf.while_loop`` and returns the
steps stacked, step-major (:class:`Unroll`). A2C (``a2c.rollout``) and PPO (``ppo_trainer.graph_rollout``)
arrange the same :class:`Unroll` into their own batches (A2C's unit-major ``a2c.Trajectory``, PPO's
``ppo.Batch`` of unrolls).

Keys: step t uses ``k_t = fold_in(key, t)``; the env steps with ``split(k_t, 2)[1]``; the actor gets ``k_t``
(A2C samples with ``split(k_t, 2)[0]``, PPO's policy with ``k_t`` itself).
"""

from typing import Any, NamedTuple

import tensorflow as tf


class Transition(NamedTuple):
  """One step of all N envs. obs: the carried observation the actor saw (e.g. [U, B, *obs_shape]); record:
  the actor's tuple; reward, done: float32 [N] (the env's, after its reward scale); extras: tuple of
  ``extras_fn(state after the step)`` (e.g. Brax's truncation [N]), ``()`` without one."""
  obs: Any
  record: Any
  reward: Any
  done: Any
  extras: Any


class Unroll(NamedTuple):
  """T steps, step-major: obs [T+1, *carried obs shape] (obs[T]: the observation after the last step, a reset
  observation where that step ended an episode); record: tuple of [T, ...]; reward, done [T, N]; extras:
  tuple of [T, ...]."""
  obs: Any
  record: Any
  reward: Any
  done: Any
  extras: Any


def actor_step(env, env_state, obs, actor, step_key, carry=(), obs_fn=None, extras_fn=None):
  """One step: the actor acts on ``obs``, the env steps (auto-reset) with seed ``split(step_key, 2)[1]``.

  ``obs_fn`` maps the env's observation [N, *obs_shape] to the carried layout (default: as is); ``extras_fn``
  (``state -> tuple``) reads extra per-env values of the new state. Returns (env_state, next_obs in the
  carried layout, :class:`Transition`, carry)."""
  action, record, carry = actor(obs, step_key, carry)
  env_seed = tf.random.experimental.stateless_split(step_key, 2)[1]
  env_state, next_obs, reward, done = env.step(env_state, action, env_seed)
  next_obs = next_obs if obs_fn is None else obs_fn(next_obs)
  next_obs.set_shape(obs.shape)
  extras = () if extras_fn is None else tuple(extras_fn(env_state))
  return env_state, next_obs, Transition(obs, tuple(record), reward, done, extras), carry


def generate_unroll(env, env_state, obs, actor, key, num_steps, record_dtypes, carry=(), obs_fn=None, extras_fn=None):
  """``num_steps`` (T, a Python int) steps of :func:`actor_step` in one ``tf.while_loop``.

  Args:
    env: an ``envs.base.Env`` (N = ``env.num_envs``).
    env_state: its state; obs: the state's observation in the carried layout.
    actor: ``(obs, step_key, carry) -> (action, record tuple, carry)`` (module docstring).
    key: int32 [2] stateless key; step t uses ``fold_in(key, t)``.
    record_dtypes: the dtypes of the actor's record tuple, e.g. ``(tf.int32,)``.
    carry: the actor's initial carry (a nest of tensors; ``()``: none).
    obs_fn, extras_fn: as in :func:`actor_step`.

  Returns:
    (:class:`Unroll`, final env_state, its observation (carried layout), final carry).
  """
  extras_dtypes = () if extras_fn is None else tuple(x.dtype for x in extras_fn(env_state))
  obs_ta = tf.TensorArray(obs.dtype, size=num_steps + 1, element_shape=obs.shape)
  step_tas = tf.nest.map_structure(lambda dtype: tf.TensorArray(dtype, size=num_steps),
                                   (tuple(record_dtypes), tf.float32, tf.float32, extras_dtypes))

  def body(t, env_state, obs, carry, obs_ta, step_tas):
    step_key = tf.random.experimental.stateless_fold_in(key, t)
    env_state, next_obs, tr, carry = actor_step(env, env_state, obs, actor, step_key, carry, obs_fn, extras_fn)
    obs_ta = obs_ta.write(t, obs)
    step_tas = tf.nest.map_structure(lambda ta, x: ta.write(t, x), step_tas, (tr.record, tr.reward, tr.done, tr.extras))
    return t + 1, env_state, next_obs, carry, obs_ta, step_tas

  _, env_state, obs, carry, obs_ta, step_tas = tf.while_loop(lambda t, *_: t < num_steps,
                                                             body,
                                                             (tf.constant(0), env_state, obs, carry, obs_ta, step_tas),
                                                             maximum_iterations=num_steps)
  obs_ta = obs_ta.write(num_steps, obs)
  record, reward, done, extras = tf.nest.map_structure(lambda ta: ta.stack(), step_tas)
  return Unroll(obs_ta.stack(), record, reward, done, extras), env_state, obs, carry
