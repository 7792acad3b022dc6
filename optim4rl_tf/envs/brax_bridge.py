"""Brax environments for TensorFlow agents, through two bridges (docs/fidelity.md §7.1).

A :class:`BraxEnv` holds ``num_envs`` copies of one Brax task (backend ``spring``) wrapped like the official
code: ``EpisodeWrapper`` -> ``VmapWrapper`` -> ``AutoResetWrapper`` (Brax's own done / truncation / auto-reset:
a done env restarts from the state of its FIRST reset). Actions are in [-1, 1], shape [num_envs, act].

Two bridges call the same JAX functions and give the same trajectories (up to two XLA builds' rounding):

  * ``numpy`` -- ``state = env.reset(seeds)``; ``state, out = env.step(state, action)``: one jitted batched
    JAX step per call, only :class:`StepOutput`'s arrays cross to TensorFlow; a Python loop drives rollouts.
  * ``graph`` -- ``flat = env.to_flat(state)``; inside any ``tf.function``:
    ``flat, out = env.graph_step(flat, action)``: the batched step converted once with ``jax2tf`` into a TF
    function of the Brax state's leaves, so a whole rollout runs inside one ``tf.function`` (TensorFlow's
    XLA compiles it at the first call). The step is DIFFERENTIABLE (``with_gradient=True``: JAX's own VJP,
    measured equal to ``jax.grad``), so a tape follows actions -> simulator -> observations (MetaPPO's
    meta-gradient, docs/fidelity.md §7.5); the VJP compiles on the first gradient call only. Resets are not
    differentiable (integer seeds). ``env.graph_env()`` (:class:`BraxGraphEnv`) is this bridge as the
    package's env protocol (``envs.base.ContinuousEnv``), the one the acting module steps.

Resets: ``reset(seeds, salt=0)``, one integer seed per unit (U = ``len(seeds)`` divides ``num_envs``): unit u's
envs are reset from ``split(fold_in(PRNGKey(seeds[u]), salt), num_envs / U)``, so they depend only on its own
seed; ``salt`` gives fresh episodes (e.g. one per evaluation) without recompiling.

Brax and jax2tf are imported on first use only. Compiled functions are cached per (task, backend,
episode_length, action_repeat[, num_envs]): once per process. Compiling on 2 CPU cores takes ~20-40 s per
function for inverted_pendulum, about a minute for Ant.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import threading
import warnings
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

# Task name -> (observation size, action size), spring backend (reference; an env reports Brax's own). Its
# keys are the Brax task names (``registry.BRAX_ENV_NAMES``).
BRAX_TASKS = {
    "ant": (27, 8),
    "humanoid": (244, 17),
    "inverted_double_pendulum": (8, 1),
    "walker2d": (17, 6),
    "inverted_pendulum": (4, 1),  # cheap task for tests and quick checks
}
BACKENDS = ("spring", "generalized", "positional")
BRIDGES = ("numpy", "graph")
PREFIX = "brax:"


class StepOutput(NamedTuple):
  """What one batched step returns to TensorFlow (all float32 tensors with leading axis num_envs).

  obs [N, obs_size] (after auto-reset: the reset observation where ``done``), reward [N], done [N]
  (1 where the episode ended, by the task or by the time limit), truncation [N] (1 where it ended only
  by the time limit)."""
  obs: Any
  reward: Any
  done: Any
  truncation: Any


def canonical_name(name):
  """'brax:ant' or 'ant' -> 'ant'; raises ValueError for an unknown task."""
  if not isinstance(name, str):
    raise ValueError(f"Unknown Brax environment {name!r}; valid: {', '.join(BRAX_TASKS)}")
  key = name[len(PREFIX):] if name.startswith(PREFIX) else name
  if key not in BRAX_TASKS:
    raise ValueError(f"Unknown Brax environment {name!r}; valid: {', '.join(BRAX_TASKS)} "
                     f"(optionally prefixed 'brax:')")
  return key


# ------------------------------------------------------------------------------------------------
# Lazy JAX / Brax import.

_JAX = None
_LOCK = threading.Lock()


def _jax_modules():
  """(jax, jnp, brax.envs, brax wrappers module, jax2tf), imported once, quietly (mujoco prints a
  'Failed to import warp' line on import and Brax warns that it is no longer maintained)."""
  global _JAX
  with _LOCK:
    if _JAX is None:
      # jax logs its platform probing ("Unable to initialize backend 'tpu'", "Using JAX default device")
      # at INFO, which absl-launched programs print: keep jax's logger at WARNING.
      for name in ("jax", "mujoco"):  # (mujoco.mjx logs "Using JAX default device" on every trace)
        logging.getLogger(name).setLevel(max(logging.getLogger(name).getEffectiveLevel(), logging.WARNING))
      try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
          warnings.simplefilter("ignore")
          import jax
          import jax.numpy as jnp
          from brax import envs as brax_envs
          from brax.envs.wrappers import training as brax_wrappers
          from jax.experimental import jax2tf
      except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"Brax environments need jax and brax installed ({e}); see requirements.txt")
      _JAX = (jax, jnp, brax_envs, brax_wrappers, jax2tf)
  return _JAX


def _strip_weak_type(tree):
  """Brax mixes weakly and strongly typed leaves between reset and step; make every leaf strongly typed so
  reset and step outputs have identical avals (one compilation each, and a fixed loop signature for
  the graph bridge). Same as brax.training's ``_strip_weak_type``."""
  jax, jnp = _jax_modules()[:2]

  def f(leaf):
    leaf = jnp.asarray(leaf)
    return leaf.astype(leaf.dtype)

  return jax.tree_util.tree_map(f, tree)


