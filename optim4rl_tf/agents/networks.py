"""Unit-batched actor-critic networks of docs/fidelity.md §3 (official ``ActorVCriticNet``).

Every parameter tensor carries a LEADING UNIT AXIS ``U``: ``U`` independent agents (the seeds of an
evaluation, or the training units of pipeline meta-training) are evaluated with one batched graph, and the
gradient of a sum over units of per-unit losses gives every unit its own gradient.

Parameters are a plain Python list of tensors, in the order of :attr:`ActorCriticNet.param_names`. The names
ARE the official flax paths (``feature_net/layers_1/kernel``, ``actor_net/bias``, ...), so converting to and
from official weights is a dictionary look-up (the golden file stores them under exactly these paths).

Feature nets (chosen from the env name like the official code):
  * ``small`` (name contains "small"): Flatten -> Dense(32) -> ReLU      (flax path feature_net/layers_1)
  * ``big``   (name contains "big"):   Conv(16, 2x2, SAME) -> ReLU -> Flatten -> Dense(32) -> ReLU
                                       (feature_net/layers_0 and feature_net/layers_3)
  * ``catch``:                         Flatten -> Dense(256) -> ReLU     (feature_net/layers_1)
Heads: actor Dense(num_actions) (logits), critic Dense(1) squeezed.

Conv layout quirk (docs/fidelity.md §3.2): the (N+1, rows, cols) observation is read channels-last, so the 2x2 SAME
window slides over the (object-channel, row) axes and ``cols`` is the input-feature axis; kernel shape
(2, 2, cols, 16), output (N+1, rows, 16), flattened row-major.

Usage::

  net = make_network("big_dense_long", obs_shape=(5, 15, 11), num_actions=9)
  params = net.init(seeds)                 # seeds: int32 [U, 2] (one stateless key per unit) -> list [U, ...]
  logits, values = net.apply(params, obs)  # obs [U, B, *obs_shape] -> [U, B, A], [U, B]
"""

import math
from typing import NamedTuple, Tuple

import numpy as np
import tensorflow as tf

# flax's LeCun-normal: truncated normal on [-2, 2] rescaled to unit variance.
_TRUNC_STD = 0.87962566103423978

CONV_FORMS = ("auto", "conv2d", "im2col", "shifted")
_MAX_UNROLLED_UNITS = 16


class ParamSpec(NamedTuple):
  name: str  # flax path, e.g. "feature_net/layers_1/kernel"
  shape: Tuple[int, ...]  # without the unit axis
  fan_in: int  # 0 for biases (zero-initialised)


def net_kind(env_name):
  """'small' | 'big' | 'catch' for an environment name (docs/fidelity.md §3.1)."""
  name = env_name.lower()
  if name == "catch":
    return "catch"
  if "small" in name:
    return "small"
  if "big" in name:
    return "big"
  raise ValueError(f"No agent network for environment {env_name!r}: expected 'catch' or a name "
                   "containing 'small' or 'big'")


def _dense_specs(path, n_in, n_out):
  return [ParamSpec(f"{path}/kernel", (n_in, n_out), n_in), ParamSpec(f"{path}/bias", (n_out,), 0)]


def param_specs(kind, obs_shape, num_actions):
  """List of :class:`ParamSpec` (order = parameter list order) for one agent."""
  obs_shape = tuple(int(d) for d in obs_shape)
  if kind in ("small", "catch"):
    hidden = 32 if kind == "small" else 256
    specs = _dense_specs("feature_net/layers_1", int(np.prod(obs_shape)), hidden)
  elif kind == "big":
    if len(obs_shape) != 3:
      raise ValueError(f"big-grid network needs an (N+1, rows, cols) observation, got {obs_shape}")
    c0, rows, cols = obs_shape
    hidden = 32
    specs = [
        ParamSpec("feature_net/layers_0/kernel", (2, 2, cols, 16), 2 * 2 * cols),
        ParamSpec("feature_net/layers_0/bias", (16,), 0)
    ]
    specs += _dense_specs("feature_net/layers_3", c0 * rows * 16, hidden)
  else:
    raise ValueError(f"Unknown network kind {kind!r}")
  specs += _dense_specs("actor_net", hidden, num_actions)
  specs += _dense_specs("critic_net", hidden, 1)
  return specs


