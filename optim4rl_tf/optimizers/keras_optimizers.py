"""Keras 3 faces of the learned optimizers: ``Optim4RL``, ``LinearOptim``, ``L2LGD2`` (STAR: ``keras_star.py``).

Use them like any Keras optimizer::

  opt = optim4rl_tf.Optim4RL(learning_rate=1e-3, meta_params="optim4rl_catch.npz")
  model.compile(optimizer=opt, loss="mse")

The meta-parameters phi are initialised from ``meta_params`` (an ``.npz`` path or a dict {npz key: array}),
from a shipped file (``from_pretrained(name)``) or from ``seed``. As in ``keras.optimizers.Adam``, ``build``
creates the optimizer variables: one float32 variable per phi entry (``phi_<key>``, e.g. ``phi_rnn1_kernel``
for ``rnn1/kernel``; fixed, not trained by ``fit``), then per model variable its hidden states, shape
``var.shape + (hidden_size,)`` (two for Optim4RL), zero at start and never reset. ``update_step`` calls the
pure core of ``cores.py`` with the phi variables' values, so the Keras optimizer and the meta-trainer share
one implementation. Everything is an optimizer variable, so ``model.save`` / ``load_model`` and
``save_weights`` / ``load_weights`` restore phi with the state; ``get_config`` holds only hyper-parameters
(learning rate, sizes, seed, and the ``meta_params`` path or ``pretrained`` name if one was given). The
optimizers need Keras's TensorFlow backend (a RuntimeError at construction otherwise).

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

Restoring: a ``.keras`` file restores everything (should the ``meta_params`` file of its config be gone,
``from_config`` warns and phi comes from the saved variables). ``model.load_weights("m.weights.h5")`` into a
compiled model whose optimizer is not built yet keeps the saved optimizer variables and assigns them when
Keras builds the optimizer (the first training step), so training continues exactly where it stopped.
"""

import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib


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
    self.mlp_dims = self.core.mlp_dims
    self.seed = seed
    self.pretrained = pretrained
    self.meta_params_path = os.fspath(meta_params) if is_path else None
    self._initial_phi = phi  # float32 arrays until ``build`` turns them into the phi variables
    self._phi = None  # {npz key: optimizer variable} once built
    self._pending_state = None  # optimizer variables loaded before build (weights-only restore)
    self._nonfinite_warned = False

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
  def from_pretrained(cls, name, **kwargs):
    """This optimizer with the meta-parameters of a trained file that ships with the package (offline).

    ``name``: one of ``optim4rl_tf.pretrained.available()`` (e.g. "catch", "small_dense_long", "grid6");
    ``kwargs`` go to the constructor (``learning_rate=...``, Keras base-class arguments). The file's
    provenance is ``optim4rl_tf.pretrained.provenance(name)``. Raises ValueError naming the valid names for
    an unknown one, or for a file made for another optimizer.
    """
    return cls(pretrained=name, **kwargs)

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
    # Tensors, not variables: the GRU cores' compiled function is shared by every optimizer of a kind.
    phi = {k: tf.convert_to_tensor(v) for k, v in self._phi.items()}
    gradient = tf.cast(tf.convert_to_tensor(gradient), tf.float32)
    value = tf.convert_to_tensor(variable)
    delta, new_states = self._step(phi, gradient, value, tf.cast(learning_rate, tf.float32),
                                   [tf.convert_to_tensor(s) for s in states])
    new_value = value + tf.cast(delta, value.dtype)
    ok = tf.reduce_all(tf.math.is_finite(gradient)) & tf.reduce_all(tf.math.is_finite(new_value))
    for new in new_states:
      ok = ok & tf.reduce_all(tf.math.is_finite(new))
    self.assign(variable, tf.where(ok, new_value, value))
    for state, new in zip(states, new_states):
      self.assign(state, tf.where(ok, new, state.value))
    self.assign_add(self.nonfinite_steps, tf.cast(tf.logical_not(ok), tf.int64))

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
    starts from the seed until restored (``keras.models.load_model`` restores it from the saved variables)."""
    config = dict(config)
    path = config.get("meta_params")
    if isinstance(path, str) and path and not os.path.exists(path):
      warnings.warn(
          f"{cls.__name__}.from_config: meta-parameter file {path!r} not found; phi starts from "
          f"seed {config.get('seed', 0)} until restored from saved optimizer variables",
          UserWarning,
          stacklevel=2)
      config["meta_params"] = None
    return super().from_config(config, custom_objects=custom_objects)

  def load_own_variables(self, store):
    keys = sorted(store.keys())
    if any(not k.isdigit() for k in keys):
      raise ValueError(f"Cannot load optimizer '{self.name}': the file's optimizer entries {keys[:4]}... are "
                       "not this version's layout (saved by an older optim4rl_tf?)")
    values = [np.asarray(store[str(i)]) for i in range(len(keys))]
    if not self.built:
      # model.load_weights() before the optimizer is built: assign the variables when Keras builds it.
      self._pending_state = tuple(values)
      return
    self._assign_state(values)

  def _assign_state(self, values):
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

  def _add_state(self, var):
    """The float32 hidden states of one model variable, shape ``var.shape + (hidden_size,)``."""
    return tuple(
        self.add_variable(shape=tuple(var.shape) + (self.hidden_size,),
                          initializer="zeros",
                          dtype="float32",
                          name=f"{var_tag(var)}_h{i + 1}") for i in range(self.core.num_states))

  def _step(self, phi, gradient, value, learning_rate, states):
    del value  # the GRU cores read only the gradient
    return self.core.compiled_update()(phi, tuple(states), gradient, learning_rate)

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
