"""Pure, differentiable cores of the learned optimizers (docs/fidelity.md §6.1-§6.4, paper Algorithm 1).

Each core is written once and used by both faces: the Keras optimizers (``keras_optimizers.py``) and the
meta-trainer. A core is a small object holding only sizes; all state lives in tensors passed in and out.
Every core (the three here and ``star.StarCore``) implements :class:`Core`, one interface::

  phi = core.init_meta_params(seed)                             # dict {npz key: np.ndarray}
  state = core.init_state(param)                                # zeros (here: a tuple, each S + (H,))
  update, state = core.update(phi, state, g, lr, param=param)   # update has g's shape S
  new_param = param + update                                    # differentiable w.r.t. phi

The networks here are coordinatewise: every scalar of ``g`` is an independent sequence with its own hidden
state, so ``g`` may have any shape, including a leading unit axis (``param`` and ``unit_axis`` do not change
their update). ``g`` enters under stop-gradient (Algorithm 1, line 1): the meta-gradient flows only through
phi and the hidden-state chain.

The meta-parameter dict uses the project's ``.npz`` keys with Keras ``GRUCell`` layout (``reset_after=True``,
gate order z, r, h; ``bias[0]`` input biases, ``bias[1]`` recurrent biases) and Dense heads
``<mlp>/dense_<i>/{kernel,bias}`` for the hidden layers and ``<mlp>/out/{kernel,bias}`` for the output.
"""

import numpy as np
import tensorflow as tf

LEARNED_NAMES = ("optim4rl", "linear_optim", "l2lgd2")
EPS = 1e-8  # Optim4RL's epsilon inside the square root (Algorithm 1).
L2L_P = 10.0  # L2LGD² input preprocessing constant (docs/fidelity.md §6.4).
_LECUN_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to ±2.
_COMPILED_UPDATES = {}  # (core class, mlp_dims, hidden_size) -> the shared XLA-compiled ``update``


