"""Keras 3 faces of the learned optimizers: ``Optim4RL``, ``LinearOptim``, ``L2LGD2`` (STAR: ``keras_star.py``).

Use them like any Keras optimizer::

  opt = optim4rl_tf.Optim4RL(learning_rate=1e-3, meta_params="optim4rl_catch.npz")
  model.compile(optimizer=opt, loss="mse")

The meta-parameters phi are initialised from ``meta_params`` (an ``.npz`` path or a dict {npz key: array}),
from a shipped file (``from_pretrained(name)``, by default with the agent learning rate and gradient clip the
file was meta-trained with) or from ``seed``: a fresh, untrained phi, which is a one-line
``UntrainedMetaParamsWarning`` at construction (its updates come from a random network). As in
``keras.optimizers.Adam``, ``build`` creates the optimizer variables: one float32 variable per phi entry
(``phi_<key>``, e.g. ``phi_rnn1_kernel`` for ``rnn1/kernel``; fixed, not trained by ``fit``), then per model
variable its hidden states, shape ``(hidden_size,) + var.shape`` (two for Optim4RL; feature-major, the
layout the core computes in), zero at start and never reset. A training step updates all model variables
in one XLA-compiled call of the pure core of ``cores.py`` (``update_feature_major``) with the phi
variables' values, so the Keras optimizer and the meta-trainer share one implementation (under a
``tf.distribute`` strategy Keras's per-variable ``update_step`` runs the same function on each variable).
Hidden states saved before this layout (``var.shape + (hidden_size,)``) are moved to it when they are
loaded, when the file shows it (some state's shape fits only the old layout). Everything is an optimizer
variable, so ``model.save`` / ``load_model`` and ``save_weights`` / ``load_weights`` restore phi with the state;
``get_config`` holds only hyper-parameters (learning rate, sizes, seed, and the ``meta_params`` path or
``pretrained`` name if one was given). The optimizers need Keras's TensorFlow backend (a RuntimeError at
construction otherwise).

Variables: Keras variables and plain ``tf.Variable``s of any floating dtype (float16, bfloat16, float32,
float64) are accepted. The learned optimizer always computes in float32 (its state variables are float32)
and the update is cast back to the variable's dtype; an integer variable is a ValueError naming it. A
gradient whose shape differs from its variable's is a ValueError naming the variable and both shapes.

Non-finite values are never written: if a variable's gradient, its new value or its new optimizer state
contains NaN or Inf (a NaN gradient, or meta-parameters that overflow), that variable and its state are left
unchanged for the step and the ``nonfinite_steps`` counter is incremented. The counter is updated inside the
step; the warning (a ``RuntimeWarning``, once per optimizer) is raised from Python outside any compiled
graph: after an eager ``apply_gradients`` and at the end of ``fit``, so ``jit_compile=True`` works. (Inside
your own ``tf.function`` loop, read ``optimizer.nonfinite_steps``.) A non-finite learning rate is a
ValueError: a float at construction, a schedule's or callable's value at ``build``.

Keras's base-class arguments behave as for ``keras.optimizers.Adam``: ``clipvalue`` (the official
``grad_clip``), ``clipnorm``, ``global_clipnorm``, ``weight_decay`` (decoupled, with
``exclude_from_weight_decay``), ``use_ema``/``ema_momentum``/``ema_overwrite_frequency``,
``loss_scale_factor`` and ``gradient_accumulation_steps`` (the step runs every N-th call on the mean
gradient; ``iterations`` counts real steps). ``keras.mixed_precision.LossScaleOptimizer`` wraps them.

String identifiers: ``model.compile(optimizer="optim4rl")`` (likewise "linear_optim", "l2lgd2", "star") works
once ``optim4rl_tf.register_keras_names()`` has run (at ``import optim4rl_tf`` when keras is already
imported, and when these classes are first used). A name gives the recommended shipped file of that
optimizer (``from_pretrained()``; today "optim4rl" only) or, where none ships, a fresh optimizer (with the
warning).

Restoring: a ``.keras`` file restores everything (should the ``meta_params`` file of its config be gone,
``from_config`` warns and phi comes from the saved variables). ``model.load_weights("m.weights.h5")`` into a
compiled model whose optimizer is not built yet keeps the saved optimizer variables and assigns them when
Keras builds the optimizer (the first training step), so training continues exactly where it stopped. Saved
optimizer variables that do not fit this optimizer are refused when they are loaded (``load_weights``,
``load_model``, ``load_own_variables``), before any step, with one ValueError naming the mismatch: an entry
missing from the file, meta-parameters of another optimizer or size (the first key whose shape differs), a
NaN or Inf meta-parameter, hidden states of another ``hidden_size``, variables of ``use_ema`` /
``gradient_accumulation_steps`` on one side only, or
(once built) the first optimizer variable whose shape differs.
"""