class _Compiled:
  """JAX functions of one (task, backend, episode_length, action_repeat) and their TF conversions."""

  def __init__(self, name, backend, episode_length, action_repeat):
    jax, jnp, brax_envs, w, jax2tf = _jax_modules()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      base = brax_envs.get_environment(name, backend=backend)
    # docs/fidelity.md §7.1 order (the official code's); brax.envs.training.wrap puts Vmap innermost, same result.
    self.env = w.AutoResetWrapper(w.VmapWrapper(w.EpisodeWrapper(base, episode_length, action_repeat)))
    self.obs_size = int(base.observation_size)
    self.action_size = int(base.action_size)
    env = self.env

    def reset(seeds, salt, envs_per_unit):

      def unit_keys(s):
        key = jax.random.fold_in(jax.random.PRNGKey(s), salt)
        return jax.random.split(key, envs_per_unit)

      keys = jax.vmap(unit_keys)(seeds).reshape((-1, 2))
      with warnings.catch_warnings():  # (runs at trace time only) mujoco's deprecation noise
        warnings.simplefilter("ignore")
        return _strip_weak_type(env.reset(keys))

    def step(state, action):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _strip_weak_type(env.step(state, action))

    def step_out(state, action):
      s = step(state, action)
      return s, s.obs, jnp.stack([s.reward, s.done, s.info["truncation"]]).astype(jnp.float32)

    self.reset = jax.jit(reset, static_argnums=2)
    self.step = jax.jit(step)
    self.step_out = jax.jit(step_out)
    self._raw_reset = reset
    self._raw_step = step
    self._graph = {}
    self._lock = threading.Lock()

  def state_shape(self, num_units, envs_per_unit):
    """Abstract (shape/dtype) Brax state of num_units * envs_per_unit envs."""
    jax, jnp = _jax_modules()[:2]
    return jax.eval_shape(functools.partial(self._raw_reset, envs_per_unit=envs_per_unit),
                          jax.ShapeDtypeStruct((num_units,), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))

  def graph_reset_fn(self, num_units, envs_per_unit):
    """tf.function (seeds int32 [U], salt int32 []) -> tuple of leaves: the reset converted with jax2tf."""
    key = ("reset", num_units, envs_per_unit)
    with self._lock:
      if key in self._graph:
        return self._graph[key]
      jax2tf = _jax_modules()[4]
      fn = functools.partial(self._raw_reset, envs_per_unit=envs_per_unit)
      jax = _jax_modules()[0]
      flat_reset = lambda seeds, salt: tuple(jax.tree_util.tree_leaves(fn(seeds, salt)))
      converted = tf.autograph.experimental.do_not_convert(jax2tf.convert(flat_reset, with_gradient=False))
      tf_reset = tf.function(converted,
                             autograph=False,
                             input_signature=(tf.TensorSpec([num_units], tf.int32), tf.TensorSpec([], tf.int32)))
      tf_reset.get_concrete_function()
      self._graph[key] = tf_reset
      return tf_reset

  def graph_fns(self, num_envs, envs_per_unit):
    """(treedef, leaf specs, tf_step) for a batch of num_envs; tf_step is a tf.function of
    (tuple of leaves, action) -> (tuple of leaves, obs, reward, done, truncation)."""
    with self._lock:
      if num_envs in self._graph:
        return self._graph[num_envs]
      jax, jnp, _, _, jax2tf = _jax_modules()
      shape = self.state_shape(num_envs // envs_per_unit, envs_per_unit)
      leaves, treedef = jax.tree_util.tree_flatten(shape)
      action_shape = jax.ShapeDtypeStruct((num_envs, self.action_size), jnp.float32)
      stepped = jax.eval_shape(self._raw_step, shape, action_shape)
      s_leaves, s_treedef = jax.tree_util.tree_flatten(stepped)
      if s_treedef != treedef or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(leaves, s_leaves)):
        raise RuntimeError("Brax state changes structure between reset and step; cannot bridge it in-graph")
      raw_step = self._raw_step
      n = len(leaves)

      def flat_step(*args):  # (leaf_0, ..., leaf_{n-1}, action): jax2tf's gradient wants flat args
        s = raw_step(jax.tree_util.tree_unflatten(treedef, list(args[:n])), args[n])
        return (tuple(jax.tree_util.tree_leaves(s)), s.obs, s.reward, s.done, s.info["truncation"])

      specs = tuple(tf.TensorSpec(l.shape, tf.as_dtype(l.dtype)) for l in leaves)
      # with_gradient=True: TF's gradient of the step is JAX's own VJP of it (converted on first use;
      # Brax is traced again then), so a tape sees through the simulator (MetaPPO, docs/fidelity.md §7.5).
      converted = tf.autograph.experimental.do_not_convert(jax2tf.convert(flat_step, with_gradient=True))
      tf_step = tf.function(converted,
                            autograph=False,
                            reduce_retracing=True,
                            input_signature=specs + (tf.TensorSpec((num_envs, self.action_size), tf.float32),))
      tf_step.get_concrete_function()  # lower once, outside any caller's AutoGraph context
      out = (treedef, specs, tf_step)
      self._graph[num_envs] = out
      return out