def positive_int(value, what):
  """``value`` as an int if it is an integer > 0; one ValueError naming ``what`` otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{what} must be a positive integer, got {value!r}")
  return int(value)


def positive_ints(values, what):
  """``values`` (a sequence of integers > 0) as a tuple of ints; one ValueError naming ``what`` otherwise."""
  if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
    raise ValueError(f"{what} must be a sequence of positive integers, got {values!r}")
  values = tuple(values)
  for v in values:
    positive_int(v, f"every entry of {what} {values!r}")
  return tuple(int(v) for v in values)


# ----------------------------------------------------------------------------------------------------
# Shapes and initialisation (flax defaults, docs/fidelity.md §0.2 and §6.1).


def gru_shapes(prefix, input_dim, hidden_size):
  """Shapes of a Keras GRUCell(reset_after=True) stored under ``prefix``."""
  return {
      f"{prefix}/kernel": (input_dim, 3 * hidden_size),
      f"{prefix}/recurrent_kernel": (hidden_size, 3 * hidden_size),
      f"{prefix}/bias": (2, 3 * hidden_size),
  }


def mlp_shapes(prefix, input_dim, mlp_dims, output_dim):
  """Shapes of a ReLU MLP head ``input_dim -> mlp_dims -> output_dim`` stored under ``prefix``."""
  shapes, fan_in = {}, input_dim
  for i, width in enumerate(mlp_dims):
    shapes[f"{prefix}/dense_{i}/kernel"] = (fan_in, width)
    shapes[f"{prefix}/dense_{i}/bias"] = (width,)
    fan_in = width
  shapes[f"{prefix}/out/kernel"] = (fan_in, output_dim)
  shapes[f"{prefix}/out/bias"] = (output_dim,)
  return shapes


def lecun_normal(shape, seed):
  """flax/Keras LeCun-normal: truncated normal (±2σ) with std sqrt(1/fan_in)/0.8796, fan_in = shape[0]."""
  std = np.sqrt(1.0 / shape[0]) / _LECUN_TRUNC_STD
  return (std * tf.random.stateless_truncated_normal(shape, seed=seed)).numpy()


def orthogonal(n, seed):
  """An (n, n) orthogonal matrix (QR of a normal matrix, signs fixed by diag(R), like jax/Keras)."""
  a = tf.random.stateless_normal((n, n), seed=seed, dtype=tf.float64).numpy()
  q, r = np.linalg.qr(a)
  return (q * np.sign(np.diag(r))).astype(np.float32)


def init_from_shapes(shapes, seed):
  """Initialises every entry of ``shapes`` like flax: kernels LeCun-normal, recurrent kernels as three
  separately orthogonal (H, H) gate blocks, biases zero. ``seed`` is an int; entries get derived seeds."""
  phi = {}
  for i, (key, shape) in enumerate(sorted(shapes.items())):
    sub = (int(seed) % (2**31), i)
    if key.endswith("/bias"):
      phi[key] = np.zeros(shape, np.float32)
    elif key.endswith("/recurrent_kernel"):
      h = shape[0]
      blocks = [orthogonal(h, (sub[0], 1000 * (i + 1) + j)) for j in range(3)]
      phi[key] = np.concatenate(blocks, axis=1)
    else:
      phi[key] = lecun_normal(shape, sub).astype(np.float32)
  return phi


# ----------------------------------------------------------------------------------------------------
# The building blocks, on coordinates in feature-major layout: x [in, N], h [H, N].
# (Feature-major keeps every gate slice contiguous and every matmul a wide [out, in] x [in, N] product;
# measured 2-3x faster than [N, H] on CPU, and it fuses well under XLA.)


def gru_step(phi, prefix, x, h):
  """One Keras GRUCell(reset_after=True) step on feature-major tensors: x [in, N], h [H, N] -> h' [H, N].

  z = σ(x Wz + bz + h Uz + cz); r = σ(x Wr + br + h Ur + cr); n = tanh(x Wh + bh + r ⊙ (h Uh + ch));
  h' = z ⊙ h + (1 − z) ⊙ n   (flax's GRUCell, with Keras's extra recurrent biases for z and r).
  """
  kernel, rec, bias = phi[f"{prefix}/kernel"], phi[f"{prefix}/recurrent_kernel"], phi[f"{prefix}/bias"]
  hidden = rec.shape[0]
  if kernel.shape[0] == 1:
    xw = tf.transpose(kernel) * x + bias[0][:, None]  # [3H, 1] * [1, N]: a broadcast, not a matmul.
  else:
    xw = tf.matmul(kernel, x, transpose_a=True) + bias[0][:, None]
  hw = tf.matmul(rec, h, transpose_a=True) + bias[1][:, None]
  zr = tf.sigmoid(xw[:2 * hidden] + hw[:2 * hidden])
  z, r = zr[:hidden], zr[hidden:]
  n = tf.tanh(xw[2 * hidden:] + r * hw[2 * hidden:])
  return n + z * (h - n)  # = z*h + (1-z)*n with one op fewer


def mlp(phi, prefix, x, num_hidden_layers):
  """ReLU MLP head on feature-major x [in, N]: ``num_hidden_layers`` Dense+ReLU, then linear ``out``."""
  for i in range(num_hidden_layers):
    x = tf.nn.relu(
        tf.matmul(phi[f"{prefix}/dense_{i}/kernel"], x, transpose_a=True) + phi[f"{prefix}/dense_{i}/bias"][:, None])
  return tf.matmul(phi[f"{prefix}/out/kernel"], x, transpose_a=True) + phi[f"{prefix}/out/bias"][:, None]


# ----------------------------------------------------------------------------------------------------
# The cores.


class Core:
  """The interface of a learned-optimizer core (the GRU cores below and ``star.StarCore``).

  A core holds sizes and constants only. ``update`` is the one step function of every core: the same
  arguments and the same result, an update to ADD to the parameter and the new state.
  """
  name = None

  def meta_param_shapes(self):
    """Dict {npz key: shape} of phi."""
    raise NotImplementedError

  def init_meta_params(self, seed=0):
    """Fresh phi like the official code, deterministic in ``seed``: dict {key: float32 array}."""
    raise NotImplementedError

  def num_meta_params(self):
    return int(sum(np.prod(s) for s in self.meta_param_shapes().values()))

  def init_state(self, param, unit_axis=False):
    """The zero state of a parameter tensor ``param`` of shape S (or [U] + S with ``unit_axis``)."""
    raise NotImplementedError

  def init_states(self, params, unit_axis=False):
    """``init_state`` over a list of parameter tensors."""
    return [self.init_state(p, unit_axis) for p in params]

  def update(self, phi, state, g, learning_rate=1.0, *, param=None, unit_axis=False):
    """One step for one parameter tensor. Returns ``(update, new_state)``.

    Args:
      phi: dict {npz key: tensor or array} of meta-parameters.
      state: this tensor's state (as ``init_state`` makes it).
      g: the gradient, shape S (or [U] + S).
      learning_rate: the agent learning rate (float or scalar tensor).
      param: the current parameter, shape of ``g``; read by cores whose features include it (STAR).
      unit_axis: axis 0 of ``g`` holds independent units (STAR; coordinatewise cores ignore it).
    Returns:
      ``update`` of ``g``'s shape (the new parameter is ``param + update``) and the new state.
    """
    raise NotImplementedError

  def update_list(self, phi, states, grads, learning_rate=1.0, *, params=None, unit_axis=False):
    """``update`` over lists of tensors. Returns ``(updates list, new states list)``."""
    params = [None] * len(grads) if params is None else params
    out = [
        self.update(phi, s, g, learning_rate, param=p, unit_axis=unit_axis) for s, g, p in zip(states, grads, params)
    ]
    return [u for u, _ in out], [s for _, s in out]


class _Core(Core):
  """Shared plumbing of the GRU cores: sizes, shapes, init, flattening to coordinates."""
  num_states = 1

  def __init__(self, mlp_dims=(16, 16), hidden_size=8):
    self.mlp_dims = positive_ints(mlp_dims, "mlp_dims")
    self.hidden_size = positive_int(hidden_size, "hidden_size")
    self._compiled_update = None

  def compiled_update(self):
    """``update`` as an XLA-compiled ``tf.function`` (same math; about 3x faster on CPU for the forward
    pass). Use it where no gradient flows through the call (fixed-phi agents; the Keras face compiles its
    own step of all variables, ``keras_optimizers.fused_update``). Cores of the
    same kind and sizes share one function, so a new optimizer does not recompile the same programs."""
    if self._compiled_update is None:
      key = (type(self), self.mlp_dims, self.hidden_size)
      if key not in _COMPILED_UPDATES:
        _COMPILED_UPDATES[key] = tf.function(self.update, jit_compile=True)
      self._compiled_update = _COMPILED_UPDATES[key]
    return self._compiled_update

  def init_meta_params(self, seed=0):
    return init_from_shapes(self.meta_param_shapes(), seed)

  def init_state(self, param, unit_axis=False):
    """Zero hidden states for a parameter tensor of shape S: a tuple of ``num_states`` tensors of shape
    S + (hidden_size,) (a unit axis is just one more coordinate axis)."""
    del unit_axis
    shape = tf.concat([tf.shape(param), [self.hidden_size]], 0)
    return tuple(tf.zeros(shape, param.dtype) for _ in range(self.num_states))

  def update(self, phi, state, g, learning_rate=1.0, *, param=None, unit_axis=False):
    """``Core.update``: ``g`` of any shape S, hidden states of shape S + (H,); returns ``(update, new
    states)`` with ``update`` of shape S. ``param`` and ``unit_axis`` do not change the result."""
    del param, unit_axis  # coordinatewise: the update reads only the gradient and the hidden states
    g = tf.stop_gradient(tf.convert_to_tensor(g))
    shape = tf.shape(g)
    flat_g = tf.reshape(g, [1, -1])
    flat_h = tuple(tf.transpose(tf.reshape(h, [-1, self.hidden_size])) for h in state)
    step, new_h = self._update_flat(phi, flat_h, flat_g)
    delta = -learning_rate * tf.reshape(step, shape)
    new_state = tuple(tf.reshape(tf.transpose(h), tf.shape(old)) for h, old in zip(new_h, state))
    return delta, new_state

  def init_state_feature_major(self, shape, dtype=tf.float32):
    """Zero hidden states in the feature-major layout of ``update_feature_major``: [H] + shape."""
    return tuple(tf.zeros([self.hidden_size] + list(shape), dtype) for _ in range(self.num_states))

  def update_feature_major(self, phi, state, g, learning_rate=1.0):
    """``update`` with hidden states stored feature-major, shape (H,) + S for g of shape S.

    The same math without the transposes: the meta-trainer keeps every unit's hidden state in this
    layout, so a whole population of agents is one [H, N] computation per update."""
    g = tf.stop_gradient(tf.convert_to_tensor(g))
    shape = tf.shape(g)
    flat_h = tuple(tf.reshape(h, [self.hidden_size, -1]) for h in state)
    step, new_h = self._update_flat(phi, flat_h, tf.reshape(g, [1, -1]))
    delta = -learning_rate * tf.reshape(step, shape)
    return delta, tuple(tf.reshape(h, tf.shape(old)) for h, old in zip(new_h, state))

  def _update_flat(self, phi, flat_h, g):
    """g [1, N], hidden states [H, N] -> (step [1, N] before the -lr factor, new hidden states)."""
    raise NotImplementedError


class Optim4RLCore(_Core):
  """Optim4RL (Algorithm 1): Δθ = −α · sign(g)·exp(o1) / sqrt(exp(o2) + 1e-8),
  o1 = MLP1(GRU1(h1, g)), o2 = MLP2(GRU2(h2, g²)). sign(0) = 0, so a zero gradient gives a zero update."""
  name = "optim4rl"
  num_states = 2

  def meta_param_shapes(self):
    h = self.hidden_size
    shapes = {}
    for i in (1, 2):
      shapes.update(gru_shapes(f"rnn{i}", 1, h))
      shapes.update(mlp_shapes(f"mlp{i}", h, self.mlp_dims, 1))
    return shapes

  def _update_flat(self, phi, flat_h, g):
    h1 = gru_step(phi, "rnn1", g, flat_h[0])
    h2 = gru_step(phi, "rnn2", tf.square(g), flat_h[1])
    o1 = mlp(phi, "mlp1", h1, len(self.mlp_dims))
    o2 = mlp(phi, "mlp2", h2, len(self.mlp_dims))
    step = tf.sign(g) * tf.exp(o1) * tf.math.rsqrt(tf.exp(o2) + EPS)
    return step, (h1, h2)


class LinearOptimCore(_Core):
  """LinearOptim (docs/fidelity.md §6.3): Δθ = −α · (exp(o1)·g + exp(o2)·o3), (o1, o2, o3) = MLP(GRU(h, g))."""
  name = "linear_optim"

  def meta_param_shapes(self):
    shapes = gru_shapes("rnn", 1, self.hidden_size)
    shapes.update(mlp_shapes("mlp", self.hidden_size, self.mlp_dims, 3))
    return shapes

  def _update_flat(self, phi, flat_h, g):
    h = gru_step(phi, "rnn", g, flat_h[0])
    o = mlp(phi, "mlp", h, len(self.mlp_dims))
    step = tf.exp(o[0:1]) * g + tf.exp(o[1:2]) * o[2:3]
    return step, (h,)


def l2l_preprocess(g, p=L2L_P, eps=EPS):
  """Andrychowicz et al.'s gradient preprocessing (docs/fidelity.md §6.4): [1, N] -> [2, N]."""
  ell = tf.math.log(tf.abs(g) + eps) / p
  big = ell >= -1.0
  first = tf.where(big, ell, -tf.ones_like(g))
  second = tf.where(big, tf.sign(g), float(np.exp(p)) * g)
  return tf.concat([first, second], axis=0)


class L2LGD2Core(_Core):
  """L2LGD² (docs/fidelity.md §6.4): Δθ = −α · exp(o) · g, o = MLP(GRU(h, preprocess(g)))."""
  name = "l2lgd2"

  def meta_param_shapes(self):
    shapes = gru_shapes("rnn", 2, self.hidden_size)
    shapes.update(mlp_shapes("mlp", self.hidden_size, self.mlp_dims, 1))
    return shapes

  def _update_flat(self, phi, flat_h, g):
    h = gru_step(phi, "rnn", l2l_preprocess(g), flat_h[0])
    o = mlp(phi, "mlp", h, len(self.mlp_dims))
    return tf.exp(o) * g, (h,)


CORES = {c.name: c for c in (Optim4RLCore, LinearOptimCore, L2LGD2Core)}


def make_core(name, mlp_dims=(16, 16), hidden_size=8):
  """Returns the core for ``name`` (one of ``LEARNED_NAMES``)."""
  if name not in CORES:
    raise ValueError(f"Unknown learned optimizer {name!r}; valid names: {', '.join(LEARNED_NAMES)}")
  return CORES[name](mlp_dims=mlp_dims, hidden_size=hidden_size)