def count_params(env_name, obs_shape, num_actions):
  """Number of scalar parameters of one agent."""
  return sum(int(np.prod(s.shape)) for s in param_specs(net_kind(env_name), obs_shape, num_actions))


def unit_seeds(seed, num_units, offset=0):
  """Stateless keys int32 [num_units, 2] for units ``offset .. offset+num_units-1`` of base ``seed``.

  Unit u's key is (seed, u): a unit's initial parameters depend only on (seed, u), so seed s of a
  10-seed run starts exactly like the same unit index in any other run with the same base seed.
  """
  u = tf.range(offset, offset + num_units, dtype=tf.int32)
  return tf.stack([tf.fill([num_units], tf.cast(seed, tf.int32)), u], axis=1)


def dim(x, i):
  """Static size of axis i of x where known, else the dynamic one."""
  d = x.shape[i]
  return d if d is not None else tf.shape(x)[i]


def _dense(x, kernel, bias):
  # x [U, B, I], kernel [U, I, O], bias [U, O]
  return tf.einsum("ubi,uio->ubo", x, kernel) + bias[:, None, :]


def _shift_pad(x, di, dj):
  """x [U, B, S1, S2, F] -> x[:, :, di:, dj:, :] zero-padded at the end back to [S1, S2] (SAME, k=2)."""
  if di == 0 and dj == 0:
    return x
  y = x[:, :, di:, dj:, :]
  return tf.pad(y, [[0, 0], [0, 0], [0, di], [0, dj], [0, 0]])


def _auto_form(num_units, batch):
  """Fastest exact form on CPU by our measurements (2 cores, bdl shapes): one tf.nn.conv2d per unit
  for few units; for many units with tiny per-unit batches (meta-training units of one env) the single
  batched einsum of im2col (the per-unit conv ops would be too small); conv2d again for large batches."""
  if num_units is not None and num_units <= _MAX_UNROLLED_UNITS:
    return "conv2d"
  if batch is not None and batch <= 8:
    return "im2col"
  return "conv2d"


def conv2x2_same(x, kernel, bias, form="auto"):
  """Unit-batched 2x2 stride-1 SAME convolution, channels-last.

  x [U, B, S1, S2, F], kernel [U, 2, 2, F, O], bias [U, O] -> [U, B, S1, S2, O].
  SAME with an even kernel pads 0 before / 1 after (flax and TF agree), i.e.
  out[i, j] = sum_{di, dj} x[i + di, j + dj] @ K[di, dj] with zeros beyond the end.

  forms: "im2col" (one einsum on the 4 shifted copies concatenated along features), "shifted" (four
  einsums summed), "conv2d" (tf.nn.conv2d per unit: unrolled for a static U <= 16, else tf.map_fn).
  "auto" picks among them by shape (see ``_auto_form``). All forms are exact (equal up to float
  rounding); pick with ``launch/benchmark.py a2c --conv_forms=...``.
  """
  f, o = x.shape[-1], kernel.shape[-1]
  if form == "auto":
    form = _auto_form(x.shape[0], x.shape[1])
  if form == "im2col":
    patches = tf.concat([_shift_pad(x, di, dj) for di in (0, 1) for dj in (0, 1)], axis=-1)
    k = tf.reshape(kernel, [-1, 4 * f, o])  # (di, dj, f) row-major == concat order
    out = tf.einsum("ubijf,ufo->ubijo", patches, k)
  elif form == "shifted":
    out = None
    for di in (0, 1):
      for dj in (0, 1):
        term = tf.einsum("ubijf,ufo->ubijo", _shift_pad(x, di, dj), kernel[:, di, dj])
        out = term if out is None else out + term
  elif form == "conv2d":
    u = x.shape[0]
    if u is not None and u <= _MAX_UNROLLED_UNITS:
      # One plain conv per unit (independent ops: the executor runs them in parallel).
      outs = [tf.nn.conv2d(x[i], kernel[i], strides=1, padding="SAME") for i in range(u)]
      out = outs[0][None] if u == 1 else tf.stack(outs, axis=0)
    else:
      out = tf.map_fn(lambda a: tf.nn.conv2d(a[0], a[1], strides=1, padding="SAME"), (x, kernel),
                      fn_output_signature=x.dtype)
  else:
    raise ValueError(f"Unknown conv form {form!r}; valid: {CONV_FORMS}")
  return out + bias[:, None, None, None, :]


