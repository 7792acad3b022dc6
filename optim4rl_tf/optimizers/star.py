"""STAR = MLPNomLOpt ("adafac-nominal", Harrison et al. 2022) as used by the paper (docs/fidelity.md §6.5).

A pure, differentiable core implementing ``cores.Core`` (the interface of every learned-optimizer core); all
state lives in tensors passed in and out::

  core = StarCore()
  phi = core.init_meta_params(seed)                             # dict {npz key: float32 array}, 207 scalars
  state = core.init_state(param)                                # StarState (accumulators + step counter t)
  update, state = core.update(phi, state, g, lr, param=param)   # new parameter: param + update

``lr`` is MLPNomLOpt's ``step_mult`` (the configured agent learning rate, docs/fidelity.md §5.5: no extra multiplier).
Unlike the GRU cores, STAR needs ``param`` (an input feature of its MLP), and neither ``g`` nor ``param`` is
stop-gradient'ed: when ``g`` is itself the gradient of a loss of ``param`` computed under an outer tape, the
meta-gradient of STAR includes the second-order terms (docs/fidelity.md §6.5 "Gradient flow"). See
:func:`differentiable_step` for the nested-tape pattern the meta-trainer uses.

Per-tensor semantics: the 28 normalised features are RMS-normalised over ALL coordinates of the parameter
tensor, and the Adafactor accumulators factor the tensor's two largest axes. When a tensor carries a leading
unit axis (several independent agents stacked, [U, ...]), pass ``unit_axis=True``: then every slice
``[u]`` is treated exactly as a separate tensor of shape [...] (normalisation, factoring and the step
counter t are per unit), so one call equals U separate calls.

Meta-parameter keys (``.npz``, see ``meta_params.py``)::

  mlp/w0 (39, 4), mlp/b0 (4,), mlp/w1 (4, 4), mlp/b1 (4,), mlp/w2 (4, 4), mlp/b2 (4,)
  decays/momentum (3,), decays/rms (1,), decays/adafactor (3,)      # offsets, 0 at init

Input channel order of ``mlp/w0`` rows (official order): g, p, m(3), rms(1), m/sqrt(rms)(3), 1/sqrt(rms)(1),
fac_g(3), row_feat(3), col_feat(3), rsqrt(row_feat)(3), rsqrt(col_feat)(3), fac_mom(3) (vectors: v, v,
rsqrt(v), rsqrt(v), m/sqrt(v)), then the 11 time features tanh(t/tau - 1).
"""

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from optim4rl_tf.optimizers import cores

NAME = "star"
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 1e4, 3e4, 1e5)
NUM_TIME_FEATURES = len(TIMESCALES)
NUM_OUTPUTS = 4  # direction, magnitude, (nominal, regularisation controllers: unused)

DEFAULT_OPTIONS = dict(
    mlp_dims=(4, 4),  # hidden_size 4, hidden_layers 2
    nominal_stepsize=1e-3,  # the official wrapper's value (upstream: 0)
    weight_decay=0.0,
    exp_mult=(1e-3, 1e-3, 1e-3),
    initial_momentum_decays=(0.9, 0.99, 0.999),
    initial_rms_decays=(0.999,),
    initial_adafactor_decays=(0.9, 0.99, 0.999),
)


class StarState(NamedTuple):
  """STAR's optimizer state for one parameter tensor of shape S (or [U] + S with a unit axis).

  m:   S + (3,) momentum accumulators (no bias correction);
  rms: S + (1,) second-moment accumulator;
  fac: Adafactor accumulators: ``(v_row, v_col)`` with v_row = S without axis d0, v_col = S without
       axis d1, each + (3,), for tensors with >= 2 dims (per unit), else ``(v,)`` with v = S + (3,);
  t:   int32 number of previous updates, shape [] (or [U]).
  """
  m: Any
  rms: Any
  fac: Any
  t: Any


def factored_dims(shape):
  """learned_optimization's ``factored_dims``: None for < 2 dims, else (d1, d0) = (axis of the second
  largest, axis of the largest dim) in numpy argsort order (a square matrix gives d1 = 0, d0 = 1)."""
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2:
    return None
  order = np.argsort(shape, kind="stable")
  return int(order[-2]), int(order[-1])