_CACHE = {}


def _compiled(name, backend, episode_length, action_repeat):
  key = (name, backend, int(episode_length), int(action_repeat))
  with _LOCK:
    hit = _CACHE.get(key)
  if hit is None:
    hit = _Compiled(name, backend, int(episode_length), int(action_repeat))
    with _LOCK:
      hit = _CACHE.setdefault(key, hit)
  return hit


class BraxEnv:
  """``num_envs`` copies of a Brax task with both bridges; see the module docstring.

  Attributes: ``name``, ``num_envs``, ``obs_size``, ``action_size``, ``obs_shape``, ``episode_length``
  (also ``horizon``), ``action_repeat``, ``backend``, ``bridge`` (the one a trainer should use), and
  ``reward_scale`` (multiplies the rewards handed to TF; PPO keeps 1 and scales in its loss).
  """

  def __init__(self,
               name,
               num_envs,
               episode_length=1000,
               action_repeat=1,
               backend="spring",
               bridge="numpy",
               reward_scale=1.0):
    self.name = canonical_name(name)
    if isinstance(num_envs, bool) or int(num_envs) != num_envs or int(num_envs) <= 0:
      raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if isinstance(episode_length, bool) or int(episode_length) != episode_length or episode_length <= 0:
      raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}")
    if isinstance(action_repeat, bool) or int(action_repeat) != action_repeat or action_repeat <= 0:
      raise ValueError(f"action_repeat must be a positive integer, got {action_repeat!r}")
    if backend not in BACKENDS:
      raise ValueError(f"Unknown Brax backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if bridge not in BRIDGES:
      raise ValueError(f"Unknown bridge {bridge!r}; valid: {', '.join(BRIDGES)}")
    self.num_envs = int(num_envs)
    self.episode_length = int(episode_length)
    self.horizon = self.episode_length
    self.action_repeat = int(action_repeat)
    self.backend = backend
    self.bridge = bridge
    self.reward_scale = float(reward_scale)
    self._c = _compiled(self.name, backend, self.episode_length, self.action_repeat)
    self.obs_size = self._c.obs_size
    self.action_size = self._c.action_size
    self.obs_shape = (self.obs_size,)

  # ----- common ---------------------------------------------------------------------------------
  def _seeds(self, seeds):
    seeds = np.atleast_1d(np.asarray(seeds, np.int64))
    if seeds.ndim != 1 or seeds.size == 0 or self.num_envs % seeds.size:
      raise ValueError(f"reset needs one seed per unit with num_envs={self.num_envs} a multiple of the "
                       f"number of units; got seeds of shape {seeds.shape}")
    if np.any(seeds < -2**31) or np.any(seeds >= 2**31):
      raise ValueError("seeds must fit in int32")
    return seeds.astype(np.int32)

  def reset(self, seeds=0, salt=0):
    """JAX state of freshly reset envs (numpy bridge; ``to_flat`` turns it into the graph bridge's form).

    seeds: int or int sequence of length U (units); salt: int (a fresh set of episodes per value)."""
    seeds = self._seeds(seeds)
    jnp = _jax_modules()[1]
    return self._c.reset(jnp.asarray(seeds), jnp.asarray(salt, jnp.int32), self.num_envs // seeds.size)

  def observe(self, state):
    """obs tensor [N, obs_size] of a JAX state."""
    return tf.convert_to_tensor(np.asarray(state.obs))

  # ----- numpy bridge -----------------------------------------------------------------------------
  def _check_action(self, action):
    a = np.asarray(action, np.float32)
    if a.shape != (self.num_envs, self.action_size):
      raise ValueError(f"action must have shape {(self.num_envs, self.action_size)}, got {a.shape}")
    return a

  def step(self, state, action):
    """One batched step of all envs: (JAX state, action [N, act] tensor/array) -> (state, StepOutput)."""
    a = action.numpy() if isinstance(action, tf.Tensor) else self._check_action(action)
    jnp = _jax_modules()[1]
    state, obs, rdt = self._c.step_out(state, jnp.asarray(a))
    rdt = np.asarray(rdt)  # [3, N]: reward, done, truncation (one transfer)
    reward = rdt[0] * np.float32(self.reward_scale) if self.reward_scale != 1.0 else rdt[0]
    out = StepOutput(obs=tf.convert_to_tensor(np.asarray(obs)),
                     reward=tf.convert_to_tensor(reward),
                     done=tf.convert_to_tensor(rdt[1]),
                     truncation=tf.convert_to_tensor(rdt[2]))
    return state, out

  # ----- graph bridge -----------------------------------------------------------------------------
  def _graph(self):
    return self._c.graph_fns(self.num_envs, 1)

  def flat_specs(self):
    """tf.TensorSpec of every leaf of the flat state (the while_loop signature)."""
    return self._graph()[1]

  def to_flat(self, state):
    """JAX state -> tuple of TF tensors (the graph bridge's state)."""
    jax = _jax_modules()[0]
    return tuple(tf.convert_to_tensor(np.asarray(l)) for l in jax.tree_util.tree_leaves(state))

  def from_flat(self, flat):
    """Tuple of TF tensors -> JAX state (e.g. to continue with the numpy bridge)."""
    jax, jnp = _jax_modules()[:2]
    treedef = self._graph()[0]
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(t.numpy()) for t in flat])

  @tf.autograph.experimental.do_not_convert
  def graph_step(self, flat, action):
    """In-graph batched step (usable inside tf.function / tf.while_loop):
    (tuple of leaves, action [N, act] float32 tensor) -> (tuple of leaves, StepOutput); differentiable
    w.r.t. the leaves and the action (JAX's VJP; see the module docstring)."""
    tf_step = self._graph()[2]
    new_flat, obs, reward, done, trunc = tf_step(*flat, tf.cast(action, tf.float32))
    for t, s in zip(new_flat, self.flat_specs()):
      t.set_shape(s.shape)
    if self.reward_scale != 1.0:
      reward = reward * self.reward_scale
    obs = tf.ensure_shape(obs, [self.num_envs, self.obs_size])
    return tuple(new_flat), StepOutput(obs=obs,
                                       reward=tf.ensure_shape(reward, [self.num_envs]),
                                       done=tf.ensure_shape(done, [self.num_envs]),
                                       truncation=tf.ensure_shape(trunc, [self.num_envs]))

  @tf.autograph.experimental.do_not_convert
  def graph_reset(self, seeds, salt=0):
    """In-graph reset (converted with jax2tf; its own compilation): seeds int32 [U] tensor (U divides
    num_envs), salt int32 scalar -> flat state, the same as ``to_flat(reset(seeds, salt))``."""
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    if seeds.shape.rank != 1 or seeds.shape[0] is None or self.num_envs % seeds.shape[0]:
      raise ValueError(f"graph_reset needs seeds of static shape [U] with U dividing num_envs="
                       f"{self.num_envs}; got {seeds.shape}")
    u = int(seeds.shape[0])
    flat = self._c.graph_reset_fn(u, self.num_envs // u)(seeds, tf.cast(salt, tf.int32))
    for t, s in zip(flat, self.flat_specs()):
      t.set_shape(s.shape)
    return tuple(flat)

  @property
  def jax_step(self):
    """The un-jitted JAX function (Brax state, action [N, act]) -> Brax state both bridges run (for
    references written in JAX, e.g. ``jax.grad`` through the same simulator)."""
    return self._c._raw_step

  @tf.autograph.experimental.do_not_convert
  def flat_obs(self, flat):
    """Observation [N, obs_size] of a flat (graph) state: the leaf of ``State.obs``."""
    return flat[self._obs_index()]

  def _obs_index(self):
    if not hasattr(self, "_obs_idx"):
      self._obs_idx = self._leaf_index(".obs")
    return self._obs_idx

  def _leaf_index(self, path):
    """Index in the flat state of the Brax state's leaf at ``path`` (``jax.tree_util.keystr`` form)."""
    jax = _jax_modules()[0]
    shape = self._c.state_shape(1, self.num_envs)
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(shape)[0]].index(path)

  def graph_env(self):
    """The graph bridge as an ``envs.base.ContinuousEnv`` (:class:`BraxGraphEnv`; made once per env)."""
    if not hasattr(self, "_graph_env"):
      self._graph_env = BraxGraphEnv(self)
    return self._graph_env

  def __repr__(self):
    return (f"BraxEnv({self.name!r}, num_envs={self.num_envs}, episode_length={self.episode_length}, "
            f"action_repeat={self.action_repeat}, backend={self.backend!r}, bridge={self.bridge!r})")


