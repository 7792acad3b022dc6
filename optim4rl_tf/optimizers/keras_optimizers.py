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

Non-finite gradients: if a variable's gradient contains NaN or Inf, that variable and its hidden states are
left unchanged for the step, the ``nonfinite_steps`` counter is incremented, and a warning is printed to
stderr the first time it happens. Elementwise gradient clipping (the official ``grad_clip``) is Keras's own
``clipvalue=`` argument.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import meta_params as meta_params_lib


class _LearnedOptimizer(keras.optimizers.Optimizer):
  """Base class: a Keras optimizer around a learned-optimizer core. Subclasses set ``_core_name``."""
  _core_name = None

  def __init__(self, learning_rate=1e-3, mlp_dims=None, hidden_size=None, meta_params=None, seed=0,
               name=None, **kwargs):
    """Args:
      learning_rate: alpha, multiplying the network's output (notes §5.5, §10).
      mlp_dims: hidden sizes of the MLP heads; None means (16, 16) as in the paper, or the sizes of the
        ``meta_params`` given; () is the official code's HEAD. A file with other sizes is an error.
      hidden_size: GRU hidden size; None means 8 or the size of the ``meta_params`` given.
      meta_params: None (fresh phi from ``seed``, initialised like the official code), a path to an
        ``.npz`` meta-parameter file, or a dict {key: array}.
      seed: int seed for a fresh phi.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``global_clipnorm``, ``name`` ...).
    """
    super().__init__(learning_rate=learning_rate, name=name or self._core_name, **kwargs)
    core, phi = meta_params_lib.resolve(self._core_name, meta_params, mlp_dims=mlp_dims,
                                        hidden_size=hidden_size, seed=seed)
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
    arrays = {k: np.asarray(v, np.float32) for k, v in phi.items()}
    meta_params_lib.validate(self.core, arrays, source="meta_params")
    for key, var in self._meta_variables().items():
      var.assign(arrays[key])

  def save_meta_params(self, path):
    """Writes the meta-parameters to an ``.npz`` file (atomic)."""
    return meta_params_lib.save(path, self.core, self.meta_params)

  # -- Keras optimizer API --------------------------------------------------------------------------

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    self._hidden = [[] for _ in range(self.core.num_states)]
    for var in var_list:
      for i in range(self.core.num_states):
        self._hidden[i].append(self.add_variable(
            shape=tuple(var.shape) + (self.hidden_size,), initializer="zeros", dtype=var.dtype,
            name=f"{var.path.replace('/', '_')}_h{i + 1}"))
    self.nonfinite_steps = self.add_variable(shape=(), initializer="zeros", dtype="int64",
                                             name="nonfinite_steps")

  def update_step(self, gradient, variable, learning_rate):
    idx = self._get_variable_index(variable)
    hidden = [h[idx] for h in self._hidden]
    phi = {k: v.value for k, v in self._meta_variables().items()}
    lr = tf.cast(learning_rate, variable.dtype)
    gradient = tf.cast(gradient, variable.dtype)
    delta, new_hidden = self.core.compiled_update()(phi, tuple(h.value for h in hidden), gradient, lr)
    finite = tf.reduce_all(tf.math.is_finite(gradient))
    self.assign_add(variable, tf.where(finite, delta, tf.zeros_like(delta)))
    for h, new in zip(hidden, new_hidden):
      self.assign(h, tf.where(finite, new, h.value))
    tf.cond(finite, tf.no_op, lambda: self._report_nonfinite(getattr(variable, "path", variable.name)))

  def _report_nonfinite(self, path):
    first = tf.equal(self.nonfinite_steps, 0)
    self.nonfinite_steps.assign_add(1)
    tf.cond(first, lambda: tf.print(
        f"WARNING: {self.name}: non-finite gradient for '{path}'; the variable was left unchanged for "
        "this step (reported once; the count is in optimizer.nonfinite_steps)", output_stream=sys.stderr),
            tf.no_op)
    return tf.no_op()

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
    numbered = [k for k in keys if not k.startswith("phi.")]
    if len(numbered) != len(self.variables):
      raise ValueError(f"Cannot load optimizer '{self.name}': the file holds {len(numbered)} optimizer "
                       f"variables but this optimizer has {len(self.variables)} (built: {self.built})")
    for i, variable in enumerate(self.variables):
      value = np.asarray(store[str(i)])
      if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(f"Cannot load optimizer '{self.name}': variable {variable.path} has shape "
                         f"{tuple(variable.shape)} but the file has {value.shape}")
    for i, variable in enumerate(self.variables):
      variable.assign(store[str(i)])


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class Optim4RL(_LearnedOptimizer):
  """Optim4RL (paper Algorithm 1): Δθ = −lr · sign(g)·exp(o1) / sqrt(exp(o2) + 1e-8) with two GRUs
  reading g and g², each followed by an MLP head."""
  _core_name = "optim4rl"


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class LinearOptim(_LearnedOptimizer):
  """LinearOptim (ablation, notes §6.3): Δθ = −lr · (exp(o1)·g + exp(o2)·o3)."""
  _core_name = "linear_optim"


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class L2LGD2(_LearnedOptimizer):
  """L2LGD² (Andrychowicz et al. 2016, as in the paper, notes §6.4): Δθ = −lr · exp(o) · g."""
  _core_name = "l2lgd2"


KERAS_OPTIMIZERS = {c._core_name: c for c in (Optim4RL, LinearOptim, L2LGD2)}