def _as(x, dtype):
  """``x`` as a tensor of ``dtype`` (Python floats converted directly: tf.cast would round via float32)."""
  if isinstance(x, (tf.Tensor, tf.Variable)) or hasattr(x, "dtype") and not isinstance(x, np.ndarray):
    return tf.cast(x, dtype)
  return tf.constant(x, dtype)


def _safe_rsqrt(x):
  return tf.math.rsqrt(tf.maximum(x, _as(1e-9, x.dtype)))


def _finite_float(value, what):
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
      or not np.isfinite(value):
    raise ValueError(f"{what} must be a finite number, got {value!r}")
  return float(value)


def _finite_floats(values, what):
  if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
    raise ValueError(f"{what} must be a sequence of finite numbers, got {values!r}")
  return tuple(_finite_float(v, f"every entry of {what}") for v in values)


def _static_shape(x, what):
  shape = x.shape
  if shape.rank is None or any(d is None for d in shape.as_list()):
    raise ValueError(f"STAR needs a fully static shape for {what} (per-tensor factoring and normalisation); "
                     f"got {shape}")
  return [int(d) for d in shape.as_list()]


class StarCore(cores.Core):
  """MLPNomLOpt (adafac-nominal) with the paper's settings; see the module docstring."""
  name = NAME

  def __init__(self,
               mlp_dims=(4, 4),
               nominal_stepsize=1e-3,
               weight_decay=0.0,
               exp_mult=(1e-3, 1e-3, 1e-3),
               initial_momentum_decays=(0.9, 0.99, 0.999),
               initial_rms_decays=(0.999,),
               initial_adafactor_decays=(0.9, 0.99, 0.999)):
    self.mlp_dims = cores.positive_ints(mlp_dims, "STAR mlp_dims")
    self.hidden_size = self.mlp_dims[0] if self.mlp_dims else 0  # MLPNomLOpt's hidden_size
    self.nominal_stepsize = _finite_float(nominal_stepsize, "STAR nominal_stepsize")
    self.weight_decay = _finite_float(weight_decay, "STAR weight_decay")
    self.exp_mult = _finite_floats(exp_mult, "STAR exp_mult")
    if len(self.exp_mult) != 3:
      raise ValueError(f"exp_mult needs 3 values, got {exp_mult}")
    self.initial_momentum_decays = _finite_floats(initial_momentum_decays, "STAR initial_momentum_decays")
    self.initial_rms_decays = _finite_floats(initial_rms_decays, "STAR initial_rms_decays")
    self.initial_adafactor_decays = _finite_floats(initial_adafactor_decays, "STAR initial_adafactor_decays")
    n_m, n_r, n_f = (len(self.initial_momentum_decays), len(self.initial_rms_decays),
                     len(self.initial_adafactor_decays))
    if n_r != 1 or n_m != n_f:
      raise ValueError("STAR's features need one RMS decay and as many Adafactor as momentum decays, got "
                       f"{n_m} momentum, {n_r} rms, {n_f} adafactor decays")
    self.num_decays = n_m
    # g, p, m, rms, m*rsqrt(rms), rsqrt(rms), fac_g, then 5 factored blocks of num_decays channels.
    self.num_normalised = 2 + n_m + 1 + n_m + 1 + n_f + 5 * n_f
    self.num_inputs = self.num_normalised + NUM_TIME_FEATURES

  # -- meta-parameters -------------------------------------------------------------------------------

  def options(self):
    """The constants of this STAR (written into the ``.npz`` ``__meta__``)."""
    return dict(mlp_dims=list(self.mlp_dims),
                nominal_stepsize=self.nominal_stepsize,
                weight_decay=self.weight_decay,
                exp_mult=list(self.exp_mult),
                initial_momentum_decays=list(self.initial_momentum_decays),
                initial_rms_decays=list(self.initial_rms_decays),
                initial_adafactor_decays=list(self.initial_adafactor_decays))

  def meta_info(self):
    """Extra ``__meta__`` fields for ``meta_params.save``."""
    info = self.options()
    del info["mlp_dims"]
    return info

  def layer_sizes(self):
    """[(fan_in, fan_out)] of the MLP layers: 39 -> 4 -> 4 -> 4 by default."""
    sizes, fan_in = [], self.num_inputs
    for width in self.mlp_dims + (NUM_OUTPUTS,):
      sizes.append((fan_in, width))
      fan_in = width
    return sizes

  def meta_param_shapes(self):
    shapes = {}
    for i, (fan_in, fan_out) in enumerate(self.layer_sizes()):
      shapes[f"mlp/w{i}"] = (fan_in, fan_out)
      shapes[f"mlp/b{i}"] = (fan_out,)
    shapes["decays/momentum"] = (len(self.initial_momentum_decays),)
    shapes["decays/rms"] = (len(self.initial_rms_decays),)
    shapes["decays/adafactor"] = (len(self.initial_adafactor_decays),)
    return shapes

  def init_meta_params(self, seed=0):
    """haiku ``TruncatedNormal(1/sqrt(fan_in))`` weights (a standard normal truncated to ±2, times
    1/sqrt(fan_in), no variance correction), zero biases, zero decay offsets. Deterministic in ``seed``."""
    phi = {}
    for i, (fan_in, fan_out) in enumerate(self.layer_sizes()):
      z = tf.random.stateless_truncated_normal((fan_in, fan_out), seed=(int(seed) % (2**31), 7000 + i))
      phi[f"mlp/w{i}"] = (z.numpy() / np.sqrt(fan_in)).astype(np.float32)
      phi[f"mlp/b{i}"] = np.zeros((fan_out,), np.float32)
    for key, shape in self.meta_param_shapes().items():
      if key.startswith("decays/"):
        phi[key] = np.zeros(shape, np.float32)
    return phi

  def decays(self, phi, dtype=tf.float32):
    """Effective decays (momentum [3], rms [1], adafactor [3]): beta = 1 - (1 - beta0) exp(10 offset),
    computed like learned_optimization's ``param_to_decay(decay_to_param(beta0) + offset)``."""
    out = []
    for key, init in (("decays/momentum", self.initial_momentum_decays), ("decays/rms", self.initial_rms_decays),
                      ("decays/adafactor", self.initial_adafactor_decays)):
      base = tf.constant(np.log(1.0 - np.asarray(init, np.float64)) / 10.0, dtype)
      out.append(1.0 - tf.exp(10.0 * (base + _as(phi[key], dtype))))
    return tuple(out)

  # -- state -----------------------------------------------------------------------------------------

  def init_state(self, param, unit_axis=False):
    """Zero accumulators and t = 0 for ``param`` (shape S, or [U] + S with ``unit_axis``)."""
    shape = _static_shape(tf.convert_to_tensor(param), "param")
    dtype = tf.convert_to_tensor(param).dtype
    lead = 1 if unit_axis else 0
    if unit_axis and not shape:
      raise ValueError("unit_axis=True needs a parameter with a leading unit axis")
    k = self.num_decays
    f_dims = factored_dims(shape[lead:])
    if f_dims is not None:
      d1, d0 = f_dims
      row = [s for i, s in enumerate(shape) if i != d0 + lead]
      col = [s for i, s in enumerate(shape) if i != d1 + lead]
      fac = (tf.zeros(row + [k], dtype), tf.zeros(col + [k], dtype))
    else:
      fac = (tf.zeros(shape + [k], dtype),)
    t = tf.zeros(shape[:1] if unit_axis else [], tf.int32)
    return StarState(m=tf.zeros(shape + [k], dtype), rms=tf.zeros(shape + [1], dtype), fac=fac, t=t)

  # -- the update ------------------------------------------------------------------------------------

  def update(self, phi, state, g, learning_rate=1.0, *, param=None, unit_axis=False):
    """One STAR step for one tensor (``cores.Core.update``). Returns ``(update, new_state)``.

    Args:
      phi: dict of meta-parameters (tensors/arrays; cast to ``param``'s dtype).
      state: :class:`StarState` of this tensor.
      g: gradient, shape S of ``param`` (already elementwise-clipped if the config clips).
      learning_rate: ``step_mult`` (the agent learning rate); float or scalar tensor.
      param: the current parameter tensor, shape S (or [U] + S); required: an input feature of the MLP.
      unit_axis: treat axis 0 as independent units (see the module docstring).
    Returns:
      ``update`` of shape S (the new parameter is ``param + update``) and the new :class:`StarState`.
    """
    if param is None:
      raise ValueError("STAR needs the current parameter: call update(phi, state, g, lr, param=param)")
    param = tf.convert_to_tensor(param)
    dtype = param.dtype
    g = tf.cast(tf.convert_to_tensor(g), dtype)
    shape = _static_shape(param, "param")
    lead = 1 if unit_axis else 0
    inner = shape[lead:]
    mom_b, rms_b, fac_b = self.decays(phi, dtype)
    rms_b = tf.clip_by_value(rms_b, 0.0, 1.0)
    fac_b = tf.clip_by_value(fac_b, 0.0, 1.0)
    ge = g[..., None]

    # 1. Accumulators (before the features).
    m = mom_b * state.m + (1.0 - mom_b) * ge
    rms = rms_b * state.rms + (1.0 - rms_b) * tf.square(ge)
    grad_sqr = tf.square(ge) + _as(1e-30, dtype)
    f_dims = factored_dims(inner)
    if f_dims is not None:
      d1, d0 = f_dims[0] + lead, f_dims[1] + lead  # axes in the full tensor
      v_row = fac_b * state.fac[0] + (1.0 - fac_b) * tf.reduce_mean(grad_sqr, axis=d0)
      v_col = fac_b * state.fac[1] + (1.0 - fac_b) * tf.reduce_mean(grad_sqr, axis=d1)
      reduced_d1 = d1 - 1 if d1 > d0 else d1
      row_col_mean = tf.reduce_mean(v_row, axis=reduced_d1, keepdims=True)
      row_factor = tf.expand_dims(_safe_rsqrt(v_row / (row_col_mean + 1e-9)), d0)
      col_factor = tf.expand_dims(_safe_rsqrt(v_col), d1)
      fac_g = ge * row_factor * col_factor
      new_fac = (v_row, v_col)
    else:
      v = fac_b * state.fac[0] + (1.0 - fac_b) * grad_sqr
      fac_g = ge * _safe_rsqrt(v + 1e-9)
      new_fac = (v,)

    # 2. The 28 per-coordinate features.
    rsqrt_rms = tf.math.rsqrt(rms + 1e-6)
    adam_feats = m * rsqrt_rms
    feats = [ge, param[..., None], m, rms, adam_feats, rsqrt_rms, fac_g]
    full = shape + [self.num_decays]
    if f_dims is not None:
      row_feat = tf.broadcast_to(tf.expand_dims(v_row, d0), full)
      col_feat = tf.broadcast_to(tf.expand_dims(v_col, d1), full)
      feats += [
          row_feat, col_feat,
          tf.math.rsqrt(row_feat + 1e-8),
          tf.math.rsqrt(col_feat + 1e-8), m * row_factor * col_factor
      ]
    else:
      rsqrt_v = tf.math.rsqrt(v + 1e-8)
      feats += [v, v, rsqrt_v, rsqrt_v, m * tf.math.rsqrt(v + 1e-6)]
    x = tf.concat(feats, axis=-1)  # shape + [28]

    # 3. RMS normalisation of every channel over the tensor (per unit).
    norm_axes = list(range(lead, len(shape)))
    x = x * tf.math.rsqrt(1e-5 + tf.reduce_mean(tf.square(x), axis=norm_axes, keepdims=True))

    # 4.-5. The MLP; the 11 un-normalised time features enter layer 0 as a per-tensor (per-unit) bias.
    t = tf.cast(state.t, dtype)
    time_feat = tf.tanh(t[..., None] / tf.constant(TIMESCALES, dtype) - 1.0)  # [11] or [U, 11]
    w0 = _as(phi["mlp/w0"], dtype)
    n = self.num_normalised
    time_bias = tf.linalg.matvec(w0[n:], time_feat, transpose_a=True) + _as(phi["mlp/b0"], dtype)
    if unit_axis:
      time_bias = tf.reshape(time_bias, [shape[0]] + [1] * len(inner) + [-1])
    h = tf.reshape(tf.matmul(tf.reshape(x, [-1, n]), w0[:n]), shape + [-1]) + time_bias
    num_layers = len(self.mlp_dims) + 1
    for i in range(1, num_layers):
      h = tf.nn.relu(h)
      w = _as(phi[f"mlp/w{i}"], dtype)
      h = tf.reshape(tf.matmul(tf.reshape(h, [-1, w.shape[0]]), w), shape + [-1]) + _as(phi[f"mlp/b{i}"], dtype)
    direction, magnitude = h[..., 0], h[..., 1]
    step = direction * tf.exp(magnitude * self.exp_mult[0]) * _as(learning_rate, dtype)
    g_est = tf.reduce_mean(adam_feats, axis=-1)  # "AdamAggMo"
    nominal = self.nominal_stepsize * float(np.exp(1.0 * self.exp_mult[1])) * g_est
    reg = 1.0 - self.weight_decay * float(np.exp(0.0 * self.exp_mult[2]))
    update = -step - nominal  # official: new_param = reg * param - step - nominal
    if reg != 1.0:
      update = update - (1.0 - reg) * param
    return update, StarState(m=m, rms=rms, fac=new_fac, t=state.t + 1)