import contextvars
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

import optim4rl_tf
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib


class UntrainedMetaParamsWarning(UserWarning):
  """A learned optimizer was built with fresh (randomly initialised, untrained) meta-parameters."""


# True while ``from_config`` rebuilds a saved optimizer: its phi comes from the saved variables (load_model)
# or is a copy of one that already warned, so the untrained warning is not repeated.
_QUIET_UNTRAINED = contextvars.ContextVar("optim4rl_tf_quiet_untrained", default=False)

# Keras base-class arguments that clip gradients (at most one may be given).
_CLIP_ARGUMENTS = ("clipvalue", "clipnorm", "global_clipnorm")


def require_tensorflow_backend():
  """RuntimeError unless Keras runs on TensorFlow (the update step is TensorFlow code)."""
  backend = keras.backend.backend()
  if backend != "tensorflow":
    raise RuntimeError(f"optim4rl_tf's Keras optimizers need the TensorFlow backend; KERAS_BACKEND is "
                       f"{backend!r}. Set KERAS_BACKEND=tensorflow before importing keras.")


def var_label(variable):
  """The name of a model variable in messages: its Keras ``path``, or a ``tf.Variable``'s name."""
  return str(getattr(variable, "path", None) or variable.name)


def var_tag(variable):
  """A prefix for the optimizer variables of ``variable`` (no '/' or ':'; Keras variables: ``path``)."""
  return var_label(variable).split(":")[0].replace("/", "_")


def check_arguments(learning_rate, mlp_dims, hidden_size, name):
  """Constructor checks shared by the learned optimizers: one ValueError per bad argument."""
  if isinstance(learning_rate, (int, float)) and not math.isfinite(learning_rate):
    raise ValueError(f"{name}: learning_rate must be finite, got {learning_rate}")
  if mlp_dims is not None:
    cores.positive_ints(mlp_dims, "mlp_dims")
  if hidden_size is not None:
    cores.positive_int(hidden_size, "hidden_size")


def _constant(value):
  """A Keras initializer giving ``value`` (a float32 array of the variable's shape)."""
  return lambda shape, dtype=None: np.asarray(value, np.float32).reshape(shape)


def guarded_step(gradient, value, delta, new_states, old_states):
  """The non-finite guard of one model variable's step: ``(new value, new states, bad)``, where the new value
  is ``value + delta`` (cast to ``value``'s dtype) and the new states ``new_states``, or ``value`` and
  ``old_states`` unchanged if the gradient, the new value or a new state holds NaN or Inf; ``bad`` is 1
  (int64) then, else 0."""
  new_value = value + tf.cast(delta, value.dtype)
  ok = tf.reduce_all(tf.math.is_finite(gradient)) & tf.reduce_all(tf.math.is_finite(new_value))
  for new in new_states:
    ok = ok & tf.reduce_all(tf.math.is_finite(new))
  return (tf.where(ok, new_value, value), [tf.where(ok, new, old) for new, old in zip(new_states, old_states)],
          tf.cast(tf.logical_not(ok), tf.int64))


