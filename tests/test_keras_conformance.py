"""Keras's generic optimizer checks, adapted from keras/src/optimizers/optimizer_test.py and adam_test.py,
run on the four learned optimizers and on ``keras.optimizers.Adam`` as a control.

Where Keras's tests rely on SGD's closed form, each check here compares against a reference run of the same
optimizer (same meta-parameters: same seed) fed the gradients Keras should have produced (clipped, averaged,
unscaled ...), comparing the variables and the optimizer's whole state; a companion assertion shows that the
option changes the result, so the main assertion could fail. Tiny variables and models keep it fast.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "optim4rl": optim4rl_tf.Optim4RL,
    "linear_optim": optim4rl_tf.LinearOptim,
    "l2lgd2": optim4rl_tf.L2LGD2,
    "star": optim4rl_tf.STAR
}
NAMES = list(OPTIMIZERS)
V0 = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
B0 = np.array([0.5, -1.0, 0.25], np.float32)
# Gradients of very different norms (3.7, 0.4, 4.7), so that clipping by norm changes the result.
GRADS = [
    np.array(g, np.float32)
    for g in ([[1.0, -2.0], [0.5, 3.0]], [[0.125, 0.25], [-0.25, 0.0625]], [[-4.0, 1.0], [2.0, -0.5]])
]
BIAS_GRADS = [np.array(g, np.float32) for g in ([2.0, -1.0, 0.5], [0.25, 0.5, -0.125], [-1.0, 3.0, 1.0])]

pytestmark = pytest.mark.parametrize("name", NAMES)


def make(name, **kwargs):
  kwargs.setdefault("learning_rate", 0.1)
  return OPTIMIZERS[name](**kwargs)


def run(opt, grads=GRADS, bias_grads=None, v0=V0, b0=B0):
  """Applies the gradient sequence(s) to fresh variables; returns the variables."""
  v = keras.Variable(v0, name="v")
  if bias_grads is None:
    for g in grads:
      opt.apply_gradients([(tf.constant(g), v)])
    return [v]
  b = keras.Variable(b0, name="b")
  for g, gb in zip(grads, bias_grads):
    opt.apply_gradients([(tf.constant(g), v), (tf.constant(gb), b)])
  return [v, b]


def assert_same(a, b, rtol=1e-5, atol=1e-6):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def differs(a, b, tol=1e-4):
  return any(not np.allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol) for x, y in zip(a, b))


def state(opt):
  """The optimizer's state variables (without iterations and the learning rate)."""
  return [v.numpy() for v in opt.variables[2:]]


def tiny_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


def tiny_data(n=16):
  rng = np.random.RandomState(0)
  x = rng.randn(n, 3).astype(np.float32)
  return x, (x @ np.array([[1.0], [-1.0], [0.5]], np.float32)).astype(np.float32)


def test_config_round_trip(name):
  opt = make(name,
             clipnorm=1.0,
             weight_decay=0.01,
             use_ema=True,
             ema_momentum=0.9,
             gradient_accumulation_steps=2,
             loss_scale_factor=4.0)
  config = opt.get_config()
  clone = type(opt).from_config(dict(config))
  assert clone.get_config() == config
  restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  assert type(restored) is type(opt) and restored.get_config() == config
  assert_same(run(opt), run(clone), rtol=0, atol=0)
  assert_same(state(opt), state(clone), rtol=0, atol=0)