def differentiable_step(core, phi, states, params, loss_fn, lr, grad_transform=None, unit_axis=True):
  """One STAR step whose result is differentiable w.r.t. ``phi`` INCLUDING the second-order path through
  the agent gradient (docs/fidelity.md §6.5). Call it under an outer ``tf.GradientTape`` that watches phi::

    with tf.GradientTape() as outer:
      outer.watch(phi_list)
      phi = dict(zip(keys, phi_list))
      for k in range(M):
        params, states, loss = differentiable_step(core, phi, states, params,
                                                   lambda p: a2c_loss_sum(p, traj[k]), lr)
      meta_loss = loss_fn_val(params)
    meta_grad = outer.gradient(meta_loss, phi_list)

  ``loss_fn(params) -> scalar`` (e.g. the sum over units of each unit's A2C loss on a STORED rollout:
  rollout data are constants, docs/fidelity.md §5.3). The inner tape's gradient is recorded by the outer tape, so
  d g / d params (the Hessian-vector path) is part of the meta-gradient. Returns
  (new_params, new_states, loss). ``grad_transform`` (e.g. ``transforms.clip(1.0)``) maps the agent gradient
  first.

  Notes for meta-training: keep the agent parameters as a LIST of [U, ...] tensors (not one flattened
  [U, P] matrix: STAR normalises and factors per tensor) with ``unit_axis=True``; units are independent, so
  meta-gradients of unit chunks sum exactly; the whole unroll compiles with ``tf.function(jit_compile=True)``
  (nested tapes included); a pipeline reset of unit u zeroes its slice of every ``StarState`` field
  (``t`` included), e.g. with ``tf.where`` on the leading axis.
  """
  with tf.GradientTape() as inner:
    inner.watch(params)
    loss = loss_fn(params)
  grads = inner.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  if grad_transform is not None:
    grads = grad_transform(grads)
  updates, new_states = core.update_list(phi, states, grads, lr, params=params, unit_axis=unit_axis)
  return [p + u for p, u in zip(params, updates)], new_states, loss


def make_core(options=None):
  """StarCore from an options dict (``StarCore.options()`` / a file's ``__meta__``); unknown keys ignored."""
  opts = dict(DEFAULT_OPTIONS)
  if not isinstance(options or {}, dict):
    raise ValueError(f"STAR options must be a dict, got {options!r}")
  for k, v in (options or {}).items():
    if k in DEFAULT_OPTIONS and v is not None:
      opts[k] = tuple(v) if isinstance(v, (list, tuple)) else v
  return StarCore(**opts)