class _LearnedOptimizer(keras.optimizers.Optimizer):
  """Base class: a Keras optimizer around a learned-optimizer core (``cores.Core``). Subclasses set
  ``_core_name`` and define ``__init__`` (their hyper-parameters, passed on as ``core_args``), ``_resolve``
  (the core and phi), ``_add_state`` (the state variables of one model variable), ``_step`` (the core's
  update) and ``get_config``."""
  _core_name = None
  zero_gradient_is_noop = False  # True where the algorithm guarantees that g = 0 leaves the variable as is.

  def __init__(self, learning_rate, meta_params, pretrained, seed, name, core_args, **kwargs):
    """Args:
      learning_rate: the agent learning rate (alpha of docs/fidelity.md §5.5, §10; STAR's step_mult).
      meta_params: None, a path to an ``.npz`` meta-parameter file, or a dict {npz key: array}.
      pretrained: None or the name of a shipped file (``optim4rl_tf.pretrained.available()``).
      seed: int seed of a fresh phi (neither ``meta_params`` nor ``pretrained`` given).
      name: the optimizer's name (default: the core's).
      core_args: dict of the subclass's size arguments for ``_resolve``.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``global_clipnorm`` ...).
    """
    require_tensorflow_backend()
    name = name or self._core_name
    check_arguments(learning_rate, core_args.get("mlp_dims"), core_args.get("hidden_size"), name)
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    if pretrained is not None and meta_params is not None:
      raise ValueError(f"{name}: give meta_params or pretrained, not both")
    is_path = isinstance(meta_params, (str, os.PathLike)) and bool(meta_params)
    source = self._pretrained_path(pretrained) if pretrained is not None else meta_params
    self.core, phi = self._resolve(source, seed, **core_args)
    self._n_base_variables = len(self.variables)  # iterations (and the learning rate): saved before phi
    self.mlp_dims = self.core.mlp_dims
    self.seed = seed
    self.pretrained = pretrained
    self.meta_params_path = os.fspath(meta_params) if is_path else None
    self._initial_phi = phi  # float32 arrays until ``build`` turns them into the phi variables
    self._phi = None  # {npz key: optimizer variable} once built
    self._pending_state = None  # optimizer variables loaded before build (weights-only restore)
    self._nonfinite_warned = False
    fresh = pretrained is None and (meta_params is None or (isinstance(meta_params, str) and not meta_params))
    if fresh and not _QUIET_UNTRAINED.get():
      self._warn_untrained()

  def _warn_untrained(self):
    from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
    cls = type(self).__name__
    fix = (f"pass meta_params=<phi.npz> or use {cls}.from_pretrained()" if pretrained.recommended(self._core_name) else
           f"pass meta_params=<phi.npz> from a meta-training (no trained {cls} ships for from_pretrained yet)")
    warnings.warn(
        f"{cls}: untrained meta-parameters (fresh from seed={self.seed}), so its updates come from a random "
        f"network; {fix}",
        UntrainedMetaParamsWarning,
        stacklevel=4)

  @classmethod
  def _pretrained_path(cls, name):
    from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
    meta = pretrained.provenance(name)
    if meta.get("optimizer") != cls._core_name:
      raise ValueError(f"pretrained {name!r} is a {meta.get('optimizer')!r} optimizer, not {cls.__name__}; "
                       f"use the class of that optimizer")
    return pretrained.path(name)

  def _resolve(self, meta_params, seed, **core_args):
    """``(core, phi)`` from ``meta_params`` (None, a path or a dict), ``seed`` and the size arguments."""
    raise NotImplementedError

  @classmethod
  def from_pretrained(cls, name=None, **kwargs):
    """This optimizer with the meta-parameters of a trained file that ships with the package (offline).

    ``name``: one of ``optim4rl_tf.pretrained.available()`` (e.g. "catch", "grid6", "inverted_pendulum");
    None means the recommended file of this optimizer, ``optim4rl_tf.pretrained.recommended()``
    (``pretrained.RECOMMENDED``, "inverted_pendulum", for Optim4RL). ``kwargs`` go to the constructor (Keras
    base-class arguments ...). Unless given, ``learning_rate`` and the gradient clip are the ones its card recommends
    (``optim4rl_tf.pretrained.card(name)``, made from measurements on tasks it never saw), or for a file
    without a card the ones it was meta-trained with (``optim4rl_tf.pretrained.agent_settings(name)``: the
    tasks' agent learning rate and ``clipvalue=agent_grad_clip``, none where it was off); passing
    ``learning_rate=`` or any of
    ``clipvalue``/``clipnorm``/``global_clipnorm`` (``clipvalue=None``: no clip) overrides them. The file's
    provenance is ``optim4rl_tf.pretrained.provenance(name)``. Raises ValueError naming the valid names for
    an unknown one, for a file made for another optimizer, or (no name) when none ships for this one.
    """
    from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
    if name is None:
      name = pretrained.recommended(cls._core_name)
      if name is None:
        raise ValueError(f"no trained {cls.__name__} ships with this package (shipped: "
                         f"{', '.join(pretrained.available()) or 'none'}, for Optim4RL); pass "
                         f"meta_params=<phi.npz> from a meta-training instead")
    cls._pretrained_path(name)  # a clear error for an unknown name or another optimizer's file, first
    settings = pretrained.recommended_settings(name)
    if "learning_rate" in settings:
      kwargs.setdefault("learning_rate", settings["learning_rate"])
    if settings.get("clipvalue") is not None and not any(k in kwargs for k in _CLIP_ARGUMENTS):
      kwargs["clipvalue"] = settings["clipvalue"]
    return cls(pretrained=name, **kwargs)

  @classmethod
  def from_keras_name(cls, config=None):
    """The optimizer Keras builds for this class's string identifier (``keras.optimizers.get("optim4rl")``,
    ``model.compile(optimizer="optim4rl")``; see ``optim4rl_tf.register_keras_names``). ``config``: the
    arguments of Keras's identifier dict (empty for a plain string). A config naming its phi source
    (``meta_params``, ``pretrained`` or ``seed``) is ``from_config``'s; otherwise the result is
    ``from_pretrained(**config)`` where a trained file of this optimizer ships, else ``cls(**config)``
    (fresh, with the untrained warning)."""
    from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
    config = dict(config or {})
    if any(k in config for k in ("meta_params", "pretrained", "seed")):
      return cls.from_config(config)
    if pretrained.recommended(cls._core_name) is not None:
      return cls.from_pretrained(**config)
    return cls(**config)

  # -- meta-parameters ------------------------------------------------------------------------------

  @property
  def meta_params(self):
    """The meta-parameters as a dict {npz key: np.ndarray} (a copy)."""
    if self._phi is None:
      return {k: np.array(v) for k, v in self._initial_phi.items()}
    return {k: np.asarray(v.numpy()) for k, v in self._phi.items()}

  def set_meta_params(self, phi):
    """Assigns phi (dict of arrays), after checking keys and shapes against this optimizer."""
    arrays, _ = meta_params_lib.arrays_from_dict(self.core.name, phi, source="meta_params")
    meta_params_lib.validate(self.core, arrays, source="meta_params")
    if self._phi is None:
      self._initial_phi = arrays
      return
    for key, var in self._phi.items():
      var.assign(arrays[key])

  def save_meta_params(self, path):
    """Writes the meta-parameters to an ``.npz`` file (atomic)."""
    return meta_params_lib.save(path, self.core, self.meta_params)

  # -- Keras optimizer API --------------------------------------------------------------------------

  def build(self, var_list):
    """Creates the optimizer variables: phi (one per npz key), then the state of every model variable."""
    if self.built:
      return
    for var in var_list:
      if not tf.as_dtype(var.dtype).is_floating:
        raise ValueError(f"{self.name}: variable '{var_label(var)}' has dtype {tf.as_dtype(var.dtype).name}; "
                         "a learned optimizer updates floating-point variables only")
    with tf.init_scope():
      lr = np.asarray(tf.convert_to_tensor(self._get_current_learning_rate()).numpy(), np.float64)
    if not np.all(np.isfinite(lr)):
      raise ValueError(f"{self.name}: the learning rate is {lr}; it must be finite")
    super().build(var_list)
    phi, self._initial_phi = self._initial_phi, None
    self._phi = {
        key:
            self.add_variable(shape=shape,
                              initializer=_constant(phi[key]),
                              dtype="float32",
                              name="phi_" + key.replace("/", "_"))
        for key, shape in self.core.meta_param_shapes().items()
    }
    self._state = [self._add_state(var) for var in var_list]
    self.nonfinite_steps = self.add_variable(shape=(), initializer="zeros", dtype="int64", name="nonfinite_steps")
    if self._pending_state is not None:
      values, self._pending_state = self._pending_state, None
      with tf.init_scope():
        self._assign_state(values)

  def update_step(self, gradient, variable, learning_rate):
    states = self._state[self._get_variable_index(variable)]
    # (STAR; the GRU optimizers step all variables in one call, _RecurrentOptimizer._update_variables)
    phi = {k: tf.convert_to_tensor(v) for k, v in self._phi.items()}
    gradient = tf.cast(tf.convert_to_tensor(gradient), tf.float32)
    value = tf.convert_to_tensor(variable)
    old_states = [tf.convert_to_tensor(s) for s in states]
    delta, new_states = self._step(phi, gradient, value, tf.cast(learning_rate, tf.float32), old_states)
    new_value, new_states, bad = guarded_step(gradient, value, delta, new_states, old_states)
    self.assign(variable, new_value)
    for state, new in zip(states, new_states):
      self.assign(state, new)
    self.assign_add(self.nonfinite_steps, bad)

  def _step(self, phi, gradient, value, learning_rate, states):
    """(float32 update, new states) of one model variable, from the core's ``update``.

    Args: phi dict of tensors; gradient float32, shape S; value: the variable's value, shape S, its dtype;
    learning_rate float32 scalar; states: this variable's state tensors (``_add_state``)."""
    raise NotImplementedError

  def _add_state(self, var):
    """The float32 state variables of one model variable (a tuple)."""
    raise NotImplementedError

  def apply(self, grads, trainable_variables=None):
    grads = list(grads)
    if trainable_variables is not None:
      trainable_variables = list(trainable_variables)
    for grad, var in zip(grads, trainable_variables if trainable_variables is not None else self._trainable_variables):
      if grad is None:
        continue
      shape = tf.TensorShape(grad.shape if hasattr(grad, "shape") else np.shape(grad))
      if not shape.is_compatible_with(var.shape):
        raise ValueError(f"{self.name}: the gradient for variable '{var_label(var)}' has shape "
                         f"{tuple(shape.as_list())}, but the variable has shape {tuple(var.shape)}")
    result = super().apply(grads, trainable_variables)
    if tf.executing_eagerly():
      self._warn_nonfinite()
    return result

  def finalize_variable_values(self, var_list):
    super().finalize_variable_values(var_list)  # called by fit() at the end, outside the compiled step
    self._warn_nonfinite()

  def _warn_nonfinite(self):
    if self._nonfinite_warned or not self.built:
      return
    count = int(self.nonfinite_steps.numpy())
    if count:
      self._nonfinite_warned = True
      warnings.warn(
          f"{self.name}: {count} variable update(s) had a non-finite gradient or update and were "
          "skipped (the variable and its optimizer state were left unchanged); reported once, the "
          "running count is in optimizer.nonfinite_steps",
          RuntimeWarning,
          stacklevel=3)

  def get_config(self):
    """Hyper-parameters only (phi lives in the optimizer variables); subclasses add their sizes."""
    config = super().get_config()
    config.update({"seed": self.seed, "meta_params": self.meta_params_path, "pretrained": self.pretrained})
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """The optimizer of ``config``. A ``meta_params`` file that no longer exists is a warning, and phi
    starts from the seed until restored (``keras.models.load_model`` restores it from the saved variables).
    No untrained-phi warning: a config's phi comes from the saved variables or copies an optimizer that
    warned already."""
    config = dict(config)
    path = config.get("meta_params")
    if isinstance(path, str) and path and not os.path.exists(path):
      warnings.warn(
          f"{cls.__name__}.from_config: meta-parameter file {path!r} not found; phi starts from "
          f"seed {config.get('seed', 0)} until restored from saved optimizer variables",
          UserWarning,
          stacklevel=2)
      config["meta_params"] = None
    token = _QUIET_UNTRAINED.set(True)
    try:
      return super().from_config(config, custom_objects=custom_objects)
    finally:
      _QUIET_UNTRAINED.reset(token)

  def load_own_variables(self, store):
    """Loads the optimizer variables Keras saved (``store``: {"0": array, "1": ...}), after checking that
    they fit this optimizer (``_check_saved``; one ValueError naming the mismatch). Before ``build`` they
    are kept and assigned when Keras builds the optimizer."""
    keys = list(store.keys())
    if any(not k.isdigit() for k in keys):
      raise ValueError(f"Cannot load optimizer '{self.name}': the file's optimizer entries {sorted(keys)[:4]}... "
                       "are not this version's layout (saved by an older optim4rl_tf?)")
    indices = sorted(int(k) for k in keys)
    missing = sorted(set(range(len(indices))) - set(indices))
    if missing:
      raise ValueError(f"Cannot load optimizer '{self.name}': the file's optimizer variables are incomplete: "
                       f"entries {missing[:8]} of 0..{indices[-1]} are missing (a damaged or edited file)")
    values = [np.asarray(store[str(i)]) for i in range(len(indices))]
    self._check_saved(values)
    if not self.built:
      # model.load_weights() before the optimizer is built: assign the variables when Keras builds it.
      self._pending_state = tuple(values)
      return
    self._assign_state(values)

  def _state_shapes_ok(self, states):
    """None if ``states`` (the file's per-variable state arrays, in order) can be this optimizer's state of
    some model variables, else a sentence saying why not. The GRU optimizers check the hidden size."""
    del states
    return None

  def _check_saved(self, values):
    """Checks saved optimizer variables (arrays in ``self.variables`` order) against this optimizer's layout:
    base variables (iterations, learning rate), ``use_ema`` averages and gradient accumulators (one per model
    variable each), phi (the core's keys in order), the per-variable states, ``nonfinite_steps``. Raises one
    ValueError naming the first mismatch; the model-variable shapes are compared once the optimizer is
    built (``_assign_state``)."""
    if self._saved_unbuilt(values):
      return
    where = f"Cannot load optimizer '{self.name}'"
    desc = f"{self.core.name} (mlp_dims={list(self.core.mlp_dims)}, hidden_size={self.core.hidden_size})"
    shapes = [tuple(s) for s in self.core.meta_param_shapes().values()]
    keys = list(self.core.meta_param_shapes())
    base, n_phi = self._n_base_variables, len(shapes)
    per_var = int(bool(self.use_ema)) + int((self.gradient_accumulation_steps or 0) > 1)
    got = [tuple(np.shape(v)) for v in values]
    starts = [o for o in range(base, len(values) - n_phi) if got[o:o + n_phi] == shapes]
    if not starts:
      if per_var == 0 and len(values) > base:
        for i, (key, want) in enumerate(zip(keys, shapes)):
          if base + i >= len(values) - 1:
            break
          if got[base + i] != want:
            raise ValueError(f"{where}: the file's meta-parameters do not match {desc}: {key!r} has shape "
                             f"{got[base + i]} in the file, expected {want} (saved from another optimizer or "
                             "other mlp_dims / hidden_size?)")
      raise ValueError(f"{where}: the file holds no meta-parameters of {desc} ({n_phi} arrays starting with "
                       f"{keys[0]!r} {shapes[0]}); saved from another optimizer or other mlp_dims / hidden_size?")
    start = starts[0]
    if per_var == 0 and start != base:
      raise ValueError(f"{where}: the file has {start - base} optimizer variables before its meta-parameters "
                       "where this optimizer has none (saved with use_ema or gradient_accumulation_steps, "
                       "which this optimizer does not use?)")
    for key, value in zip(keys, values[start:start + n_phi]):
      if not np.all(np.isfinite(value)):
        raise ValueError(f"{where}: the file's meta-parameter {key!r} contains NaN or Inf")
    if got[-1] != ():
      raise ValueError(f"{where}: the file's last optimizer variable has shape {got[-1]}; expected the scalar "
                       "nonfinite_steps counter (saved from another optimizer?)")
    states = values[start + n_phi:-1]
    problem = self._state_shapes_ok(states)
    if problem:
      raise ValueError(f"{where}: {problem}")
    n_vars = self._count_state_variables(states)
    if n_vars is not None and start - base != per_var * n_vars:
      raise ValueError(f"{where}: the file has {start - base} optimizer variables before its meta-parameters, "
                       f"this optimizer expects {per_var * n_vars} for {n_vars} model variables (use_ema="
                       f"{self.use_ema}, gradient_accumulation_steps={self.gradient_accumulation_steps}: "
                       "saved with other settings?)")

  def _count_state_variables(self, states):
    """The number of model variables whose state ``states`` is, or None where it cannot be told."""
    del states
    return None

  def _saved_unbuilt(self, values):
    """Whether ``values`` are those of an optimizer saved before it was built (a model saved after
    ``compile``, before any step): only the scalar base variables (iterations, learning rate)."""
    return len(values) == self._n_base_variables and all(np.ndim(v) == 0 for v in values)

  def _assign_state(self, values):
    self._check_saved(values)
    if self._saved_unbuilt(values):  # as Keras's optimizers: phi and states stay as constructed
      for value, variable in zip(values, self.variables):
        variable.assign(value)
      return
    variables = self.variables
    if len(values) != len(variables):
      raise ValueError(f"Cannot load optimizer '{self.name}': the file holds {len(values)} optimizer "
                       f"variables but this optimizer has {len(variables)} (built for "
                       f"{len(self._trainable_variables)} model variables; was the file saved from the same "
                       "model and optimizer settings?)")
    for value, variable in zip(values, variables):
      if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(f"Cannot load optimizer '{self.name}': variable {variable.path} has shape "
                         f"{tuple(variable.shape)} but the file has {value.shape}")
    for value, variable in zip(values, variables):
      variable.assign(value)