class ActorCriticNet:
  """Static description + pure functions of the §3 actor-critic for one environment.

  Attributes: ``kind``, ``obs_shape``, ``num_actions``, ``specs``, ``param_names``, ``num_params``.
  """

  def __init__(self, env_name, obs_shape, num_actions, conv_form="auto"):
    self.env_name = env_name
    self.kind = net_kind(env_name)
    self.obs_shape = tuple(int(d) for d in obs_shape)
    self.num_actions = int(num_actions)
    self.specs = param_specs(self.kind, self.obs_shape, self.num_actions)
    self.param_names = [s.name for s in self.specs]
    self.num_params = sum(int(np.prod(s.shape)) for s in self.specs)
    if conv_form not in CONV_FORMS:
      raise ValueError(f"Unknown conv form {conv_form!r}; valid: {CONV_FORMS}")
    self.conv_form = conv_form

  # ----- initialisation ---------------------------------------------------------------------------
  def init_one(self, key):
    """Parameters of ONE agent (no unit axis) from a stateless key int32 [2]."""
    out = []
    for i, s in enumerate(self.specs):
      if s.fan_in == 0:
        out.append(tf.zeros(s.shape, tf.float32))
      else:
        k = tf.random.experimental.stateless_fold_in(key, i)
        std = math.sqrt(1.0 / s.fan_in) / _TRUNC_STD
        out.append(tf.random.stateless_truncated_normal(s.shape, seed=k, dtype=tf.float32) * std)
    return out

  def init(self, keys):
    """Independent parameters per unit: keys int32 [U, 2] -> list of [U, *shape] tensors.

    Each unit's parameters depend only on its own key (LeCun-normal kernels, zero biases).
    """
    keys = tf.convert_to_tensor(keys, tf.int32)
    sig = [tf.TensorSpec(s.shape, tf.float32) for s in self.specs]
    return list(tf.map_fn(self.init_one, keys, fn_output_signature=sig))

  # ----- forward ----------------------------------------------------------------------------------
  def features(self, params, obs):
    """obs [U, B, *obs_shape] -> features [U, B, H]."""
    u_dim, b_dim = dim(obs, 0), dim(obs, 1)
    if self.kind in ("small", "catch"):
      x = tf.reshape(obs, [u_dim, b_dim, int(np.prod(self.obs_shape))])
      return tf.nn.relu(_dense(x, params[0], params[1]))
    x = conv2x2_same(obs, params[0], params[1], form=self.conv_form)
    x = tf.nn.relu(x)
    x = tf.reshape(x, [u_dim, b_dim, self.specs[2].shape[0]])
    return tf.nn.relu(_dense(x, params[2], params[3]))

  def apply(self, params, obs):
    """Forward pass. params: list [U, ...]; obs [U, B, *obs_shape] -> (logits [U, B, A], values [U, B])."""
    h = self.features(params, obs)
    logits = _dense(h, params[-4], params[-3])
    values = _dense(h, params[-2], params[-1])[..., 0]
    return logits, values

  def logits(self, params, obs):
    """Actor logits only (cheaper: skips the critic head). obs [U, B, ...] -> [U, B, A]."""
    h = self.features(params, obs)
    return _dense(h, params[-4], params[-3])

  __call__ = apply

  # ----- conversions ------------------------------------------------------------------------------
  def from_flax(self, flat, prefix=""):
    """Builds a U=1 parameter list from a dict {flax path: array} (e.g. the golden file)."""
    return [tf.constant(np.asarray(flat[prefix + n], np.float32)[None]) for n in self.param_names]

  def to_dict(self, params):
    """{flax path: tensor} view of a parameter list."""
    return dict(zip(self.param_names, params))


def make_network(env_name, obs_shape, num_actions, conv_form="auto"):
  """Returns the :class:`ActorCriticNet` for an environment (see module docstring)."""
  return ActorCriticNet(env_name, obs_shape, num_actions, conv_form=conv_form)