class BraxGraphEnv:
  """The graph bridge of a :class:`BraxEnv` as an ``envs.base.ContinuousEnv`` (the package's env protocol).

  The state is the flat state (tuple of TF tensors, leading axis N = ``num_envs`` on each); everything runs
  inside a ``tf.function``. ``reset(seeds, salt=0)``: ``seeds`` int32 [U], one per unit (U divides N), as
  :meth:`BraxEnv.graph_reset`; ``step(state, action [N, action_size], seed)`` ignores ``seed`` (Brax's
  randomness lives in its state) and returns (state, obs [N, obs_size], reward [N], done [N]) of
  :meth:`BraxEnv.graph_step` (differentiable, auto-reset); :meth:`truncation` reads the time-limit flag of a
  state (Brax's ``state.info["truncation"]``).
  """

  def __init__(self, env):
    self.env = env
    self.name, self.num_envs, self.horizon = env.name, env.num_envs, env.horizon
    self.obs_shape, self.action_size, self.reward_scale = env.obs_shape, env.action_size, env.reward_scale
    self._truncation_index = env._leaf_index(".info['truncation']")

  def __repr__(self):
    return f"BraxGraphEnv({self.env!r})"

  def reset(self, seed, salt=0):
    return self.env.graph_reset(seed, salt)

  def observe(self, state):
    """float32 [N, obs_size]."""
    return self.env.flat_obs(state)

  def step(self, state, action, seed=None):
    del seed
    state, out = self.env.graph_step(state, action)
    return state, out.obs, out.reward, out.done

  def truncation(self, state):
    """float32 [N]: 1.0 where the step that made ``state`` ended the episode by the time limit only."""
    return state[self._truncation_index]


def make(name, num_envs, reward_scale=1.0, episode_length=1000, action_repeat=1, backend="spring", bridge="numpy"):
  """A :class:`BraxEnv` (``name`` with or without the 'brax:' prefix)."""
  return BraxEnv(name,
                 num_envs,
                 episode_length=episode_length,
                 action_repeat=action_repeat,
                 backend=backend,
                 bridge=bridge,
                 reward_scale=reward_scale)
