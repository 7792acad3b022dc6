"""Keras 3 faces of the learned optimizers: ``Optim4RL``, ``LinearOptim``, ``L2LGD2``.

Use them like any Keras optimizer::

  opt = optim4rl_tf.Optim4RL(learning_rate=1e-3, meta_params="optim4rl_catch.npz")
  model.compile(optimizer=opt, loss="mse")

The meta-network (Algorithm 1) is held as Keras layers: ``keras.layers.GRUCell(8, reset_after=True)`` cells
with ``Dense`` MLP heads, in the layout of the ``.npz`` keys (``rnn1/kernel`` ...). ``update_step`` calls the
pure core of ``cores.py`` with those layers' weights, so the Keras optimizer and the meta-trainer share one
implementation. Hidden states are optimizer variables of shape ``var.shape + (hidden_size,)`` (two per model
variable for Optim4RL), zero at start and never reset. The meta-parameters are fixed (not trained by
``fit``); they are saved with the model (``.keras``) through ``save_own_variables``/``load_own_variables``.

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

Restoring: a ``.keras`` file restores everything. ``model.load_weights("m.weights.h5")`` into a compiled
model whose optimizer is not built yet keeps the saved optimizer state and assigns it when Keras builds the
optimizer (the first training step), so training continues exactly where it stopped.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib


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


class _LearnedOptimizer(keras.optimizers.Optimizer):
  """Base class: a Keras optimizer around a learned-optimizer core. Subclasses set ``_core_name`` and
  implement ``_add_state`` (the optimizer variables of one model variable) and ``_step`` (the update)."""
  _core_name = None
  zero_gradient_is_noop = False  # True where the algorithm guarantees that g = 0 leaves the variable as is.

  def __init__(self, learning_rate=1e-3, mlp_dims=None, hidden_size=None, meta_params=None, seed=0,
               name=None, **kwargs):
    """Args:
      learning_rate: alpha, multiplying the network's output (docs/fidelity.md §5.5, §10).
      mlp_dims: hidden sizes of the MLP heads; None means (16, 16) as in the paper, or the sizes of the
        ``meta_params`` given; () is the official code's HEAD. A file with other sizes is an error.
      hidden_size: GRU hidden size; None means 8 or the size of the ``meta_params`` given.
      meta_params: None (fresh phi from ``seed``, initialised like the official code), a path to an
        ``.npz`` meta-parameter file, or a dict {key: array}.
      seed: int seed for a fresh phi.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``global_clipnorm``, ``name`` ...).
    """
    check_arguments(learning_rate, mlp_dims, hidden_size, name or self._core_name)
    super().__init__(learning_rate=learning_rate, name=name or self._core_name, **kwargs)
    core, phi = meta_params_lib.resolve(self._core_name, meta_params, mlp_dims=mlp_dims,
                                        hidden_size=hidden_size, seed=seed)
    self._setup(core, phi, seed)

  def _setup(self, core, phi, seed):
    self._pending_state = None  # optimizer state loaded before build (weights-only restore)
    self._nonfinite_warned = False
    self.core = core
    self.mlp_dims = core.mlp_dims
    self.hidden_size = core.hidden_size
    self.seed = seed
    self._meta_layers = self._build_meta_network()
    self.set_meta_params(phi)

  # -- the meta-network as Keras layers -------------------------------------------------------------

  def _build_meta_network(self):
    """Creates GRUCell + Dense-head layers matching the core's keys; returns {prefix: layer}."""
    layers, shapes = {}, self.core.meta_param_shapes()
    for key, shape in shapes.items():
      prefix = key.rsplit("/", 1)[0]
      if prefix in layers:
        continue
      if prefix.startswith("rnn"):
        cell = keras.layers.GRUCell(self.hidden_size, activation="tanh", recurrent_activation="sigmoid",
                                    reset_after=True, kernel_initializer="zeros",
                                    recurrent_initializer="zeros", bias_initializer="zeros",
                                    name=f"{self.name}_{prefix}")
        cell.build((None, shapes[f"{prefix}/kernel"][0]))
        layers[prefix] = cell
      else:  # mlp*/dense_i or mlp*/out
        dense = keras.layers.Dense(shapes[f"{prefix}/kernel"][1], kernel_initializer="zeros", name=f"{self.name}_{prefix.replace('/', '_')}")
        dense.build((None, shapes[f"{prefix}/kernel"][0]))
        layers[prefix] = dense
    return layers

  def _meta_variables(self):
    """{npz key: Keras variable} for every meta-parameter."""
    out = {}
    for prefix, layer in self._meta_layers.items():
      if isinstance(layer, keras.layers.GRUCell):
        out[f"{prefix}/kernel"] = layer.kernel
        out[f"{prefix}/recurrent_kernel"] = layer.recurrent_kernel
        out[f"{prefix}/bias"] = layer.bias
      else:
        out[f"{prefix}/kernel"] = layer.kernel
        out[f"{prefix}/bias"] = layer.bias
    return out

  @property
  def meta_params(self):
    """The meta-parameters as a dict {npz key: np.ndarray}."""
    return {k: np.asarray(v.numpy()) for k, v in self._meta_variables().items()}

  def set_meta_params(self, phi):
    """Assigns phi (dict of arrays), after checking keys and shapes against this optimizer."""
    arrays, _ = meta_params_lib.arrays_from_dict(self.core.name, phi, source="meta_params")
    meta_params_lib.validate(self.core, arrays, source="meta_params")
    for key, var in self._meta_variables().items():
      var.assign(arrays[key])

  def save_meta_params(self, path):
    """Writes the meta-parameters to an ``.npz`` file (atomic)."""
    return meta_params_lib.save(path, self.core, self.meta_params)

  @classmethod
  def from_pretrained(cls, name, **kwargs):
    """This optimizer with the meta-parameters of a trained file that ships with the package (offline).

    ``name``: one of ``optim4rl_tf.pretrained.available()`` (e.g. "catch", "small_dense_long", "grid6");
    ``kwargs`` go to the constructor (``learning_rate=...``, Keras base-class arguments). The file's
    provenance is ``optim4rl_tf.pretrained.provenance(name)``. Raises ValueError naming the valid names for
    an unknown one, or for a file made for another optimizer.
    """
    from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
    meta = pretrained.provenance(name)
    if meta.get("optimizer") != cls._core_name:
      raise ValueError(f"pretrained {name!r} is a {meta.get('optimizer')!r} optimizer, not {cls.__name__}; "
                       f"use the class of that optimizer")
    return cls(meta_params=pretrained.path(name), **kwargs)

  # -- Keras optimizer API --------------------------------------------------------------------------

  def build(self, var_list):
    if self.built:
      return
    for var in var_list:
      if not tf.as_dtype(var.dtype).is_floating:
        raise ValueError(f"{self.name}: variable '{var_label(var)}' has dtype {tf.as_dtype(var.dtype).name}; "
                         "a learned optimizer updates floating-point variables only")
    with tf.init_scope():
      lr = np.asarray(keras.ops.convert_to_numpy(self._get_current_learning_rate()), np.float64)
    if not np.all(np.isfinite(lr)):
      raise ValueError(f"{self.name}: the learning rate is {lr}; it must be finite")
    super().build(var_list)
    self._state = [self._add_state(var) for var in var_list]
    self.nonfinite_steps = self.add_variable(shape=(), initializer="zeros", dtype="int64",
                                             name="nonfinite_steps")
    if self._pending_state is not None:
      values, self._pending_state = self._pending_state, None
      with tf.init_scope():
        self._assign_state(values)

  def _add_state(self, var):
    """The float32 hidden states of one model variable, shape ``var.shape + (hidden_size,)``."""
    return tuple(self.add_variable(shape=tuple(var.shape) + (self.hidden_size,), initializer="zeros",
                                   dtype="float32", name=f"{var_tag(var)}_h{i + 1}")
                 for i in range(self.core.num_states))

  def _step(self, gradient, value, learning_rate, states):
    """(new variable value in its dtype, new states) from the float32 gradient, learning rate and states."""
    # Tensors, not variables: the compiled function is shared by every optimizer of this kind and size.
    phi = {k: tf.convert_to_tensor(v) for k, v in self._meta_variables().items()}
    delta, new_states = self.core.compiled_update()(phi, tuple(states), gradient, learning_rate)
    return value + tf.cast(delta, value.dtype), new_states

  def update_step(self, gradient, variable, learning_rate):
    states = self._state[self._get_variable_index(variable)]
    gradient = tf.cast(tf.convert_to_tensor(gradient), tf.float32)
    value = tf.convert_to_tensor(variable)
    new_value, new_states = self._step(gradient, value, tf.cast(learning_rate, tf.float32),
                                       [tf.convert_to_tensor(s) for s in states])
    ok = tf.reduce_all(tf.math.is_finite(gradient)) & tf.reduce_all(tf.math.is_finite(new_value))
    for new in new_states:
      ok = ok & tf.reduce_all(tf.math.is_finite(new))
    self.assign(variable, tf.where(ok, new_value, value))
    for state, new in zip(states, new_states):
      self.assign(state, tf.where(ok, new, state.value))
    self.assign_add(self.nonfinite_steps, tf.cast(tf.logical_not(ok), tf.int64))

  def apply(self, grads, trainable_variables=None):
    grads = list(grads)
    if trainable_variables is not None:
      trainable_variables = list(trainable_variables)
    for grad, var in zip(grads, trainable_variables if trainable_variables is not None
                         else self._trainable_variables):
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
      warnings.warn(f"{self.name}: {count} variable update(s) had a non-finite gradient or update and were "
                    "skipped (the variable and its optimizer state were left unchanged); reported once, the "
                    "running count is in optimizer.nonfinite_steps", RuntimeWarning, stacklevel=3)

  def get_config(self):
    config = super().get_config()
    config.update({
        "mlp_dims": list(self.mlp_dims),
        "hidden_size": self.hidden_size,
        "seed": self.seed,
        # The meta-parameters travel with the config, so from_config() gives the same optimizer.
        "meta_params": {k: v.tolist() for k, v in self.meta_params.items()},
    })
    return config

  def save_own_variables(self, store):
    super().save_own_variables(store)
    for key, value in self.meta_params.items():
      store["phi." + key.replace("/", ".")] = value

  def load_own_variables(self, store):
    keys = list(store.keys())
    phi = {k[4:].replace(".", "/"): np.asarray(store[k]) for k in keys if k.startswith("phi.")}
    if phi:
      self.set_meta_params(phi)
    values = [np.asarray(store[str(i)]) for i in range(len([k for k in keys if not k.startswith("phi.")]))]
    if not self.built and len(values) != len(self.variables):
      # model.load_weights() before the optimizer is built: assign the state when Keras builds it.
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


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class Optim4RL(_LearnedOptimizer):
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
class LinearOptim(_LearnedOptimizer):
  """LinearOptim (ablation, docs/fidelity.md §6.3): Δθ = −lr · (exp(o1)·g + exp(o2)·o3). The offset o3 moves
  the variable even for a zero gradient. Memory: 8 floats (one GRU state, 32 bytes in float32) per parameter.
  """
  _core_name = "linear_optim"


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class L2LGD2(_LearnedOptimizer):
  """L2LGD² (Andrychowicz et al. 2016, as in the paper, docs/fidelity.md §6.4): Δθ = −lr · exp(o) · g; a
  zero gradient leaves the variable unchanged. Memory: 8 floats (one GRU state, 32 bytes in float32) per
  parameter."""
  _core_name = "l2lgd2"
  zero_gradient_is_noop = True


KERAS_OPTIMIZERS = {c._core_name: c for c in (Optim4RL, LinearOptim, L2LGD2)}
