"""Keras 3 face of STAR (MLPNomLOpt, docs/fidelity.md §6.5): ``optim4rl_tf.STAR``.

  opt = optim4rl_tf.STAR(learning_rate=1e-3, meta_params="star_catch.npz")
  model.compile(optimizer=opt, loss="mse")

``learning_rate`` is STAR's ``step_mult``. As for the GRU optimizers (``keras_optimizers.py``), ``build``
creates one float32 optimizer variable per meta-parameter (``phi_mlp_w0`` for ``mlp/w0``, ...,
``phi_decays_momentum``; fixed, not trained by ``fit``), then per model variable STAR's accumulators
(momentum ``var.shape + (3,)``, RMS ``+ (1,)``, Adafactor row/column or full accumulators); the step counter
t is the optimizer's ``iterations``. ``update_step`` calls the pure core of ``star.py`` with the phi
variables' values, so this optimizer and the meta-trainer share one implementation. ``get_config`` holds the
hyper-parameters (``mlp_dims``, ``star_options``, ``seed``, the ``meta_params`` path or ``pretrained``
name); phi is saved and restored with the optimizer variables. Dtypes, the non-finite guard (gradient, new
value and new accumulators), the warning outside compiled steps, Keras's base-class arguments, weights-only
restore and the TensorFlow-backend requirement work as described in ``keras_optimizers.py``: the
accumulators are float32 and STAR computes in float32, its update being cast to the variable's dtype. The
official ``grad_clip`` is Keras's ``clipvalue=``.

Memory per model parameter (float32 state): momentum 3 + RMS 1 floats, plus Adafactor accumulators: for
tensors with 2 or more axes only row and column statistics (3 per row and per column), for vectors and
scalars 3 more floats per parameter; about 16 bytes per parameter for weight matrices, 28 for biases.

A zero gradient is not a no-op for STAR: the parameter value and the time features are inputs of its MLP,
so the variable moves (as in learned_optimization's MLPNomLOpt, which the meta-trainer reproduces).
"""

import os

import keras
import tensorflow as tf

from optim4rl_tf.optimizers import keras_optimizers
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import star as star_lib


@keras.saving.register_keras_serializable(package="optim4rl_tf")
class STAR(keras_optimizers._LearnedOptimizer):  # pylint: disable=protected-access
  """STAR (Harrison et al. 2022, adafac-nominal MLP learned optimizer, as in the paper). About 16 bytes of
  float32 state per parameter of a weight matrix (Adam: 8); see the module docstring."""
  _core_name = star_lib.NAME
  zero_gradient_is_noop = False

  def __init__(self,
               learning_rate=1e-3,
               meta_params=None,
               seed=0,
               mlp_dims=None,
               star_options=None,
               pretrained=None,
               name=None,
               **kwargs):
    """Args:
      learning_rate: STAR's step_mult (the agent learning rate).
      meta_params: None (fresh phi from ``seed``), a path to an ``.npz`` STAR file, or a dict {key: array}.
      seed: int seed for a fresh phi.
      mlp_dims: MLP hidden widths; None means (4, 4) or the file's.
      star_options: dict of STAR constants (``StarCore.options()``) for a fresh or dict phi; a file
        brings its own.
      pretrained: the name of a shipped trained STAR file (as ``from_pretrained``); not with ``meta_params``.
      **kwargs: Keras optimizer arguments (``clipvalue``, ``name`` ...).
    """
    super().__init__(learning_rate, meta_params, pretrained, seed, name,
                     dict(mlp_dims=mlp_dims, star_options=star_options), **kwargs)

  def _resolve(self, meta_params, seed, mlp_dims, star_options):
    core, phi = meta_params_lib.resolve(star_lib.NAME, meta_params, mlp_dims=mlp_dims, seed=seed)
    if star_options and not isinstance(meta_params, (str, bytes, os.PathLike)):
      core = star_lib.make_core(dict(star_options, mlp_dims=core.mlp_dims))
      if meta_params is None:
        phi = core.init_meta_params(seed)
      meta_params_lib.validate(core, phi, source="meta_params")
    return core, phi

  def _add_state(self, var):
    """STAR's float32 accumulators of one model variable: (m, rms) + Adafactor (v_row, v_col) or (v,)."""
    tag = keras_optimizers.var_tag(var)
    zeros = self.core.init_state(tf.zeros(tuple(var.shape), tf.float32))
    fac_names = ("v_row", "v_col") if len(zeros.fac) == 2 else ("v",)
    shapes_names = [(zeros.m.shape, "m"), (zeros.rms.shape, "rms")] + list(zip([f.shape for f in zeros.fac], fac_names))
    return tuple(
        self.add_variable(shape=tuple(shape), initializer="zeros", dtype="float32", name=f"{tag}_{name}")
        for shape, name in shapes_names)

  def _step(self, phi, gradient, value, learning_rate, states):
    m, rms, *fac = states
    state = star_lib.StarState(m=m, rms=rms, fac=tuple(fac), t=tf.cast(self.iterations, tf.int32))
    # Traced into Keras's own train function (a separately XLA-compiled call costs ~10 s of compile time
    # per variable shape on CPU and was not faster for small models).
    delta, new_state = self.core.update(phi, state, gradient, learning_rate, param=tf.cast(value, tf.float32))
    return delta, (new_state.m, new_state.rms) + tuple(new_state.fac)

  def get_config(self):
    config = super().get_config()
    config.update({
        "mlp_dims": list(self.mlp_dims),
        "star_options": {
            k: v for k, v in self.core.options().items() if k != "mlp_dims"
        },
    })
    return config