_FUSED_UPDATES = {}  # (core class, mlp_dims, hidden_size) -> the shared XLA-compiled step of all variables


def fused_update(core):
  """The Keras face's step of a GRU core over a list of model variables, as one XLA-compiled ``tf.function``
  shared by every optimizer of the same kind and sizes.

  ``fn(phi, grads, values, learning_rate, states) -> (new_values, new_states, num_nonfinite)``: ``grads`` and
  ``values`` lists of tensors of shapes S_i (``values`` in the variables' dtypes, ``grads`` of any floating
  dtype), ``learning_rate`` a float32 scalar, ``states`` a list of per-variable lists of float32 hidden states
  of shape (H,) + S_i. The core computes in float32 and its update is cast to the variable's dtype. A
  variable whose gradient, new value or new states hold NaN or Inf keeps its value and states
  (``new_values[i]``, ``new_states[i]`` are the old ones); ``num_nonfinite`` (int64) counts those variables."""
  key = (type(core), core.mlp_dims, core.hidden_size)
  if key not in _FUSED_UPDATES:

    def step(phi, grads, values, learning_rate, states):
      new_values, new_states, num_nonfinite = [], [], tf.constant(0, tf.int64)
      for grad, value, state in zip(grads, values, states):
        grad = tf.cast(grad, tf.float32)
        delta, new = core.update_feature_major(phi, tuple(state), grad, learning_rate)
        new_value, new, bad = guarded_step(grad, value, delta, new, state)
        new_values.append(new_value)
        new_states.append(new)
        num_nonfinite += bad
      return new_values, new_states, num_nonfinite

    _FUSED_UPDATES[key] = tf.function(step, jit_compile=True)
  return _FUSED_UPDATES[key]


