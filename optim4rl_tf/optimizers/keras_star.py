"""Keras 3 face of STAR (MLPNomLOpt, docs/fidelity.md §6.5): ``optim4rl_tf.STAR``.

  opt = optim4rl_tf.STAR(learning_rate=1e-3, meta_params="star_catch.npz")
  model.compile(optimizer=opt, loss="mse")

``learning_rate`` is STAR's ``step_mult``. The MLP (39 -> 4 -> 4 -> 4) is held as Keras ``Dense`` layers and
the decay offsets as the weights of a small layer, in the layout of the ``.npz`` keys (``mlp/w0``, ...,
``decays/momentum``); ``update_step`` calls the pure core of ``star.py`` with their values, so this optimizer
and the meta-trainer share one implementation. Per model variable the optimizer keeps STAR's accumulators
(momentum ``var.shape + (3,)``, RMS ``+ (1,)``, Adafactor row/column or full accumulators) as optimizer
variables; the step counter t is the optimizer's ``iterations``. The meta-parameters are fixed (not trained
by ``fit``) and saved with the model (``.keras``). Dtypes, the non-finite guard (gradient, new value and new
accumulators), the warning outside compiled steps, Keras's base-class arguments and weights-only restore
work as described in ``keras_optimizers.py``: the accumulators are float32 and STAR computes in float32,
the change of the variable being cast back to its dtype. The official ``grad_clip`` is Keras's
``clipvalue=``.

Memory per model parameter (float32 state): momentum 3 + RMS 1 floats, plus Adafactor accumulators: for
tensors with 2 or more axes only row and column statistics (3 per row and per column), for vectors and
scalars 3 more floats per parameter; about 16 bytes per parameter for weight matrices, 28 for biases.

A zero gradient is not a no-op for STAR: the parameter value and the time features are inputs of its MLP,
so the variable moves (as in learned_optimization's MLPNomLOpt, which the meta-trainer reproduces).
"""

import keras
import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import keras_optimizers
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import star as star_lib


class _DecayOffsets(keras.layers.Layer):
  """Holds STAR's three decay-offset vectors as weights."""

  def __init__(self, sizes, **kwargs):
    super().__init__(**kwargs)
    self.sizes = dict(sizes)
    self.offsets = {}
    for key, size in self.sizes.items():
      self.offsets[key] = self.add_weight(shape=(size,), initializer="zeros", trainable=False,
                                          name=key.replace("/", "_"))
    self.built = True


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class STAR(keras_optimizers._LearnedOptimizer):  # pylint: disable=protected-access
  """STAR (Harrison et al. 2022, adafac-nominal MLP learned optimizer, as in the paper). About 16 bytes of
  float32 state per parameter of a weight matrix (Adam: 8); see the module docstring."""
  _core_name = star_lib.NAME
  zero_gradient_is_noop = False

  def __init__(self, learning_rate=1e-3, meta_params=None, seed=0, mlp_dims=None, star_options=None,
               name=None, **kwargs):
    """Args:
      learning_rate: STAR's step_mult (the agent learning rate).
      meta_params: None (fresh phi from ``seed``), a path to an ``.npz`` STAR file, or a dict {key: array}.
      seed: int seed for a fresh phi.
      mlp_dims: MLP hidden widths; None means (4, 4) or the file's.
      star_options: dict of STAR constants (``StarCore.options()``) for a fresh or dict phi; a file
        brings its own.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``name`` ...).
    """
    keras_optimizers.check_arguments(learning_rate, mlp_dims, None, name or "star")
    keras.optimizers.Optimizer.__init__(self, learning_rate=learning_rate, name=name or "star", **kwargs)
    core, phi = meta_params_lib.resolve(star_lib.NAME, meta_params, mlp_dims=mlp_dims, seed=seed)
    if star_options and not isinstance(meta_params, (str, bytes)) and not hasattr(meta_params, "__fspath__"):
      core = star_lib.make_core(dict(star_options, mlp_dims=core.mlp_dims))
      if meta_params is None:
        phi = core.init_meta_params(seed)
    self._setup(core, phi, seed)

  def _build_meta_network(self):
    layers, shapes = {}, self.core.meta_param_shapes()
    for i, (fan_in, fan_out) in enumerate(self.core.layer_sizes()):
      dense = keras.layers.Dense(fan_out, kernel_initializer="zeros", name=f"{self.name}_mlp_{i}")
      dense.build((None, fan_in))
      layers[f"mlp/{i}"] = dense
    layers["decays"] = _DecayOffsets({k: v[0] for k, v in shapes.items() if k.startswith("decays/")},
                                     name=f"{self.name}_decays")
    return layers

  def _meta_variables(self):
    out = {}
    for i in range(len(self.core.layer_sizes())):
      out[f"mlp/w{i}"] = self._meta_layers[f"mlp/{i}"].kernel
      out[f"mlp/b{i}"] = self._meta_layers[f"mlp/{i}"].bias
    out.update(self._meta_layers["decays"].offsets)
    return out

  def _add_state(self, var):
    """STAR's float32 accumulators of one model variable: (m, rms) + Adafactor (v_row, v_col) or (v,)."""
    tag = keras_optimizers.var_tag(var)
    zeros = self.core.init_state(tf.zeros(tuple(var.shape), tf.float32))
    fac_names = ("v_row", "v_col") if len(zeros.fac) == 2 else ("v",)
    shapes_names = [(zeros.m.shape, "m"), (zeros.rms.shape, "rms")] + list(
        zip([f.shape for f in zeros.fac], fac_names))
    return tuple(self.add_variable(shape=tuple(shape), initializer="zeros", dtype="float32",
                                   name=f"{tag}_{name}") for shape, name in shapes_names)

  def _step(self, gradient, value, learning_rate, states):
    m, rms, *fac = states
    phi = {k: tf.convert_to_tensor(v) for k, v in self._meta_variables().items()}
    state = star_lib.StarState(m=m, rms=rms, fac=tuple(fac), t=tf.cast(self.iterations, tf.int32))
    param = tf.cast(value, tf.float32)
    # Traced into Keras's own train function (a separately XLA-compiled call costs ~10 s of compile time
    # per variable shape on CPU and was not faster for small models).
    new_param, new_state = self.core.update(phi, state, gradient, param, learning_rate)
    if value.dtype != tf.float32:  # add the float32 change, keeping the variable's own precision
      new_param = value + tf.cast(new_param - param, value.dtype)
    return new_param, (new_state.m, new_state.rms) + tuple(new_state.fac)

  def get_config(self):
    config = keras.optimizers.Optimizer.get_config(self)
    config.update({
        "mlp_dims": list(self.mlp_dims),
        "seed": self.seed,
        "star_options": {k: v for k, v in self.core.options().items() if k != "mlp_dims"},
        "meta_params": {k: np.asarray(v).tolist() for k, v in self.meta_params.items()},
    })
    return config