def test_only_one_clip_argument(name):
  with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`"):
    make(name, clipnorm=0.1, clipvalue=0.1)


def _clip(kind, grads):
  if kind == "clipvalue":
    return [np.clip(g, -1.0, 1.0) for g in grads]
  if kind == "clipnorm":
    return [g * min(1.0, 1.0 / np.linalg.norm(g)) for g in grads]
  total = np.sqrt(sum(np.sum(g**2) for g in grads))  # global_clipnorm
  return [g * min(1.0, 1.0 / total) for g in grads]


@pytest.mark.parametrize("kind", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_gradient_clipping(name, kind):
  opt, ref, plain = make(name, **{kind: 1.0}), make(name), make(name)
  assert getattr(opt, kind) == 1.0
  pairs = [_clip(kind, [g, gb]) for g, gb in zip(GRADS, BIAS_GRADS)]
  clipped = run(opt, GRADS, BIAS_GRADS)
  expected = run(ref, [p[0] for p in pairs], [p[1] for p in pairs])
  assert_same(clipped, expected)
  assert_same(state(opt), state(ref))
  assert differs(run(plain, GRADS, BIAS_GRADS), expected)


def test_loss_scale_factor(name):
  opt, ref = make(name, loss_scale_factor=8.0), make(name)
  assert float(opt.scale_loss(1.0)) == 8.0
  assert_same(run(opt, [8.0 * g for g in GRADS]), run(ref))
  assert_same(state(opt), state(ref))
  unscaled = make(name)
  run(unscaled, [8.0 * g for g in GRADS])
  assert differs(state(unscaled), state(ref))


@pytest.mark.parametrize("exclude_by", ["var_names", "var_list"])
def test_weight_decay_and_exclusions(name, exclude_by):
  wd, lr = 0.05, 0.1
  opt, ref = make(name, weight_decay=wd, learning_rate=lr), make(name, learning_rate=lr)
  a, skip = keras.Variable(V0, name="a"), keras.Variable(V0, name="skip_me")
  if exclude_by == "var_names":
    opt.exclude_from_weight_decay(var_names=["skip"])
  else:
    opt.exclude_from_weight_decay(var_list=[skip])
  a_ref, skip_ref = keras.Variable(V0, name="a"), keras.Variable(V0, name="skip_me")
  for g in GRADS:
    opt.apply_gradients([(tf.constant(g), a), (tf.constant(g), skip)])
    a_ref.assign(a_ref.numpy() * (1.0 - wd * lr))  # decoupled weight decay, before the step
    ref.apply_gradients([(tf.constant(g), a_ref), (tf.constant(g), skip_ref)])
  assert_same([a, skip], [a_ref, skip_ref])
  assert differs([a], [skip])


def test_ema_and_overwrite(name):
  opt, ref = make(name, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3), make(name)
  v, v_ref = keras.Variable(V0), keras.Variable(V0)
  average = None
  for step, g in enumerate(GRADS):
    opt.apply_gradients([(tf.constant(g), v)])
    ref.apply_gradients([(tf.constant(g), v_ref)])
    average = v_ref.numpy() if average is None else 0.9 * average + 0.1 * v_ref.numpy()
    np.testing.assert_allclose(opt._model_variables_moving_average[0].numpy(), average, rtol=1e-5, atol=1e-6)
    if step < 2:
      np.testing.assert_allclose(v.numpy(), v_ref.numpy(), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(v.numpy(), average, rtol=1e-5, atol=1e-6)  # overwritten on the 3rd step
  assert differs([v], [v_ref])


def test_gradient_accumulation(name):
  grads = GRADS + [-0.5 * g for g in GRADS[::-1]]
  opt, ref = make(name, gradient_accumulation_steps=3), make(name)
  assert opt.gradient_accumulation_steps == 3
  v, v_ref = keras.Variable(V0), keras.Variable(V0)
  for call, g in enumerate(grads):
    before = v.numpy()
    opt.apply_gradients([(tf.constant(g), v)])
    assert int(opt._iterations.numpy()) == call + 1
    assert int(opt.iterations.numpy()) == (call + 1) // 3
    if call % 3 < 2:
      np.testing.assert_array_equal(v.numpy(), before)
      np.testing.assert_allclose(opt._accumulated_gradients[0].numpy(), sum(grads[call - call % 3:call + 1]), rtol=1e-6)
    else:
      ref.apply_gradients([(tf.constant(np.mean(grads[call - 2:call + 1], axis=0)), v_ref)])
      np.testing.assert_allclose(v.numpy(), v_ref.numpy(), rtol=1e-5, atol=1e-6)
      assert not np.array_equal(v.numpy(), before)
  assert int(ref.iterations.numpy()) == int(opt.iterations.numpy()) == 2


def test_iterations_counter(name):
  opt = make(name)
  v = keras.Variable(V0)
  assert int(opt.iterations.numpy()) == 0
  for i in range(2):
    opt.apply_gradients([(tf.constant(GRADS[i]), v)])
    assert int(opt.iterations.numpy()) == i + 1


def test_set_weights_and_variables(name):
  x1 = keras.Variable(V0)
  opt1, opt2 = make(name), make(name)
  opt1.apply_gradients([(tf.constant(GRADS[0]), x1)])
  with pytest.raises(ValueError, match="You are calling"):
    opt2.set_weights(opt1.variables)
  x2, x3 = keras.Variable(x1.numpy()), keras.Variable(x1.numpy())
  opt2.build([x2])
  assert len(opt2.variables) == len(opt1.variables)
  opt2.set_weights(opt1.variables)
  assert_same(opt2.variables, opt1.variables, rtol=0, atol=0)
  # The variables hold the whole state: one more step from equal values gives equal results, unlike the
  # same step by a fresh optimizer.
  opt1.apply_gradients([(tf.constant(GRADS[1]), x1)])
  opt2.apply_gradients([(tf.constant(GRADS[1]), x2)])
  make(name).apply_gradients([(tf.constant(GRADS[1]), x3)])
  assert_same([x2], [x1], rtol=0, atol=0)
  assert differs([x3], [x1], tol=1e-6)


def test_plain_tf_variable_and_keras_variable(name):
  opt = make(name)
  kv, tv = keras.Variable(V0, name="k"), tf.Variable(V0, name="t")
  opt.apply_gradients([(tf.constant(GRADS[0]), kv), (tf.constant(GRADS[0]), tv)])
  assert int(opt.iterations.numpy()) == 1
  np.testing.assert_array_equal(tv.numpy(), kv.numpy())
  assert not np.array_equal(tv.numpy(), V0)
  with pytest.warns(UserWarning, match="Gradients do not exist"):
    opt.apply_gradients([(tf.constant(GRADS[1]), kv), (None, tv)])
  assert int(opt.iterations.numpy()) == 2
  alone = make(name)
  tv2 = tf.Variable(V0)
  for g in GRADS[:2]:
    alone.apply_gradients([(tf.constant(g), tv2)])
  np.testing.assert_allclose(tv2.numpy(), kv.numpy(), rtol=1e-6, atol=1e-7)


def test_zero_gradient(name):
  """A zero gradient is a no-op where the algorithm guarantees it (Adam from a fresh state, Optim4RL and
  L2LGD² whatever their state); LinearOptim and STAR declare that it is not, and the variable does move."""
  opt = make(name)
  guaranteed = getattr(type(opt), "zero_gradient_is_noop", True)
  v = keras.Variable(V0)
  if name != "adam":
    opt.apply_gradients([(tf.constant(GRADS[0]), v)])  # after a real step: non-zero hidden states
  before = v.numpy()
  opt.apply_gradients([(tf.zeros_like(v.value), v)])
  assert np.array_equal(v.numpy(), before) == guaranteed


def test_float16_variables(name):
  v0 = V0 / 8.0  # small values: float16 resolves steps of 1e-4
  grads = [np.ones((2, 2), np.float32)] + GRADS  # a constant gradient has zero variance: tiny epsilons
  v16 = keras.Variable(v0.astype(np.float16), dtype="float16")
  opt = make(name)
  for g in grads:
    opt.apply_gradients([(tf.constant(g.astype(np.float16)), v16)])
  assert v16.dtype == "float16" and np.all(np.isfinite(v16.numpy()))
  (v32,) = run(make(name), grads, v0=v0)
  change16, change32 = v16.numpy().astype(np.float32) - v0, v32.numpy() - v0
  np.testing.assert_allclose(change16, change32, rtol=0.05, atol=3e-4)
  assert np.abs(change32).max() > 1e-3


def test_jit_compile_fit(name):
  x, y = tiny_data()
  model = tiny_model()
  model.compile(optimizer=make(name, learning_rate=0.01), loss="mse", jit_compile=True)
  assert model.jit_compile
  before = model.get_weights()
  loss = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"]
  assert np.all(np.isfinite(loss)) and int(model.optimizer.iterations.numpy()) == 2
  assert differs(model.get_weights(), before)


@pytest.mark.parametrize("fmt", ["model.keras", "model.weights.h5"])
def test_save_load_continues_identically(name, fmt, tmp_path):
  x, y = tiny_data()
  model = tiny_model()
  model.compile(optimizer=make(name, learning_rate=0.01), loss="mse", run_eagerly=True)  # no tracing: fast
  model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
  path = str(tmp_path / fmt)
  if fmt.endswith(".keras"):
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
  else:
    model.save_weights(path)
    loaded = tiny_model()  # a fresh model and optimizer, compiled, the optimizer not built yet
    loaded.compile(optimizer=make(name, learning_rate=0.01), loss="mse", run_eagerly=True)
    if name == "adam":  # Keras's own optimizers restore their state only once built
      loaded.optimizer.build(loaded.trainable_variables)
    loaded.load_weights(path)
  model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
  loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
  assert_same(loaded.get_weights(), model.get_weights(), rtol=1e-6, atol=1e-7)
  assert_same(loaded.optimizer.variables, model.optimizer.variables, rtol=1e-6, atol=1e-7)
  assert int(loaded.optimizer.iterations.numpy()) == 4