class _RecurrentOptimizer(_LearnedOptimizer):
  """The GRU optimizers (``cores.py``): sizes ``mlp_dims``, ``hidden_size``; state = hidden states."""

  def __init__(self,
               learning_rate=1e-3,
               mlp_dims=None,
               hidden_size=None,
               meta_params=None,
               seed=0,
               pretrained=None,
               name=None,
               **kwargs):
    """Args:
      learning_rate: alpha, multiplying the network's output (docs/fidelity.md §5.5, §10).
      mlp_dims: hidden sizes of the MLP heads; None means (16, 16) as in the paper, or the sizes of the
        ``meta_params`` given; () is the official code's HEAD. A file with other sizes is an error.
      hidden_size: GRU hidden size; None means 8 or the size of the ``meta_params`` given.
      meta_params: None (fresh phi from ``seed``, initialised like the official code), a path to an
        ``.npz`` meta-parameter file, or a dict {key: array}.
      seed: int seed for a fresh phi.
      pretrained: the name of a shipped trained file (as ``from_pretrained``); not with ``meta_params``.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``global_clipnorm``, ``name`` ...).
    """
    super().__init__(learning_rate, meta_params, pretrained, seed, name, dict(mlp_dims=mlp_dims,
                                                                              hidden_size=hidden_size), **kwargs)
    self.hidden_size = self.core.hidden_size

  def _resolve(self, meta_params, seed, mlp_dims, hidden_size):
    return meta_params_lib.resolve(self._core_name, meta_params, mlp_dims=mlp_dims, hidden_size=hidden_size, seed=seed)

  def _state_shapes_ok(self, states):
    # (H,) + var.shape, or var.shape + (H,) as saved before the feature-major layout (_upgrade_layout).
    sizes = sorted({int(np.shape(s)[0]) if np.ndim(s) else 0 for s in states})
    old_sizes = sorted({int(np.shape(s)[-1]) if np.ndim(s) else 0 for s in states})
    if sizes and sizes != [self.hidden_size] and old_sizes != [self.hidden_size]:
      return (f"the file's hidden states have size {sizes if len(sizes) > 1 else sizes[0]}, this "
              f"optimizer's hidden_size is {self.hidden_size}")
    if len(states) % self.core.num_states:
      return (f"the file has {len(states)} hidden states, not a multiple of {self.core.name}'s "
              f"{self.core.num_states} per model variable (saved from another optimizer?)")
    return None

  def _count_state_variables(self, states):
    return len(states) // self.core.num_states

  def _add_state(self, var):
    """The float32 hidden states of one model variable, shape ``(hidden_size,) + var.shape``."""
    return tuple(
        self.add_variable(shape=(self.hidden_size,) + tuple(var.shape),
                          initializer="zeros",
                          dtype="float32",
                          name=f"{var_tag(var)}_h{i + 1}") for i in range(self.core.num_states))

  def _update_variables(self, grads, variables, learning_rate):
    """One compiled step (``fused_update``) of ``variables`` (tf.Variables) with ``grads``; assigns the new
    values and hidden states and counts the non-finite variables in ``nonfinite_steps``."""
    states = [self._state[self._get_variable_index(v)] for v in variables]
    # Tensors, not variables: the compiled function is shared by every optimizer of a kind.
    phi = {k: tf.convert_to_tensor(v) for k, v in self._phi.items()}
    values, new_states, num_nonfinite = fused_update(self.core)(
        phi, [tf.convert_to_tensor(g) for g in grads], [tf.convert_to_tensor(v) for v in variables],
        tf.cast(learning_rate, tf.float32), [[tf.convert_to_tensor(h) for h in state] for state in states])
    for variable, value in zip(variables, values):
      self.assign(variable, value)
    for state, new in zip(states, new_states):
      for h, value in zip(state, new):
        self.assign(h, value)
    self.assign_add(self.nonfinite_steps, num_nonfinite)

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    """All variables in one compiled call; under a ``tf.distribute`` strategy, Keras's per-variable path."""
    if tf.distribute.has_strategy():
      return super()._backend_update_step(grads, trainable_variables, learning_rate)
    variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
    return self._update_variables(list(grads), variables, learning_rate)

  def update_step(self, gradient, variable, learning_rate):
    self._update_variables([gradient], [variable], learning_rate)

  def _assign_state(self, values):
    super()._assign_state(self._upgrade_layout(values))

  def _upgrade_layout(self, values):
    """``values`` (saved optimizer variables, in ``self.variables`` order) with hidden states saved in the
    layout before the feature-major one (``var.shape + (H,)``) moved to ``(H,) + var.shape``. The file is in
    the old layout if some hidden state has the old shape and not the new one; then every hidden state of
    the old shape is moved (a state whose variable's axes all equal H has the same shape in both layouts,
    so a file of only such variables is read as the new layout)."""
    if not self.built or len(values) != len(self.variables):
      return values
    hidden = {id(h) for state in self._state for h in state}
    pairs = [(i, tuple(np.shape(v)), tuple(var.shape))
             for i, (v, var) in enumerate(zip(values, self.variables))
             if id(var) in hidden]
    old_shape = lambda new: new[1:] + new[:1]
    if not any(got == old_shape(want) and got != want for _, got, want in pairs):
      return values
    values = list(values)
    for i, got, want in pairs:
      if got == old_shape(want):
        values[i] = np.moveaxis(np.asarray(values[i]), -1, 0)
    return values

  def get_config(self):
    config = super().get_config()
    config.update({"mlp_dims": list(self.mlp_dims), "hidden_size": self.hidden_size})
    return config


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class Optim4RL(_RecurrentOptimizer):
  """Optim4RL (paper Algorithm 1): Δθ = −lr · sign(g)·exp(o1) / sqrt(exp(o2) + 1e-8) with two GRUs
  reading g and g², each followed by an MLP head. A zero gradient leaves the variable unchanged (sign(0) = 0).

  Memory: 16 floats of optimizer state per model parameter (two GRU hidden states of size 8, float32
  whatever the variable's dtype), i.e. 64 bytes per parameter, against Adam's 2 floats (8 bytes in
  float32): a model with 10 M parameters needs 640 MB of Optim4RL state (Adam: 80 MB). In general
  2 · hidden_size · 4 bytes per parameter.
  """
  _core_name = "optim4rl"
  zero_gradient_is_noop = True


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class LinearOptim(_RecurrentOptimizer):
  """LinearOptim (ablation, docs/fidelity.md §6.3): Δθ = −lr · (exp(o1)·g + exp(o2)·o3). The offset o3 moves
  the variable even for a zero gradient. Memory: 8 floats (one GRU state, 32 bytes in float32) per parameter.
  """
  _core_name = "linear_optim"


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class L2LGD2(_RecurrentOptimizer):
  """L2LGD² (Andrychowicz et al. 2016, as in the paper, docs/fidelity.md §6.4): Δθ = −lr · exp(o) · g; a
  zero gradient leaves the variable unchanged. Memory: 8 floats (one GRU state, 32 bytes in float32) per
  parameter."""
  _core_name = "l2lgd2"
  zero_gradient_is_noop = True


optim4rl_tf.register_keras_names()
