"""Keras 3 face of STAR (MLPNomLOpt, notes §6.5): ``optim4rl_tf.STAR``.

  opt = optim4rl_tf.STAR(learning_rate=1e-3, meta_params="star_catch.npz")
  model.compile(optimizer=opt, loss="mse")

``learning_rate`` is STAR's ``step_mult``. The MLP (39 -> 4 -> 4 -> 4) is held as Keras ``Dense`` layers and
the decay offsets as the weights of a small layer, in the layout of the ``.npz`` keys (``mlp/w0``, ...,
``decays/momentum``); ``update_step`` calls the pure core of ``star.py`` with their values, so this optimizer
and the meta-trainer share one implementation. Per model variable the optimizer keeps STAR's accumulators
(momentum ``var.shape + (3,)``, RMS ``+ (1,)``, Adafactor row/column or full accumulators) as optimizer
variables; the step counter t is the optimizer's ``iterations``. The meta-parameters are fixed (not trained
by ``fit``) and saved with the model (``.keras``). A variable whose gradient is not finite is left unchanged
for the step (with its accumulators), counted in ``nonfinite_steps`` and reported once on stderr. The official
``grad_clip`` is Keras's ``clipvalue=``.
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
  """STAR (Harrison et al. 2022, adafac-nominal MLP learned optimizer, as in the paper)."""
  _core_name = star_lib.NAME

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
    keras.optimizers.Optimizer.__init__(self, learning_rate=learning_rate, name=name or "star", **kwargs)
    core, phi = meta_params_lib.resolve(star_lib.NAME, meta_params, mlp_dims=mlp_dims, seed=seed)
    if star_options and not isinstance(meta_params, (str, bytes)) and not hasattr(meta_params, "__fspath__"):
      core = star_lib.make_core(dict(star_options, mlp_dims=core.mlp_dims))
      if meta_params is None:
        phi = core.init_meta_params(seed)
    self.core = core
    self.mlp_dims = core.mlp_dims
    self.hidden_size = core.hidden_size
    self.seed = seed
    self._meta_layers = self._build_meta_network()
    self.set_meta_params(phi)

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

  def build(self, var_list):
    if self.built:
      return
    keras.optimizers.Optimizer.build(self, var_list)
    self._star_state = []
    for var in var_list:
      tag = var.path.replace("/", "_")
      zeros = self.core.init_state(tf.zeros(tuple(var.shape), var.dtype))
      m = self.add_variable(shape=tuple(zeros.m.shape), initializer="zeros", dtype=var.dtype,
                            name=f"{tag}_m")
      rms = self.add_variable(shape=tuple(zeros.rms.shape), initializer="zeros", dtype=var.dtype,
                              name=f"{tag}_rms")
      fac_names = ("v_row", "v_col") if len(zeros.fac) == 2 else ("v",)
      fac = tuple(self.add_variable(shape=tuple(f.shape), initializer="zeros", dtype=var.dtype,
                                    name=f"{tag}_{n}") for f, n in zip(zeros.fac, fac_names))
      self._star_state.append((m, rms, fac))
    self.nonfinite_steps = self.add_variable(shape=(), initializer="zeros", dtype="int64",
                                             name="nonfinite_steps")

  def update_step(self, gradient, variable, learning_rate):
    idx = self._get_variable_index(variable)
    m, rms, fac = self._star_state[idx]
    phi = {k: v.value for k, v in self._meta_variables().items()}
    gradient = tf.cast(gradient, variable.dtype)
    state = star_lib.StarState(m=m.value, rms=rms.value, fac=tuple(f.value for f in fac),
                               t=tf.cast(self.iterations, tf.int32))
    lr = tf.cast(learning_rate, variable.dtype)
    param = tf.convert_to_tensor(variable)
    # Traced into Keras's own train function (a separately XLA-compiled call costs ~10 s of compile time
    # per variable shape on CPU and was not faster for small models).
    new_param, new_state = self.core.update(phi, state, gradient, param, lr)
    finite = tf.reduce_all(tf.math.is_finite(gradient))
    self.assign(variable, tf.where(finite, new_param, param))
    for var, new in zip((m, rms) + fac, (new_state.m, new_state.rms) + tuple(new_state.fac)):
      self.assign(var, tf.where(finite, new, var.value))
    tf.cond(finite, tf.no_op, lambda: self._report_nonfinite(getattr(variable, "path", variable.name)))

  def get_config(self):
    config = keras.optimizers.Optimizer.get_config(self)
    config.update({
        "mlp_dims": list(self.mlp_dims),
        "seed": self.seed,
        "star_options": {k: v for k, v in self.core.options().items() if k != "mlp_dims"},
        "meta_params": {k: np.asarray(v).tolist() for k, v in self.meta_params.items()},
    })
    return config
