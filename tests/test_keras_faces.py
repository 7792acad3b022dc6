"""The Keras faces as a user meets them: string identifiers, from_pretrained defaults, the untrained-phi
warning, and saved optimizer state that does not fit refused when it is loaded."""

import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest

import optim4rl_tf
from optim4rl_tf import pretrained
from optim4rl_tf.optimizers import keras_optimizers

ALL_CLASSES = [optim4rl_tf.Optim4RL, optim4rl_tf.LinearOptim, optim4rl_tf.L2LGD2, optim4rl_tf.STAR]
UNTRAINED = keras_optimizers.UntrainedMetaParamsWarning


def data(n=64):
  rng = np.random.RandomState(0)
  x = rng.randn(n, 4).astype(np.float32)
  return x, (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32)).astype(np.float32)


def model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])


def untrained_warnings(record):
  return [w for w in record if issubclass(w.category, UNTRAINED)]


def lr_of(opt):
  return float(np.asarray(opt.learning_rate))


# --- 1. string identifiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("optim4rl", optim4rl_tf.Optim4RL), ("linear_optim", optim4rl_tf.LinearOptim),
                                       ("l2lgd2", optim4rl_tf.L2LGD2), ("star", optim4rl_tf.STAR)])
def test_string_identifier_compiles_and_fits(name, cls):
  x, y = data()
  net = model()
  net.compile(optimizer=name, loss="mse")
  assert type(net.optimizer) is cls
  before = [w.copy() for w in net.get_weights()]
  net.fit(x, y, batch_size=64, epochs=1, verbose=0)
  assert int(net.optimizer.iterations.numpy()) == 1
  assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
  assert all(np.all(np.isfinite(w)) for w in net.get_weights())
  if cls is optim4rl_tf.Optim4RL:  # the recommended shipped file, at the learning rate it is recommended at
    assert net.optimizer.pretrained == pretrained.RECOMMENDED
    want = pretrained.recommended_settings(pretrained.RECOMMENDED)["learning_rate"]
    assert lr_of(net.optimizer) == pytest.approx(want)
  else:  # no trained file ships for these: a fresh phi
    assert net.optimizer.pretrained is None and net.optimizer.meta_params_path is None


def test_string_identifier_dict_and_save_load(tmp_path):
  opt = keras.optimizers.get({"class_name": "l2lgd2", "config": {"learning_rate": 0.02, "seed": 3}})
  assert type(opt) is optim4rl_tf.L2LGD2 and opt.seed == 3 and lr_of(opt) == pytest.approx(0.02)
  x, y = data()
  net = model()
  net.compile(optimizer="optim4rl", loss="mse")
  net.fit(x, y, batch_size=32, epochs=1, verbose=0)
  net.save(str(tmp_path / "m.keras"))  # saved under the class's registered name, restored as such
  loaded = keras.models.load_model(str(tmp_path / "m.keras"))
  assert type(loaded.optimizer) is optim4rl_tf.Optim4RL and loaded.optimizer.pretrained == pretrained.RECOMMENDED
  for k, v in net.optimizer.meta_params.items():
    np.testing.assert_array_equal(loaded.optimizer.meta_params[k], v)


def test_register_keeps_a_name_the_user_bound():
  objects = keras.saving.get_custom_objects()
  saved = objects.get("star")
  try:
    mine = object()
    objects["star"] = mine
    assert "star" not in optim4rl_tf.register_keras_names()
    assert objects["star"] is mine
  finally:
    objects["star"] = saved
  assert isinstance(objects["star"], optim4rl_tf.KerasName)


@pytest.mark.slow(25)
def test_names_registered_at_import_without_loading_the_faces():
  code = textwrap.dedent("""
      import sys, keras, optim4rl_tf
      faces = "optim4rl_tf.optimizers.keras_optimizers" in sys.modules
      names = sorted(k for k in keras.saving.get_custom_objects() if ">" not in k)
      print(faces, names, type(keras.optimizers.get("l2lgd2")).__name__)
  """)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "False ['l2lgd2', 'linear_optim', 'optim4rl', 'star'] L2LGD2"


# --- 2., 3. from_pretrained ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", pretrained.available())
def test_from_pretrained_defaults_to_the_cards_settings_else_the_recorded_agent_settings(name):
  config = pretrained.provenance(name)["config"]
  if "tasks" in config:  # MetaA2C: each task's agent lr and the agent clip
    rates, clip = [t["learning_rate"] for t in config["tasks"]], config["agent_grad_clip"]
  else:  # MetaPPO: one agent lr and clip
    rates, clip = [config["learning_rate"]], config["grad_clip"]
  want_lr = max(sorted(set(rates)), key=rates.count)  # most tasks; a tie goes to the smaller
  want_clip = clip if clip > 0 else None
  assert pretrained.agent_settings(name) == {"learning_rate": want_lr, "clipvalue": want_clip}
  card = pretrained.card(name)
  if card is not None:  # measured on tasks the file never saw (tests/test_cards.py checks the rule)
    want_lr, want_clip = card["learning_rate"], card["clipvalue"]
  opt = optim4rl_tf.Optim4RL.from_pretrained(name)
  assert lr_of(opt) == pytest.approx(want_lr) and opt.clipvalue == want_clip
  assert opt.global_clipnorm is None and opt.clipnorm is None


def test_recorded_settings_of_the_shipped_files():
  assert pretrained.agent_settings("catch") == {"learning_rate": 1e-3, "clipvalue": None}
  assert pretrained.agent_settings("small_dense_long") == {"learning_rate": 3e-2, "clipvalue": 1.0}
  assert pretrained.agent_settings("grid6") == {"learning_rate": 3e-3, "clipvalue": 1.0}  # 4 of 6 tasks
  assert pretrained.agent_settings("inverted_pendulum") == {"learning_rate": 3e-4, "clipvalue": 1.0}  # MetaPPO


def test_from_pretrained_explicit_arguments_win():
  opt = optim4rl_tf.Optim4RL.from_pretrained("grid6", learning_rate=0.5, clipvalue=None)
  assert lr_of(opt) == pytest.approx(0.5) and opt.clipvalue is None
  opt = optim4rl_tf.Optim4RL.from_pretrained("grid6", global_clipnorm=2.0)
  grid6_lr = pretrained.recommended_settings("grid6")["learning_rate"]
  assert opt.clipvalue is None and opt.global_clipnorm == 2.0 and lr_of(opt) == pytest.approx(grid6_lr)
  opt = optim4rl_tf.Optim4RL.from_pretrained("catch", clipvalue=0.25)
  assert opt.clipvalue == 0.25
  clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))  # the config keeps what was resolved
  catch_lr = pretrained.recommended_settings("catch")["learning_rate"]
  assert clone.clipvalue == 0.25 and lr_of(clone) == pytest.approx(catch_lr)


def test_from_pretrained_without_a_name_is_the_recommended_file(monkeypatch):
  assert pretrained.RECOMMENDED == "inverted_pendulum"
  opt = optim4rl_tf.Optim4RL.from_pretrained()
  assert opt.pretrained == "inverted_pendulum" and opt.mlp_dims == ()
  monkeypatch.setattr(pretrained, "RECOMMENDED", "small_dense_long")  # the one constant decides
  opt = optim4rl_tf.Optim4RL.from_pretrained()
  assert opt.pretrained == "small_dense_long" and opt.mlp_dims == (16, 16) and lr_of(opt) == pytest.approx(3e-2)


@pytest.mark.parametrize("cls", [optim4rl_tf.LinearOptim, optim4rl_tf.L2LGD2, optim4rl_tf.STAR])
def test_from_pretrained_without_a_name_when_none_ships(cls):
  with pytest.raises(ValueError, match=f"no trained {cls.__name__} ships with this package"):
    cls.from_pretrained()


# --- 4. the untrained warning -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_fresh_meta_parameters_warn_once(cls, tmp_path):
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    opt = cls(learning_rate=1e-3, seed=2)
    [w] = untrained_warnings(record)
    message = str(w.message)
    assert "\n" not in message and "untrained" in message and "meta_params=" in message
    assert w.filename == __file__  # points at the caller
    assert ("from_pretrained()" in message) == (cls is optim4rl_tf.Optim4RL)
    x, y = data()
    net = model()
    net.compile(optimizer=opt, loss="mse")
    net.fit(x, y, batch_size=16, epochs=1, verbose=0)  # training does not repeat it
    clone = cls.from_config(opt.get_config())  # nor does rebuilding from a config
    assert len(untrained_warnings(record)) == 1
    phi = clone.meta_params
    cls(meta_params=phi)
    path = str(tmp_path / "phi.npz")
    clone.save_meta_params(path)
    cls(meta_params=path)
    if cls is optim4rl_tf.Optim4RL:
      cls.from_pretrained("catch")
      cls(pretrained="grid6")
    assert len(untrained_warnings(record)) == 1


# --- 5. saved optimizer state that does not fit -------------------------------------------------------------


def trained(opt, epochs=1):
  x, y = data()
  net = model()
  net.compile(optimizer=opt, loss="mse")
  net.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
  return net


def compiled(opt, build=False):
  net = model()
  net.compile(optimizer=opt, loss="mse")
  if build:
    net.optimizer.build(net.trainable_variables)
  return net


def fresh(cls, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UNTRAINED)
    return cls(**kwargs)


@pytest.mark.parametrize("build", [False, True])
def test_other_mlp_dims_refused_at_load_weights(tmp_path, build):
  path = str(tmp_path / "m.weights.h5")
  trained(optim4rl_tf.Optim4RL.from_pretrained("small_dense_long")).save_weights(path)  # (16, 16) heads
  net = compiled(optim4rl_tf.Optim4RL.from_pretrained("catch"), build=build)  # head-free
  with pytest.raises(ValueError, match=r"meta-parameters do not match optim4rl \(mlp_dims=\[\]"):
    net.load_weights(path)


def test_other_optimizer_refused_at_load_weights(tmp_path):
  path = str(tmp_path / "m.weights.h5")
  trained(fresh(optim4rl_tf.L2LGD2, seed=1)).save_weights(path)
  net = compiled(optim4rl_tf.Optim4RL.from_pretrained())
  with pytest.raises(ValueError, match="rnn1/kernel"):
    net.load_weights(path)
  net = compiled(fresh(optim4rl_tf.STAR))
  with pytest.raises(ValueError, match="meta-parameters do not match star"):
    net.load_weights(path)


def test_ema_on_one_side_only_refused_at_load_weights(tmp_path):
  path = str(tmp_path / "m.weights.h5")
  trained(optim4rl_tf.Optim4RL.from_pretrained(use_ema=True)).save_weights(path)
  with pytest.raises(ValueError, match="use_ema or gradient_accumulation_steps"):
    compiled(optim4rl_tf.Optim4RL.from_pretrained()).load_weights(path)
  ok = compiled(optim4rl_tf.Optim4RL.from_pretrained(use_ema=True))
  ok.load_weights(path)  # the same settings load
  ok.fit(*data(), batch_size=32, epochs=1, verbose=0)


def test_matching_weights_still_load_and_continue(tmp_path):
  path = str(tmp_path / "m.weights.h5")
  net = trained(optim4rl_tf.Optim4RL.from_pretrained(), epochs=2)
  net.save_weights(path)
  for build in (False, True):
    other = compiled(optim4rl_tf.Optim4RL.from_pretrained(), build=build)
    other.load_weights(path)
    other.fit(*data(), batch_size=32, epochs=1, verbose=0)
    assert int(other.optimizer.iterations.numpy()) == int(net.optimizer.iterations.numpy()) + 2


@pytest.mark.parametrize("build", [False, True])
def test_nan_meta_parameter_in_weights_file_refused(tmp_path, build):
  path = str(tmp_path / "m.weights.h5")
  net = trained(optim4rl_tf.Optim4RL.from_pretrained())
  net.save_weights(path)
  index = [v.name for v in net.optimizer.variables].index("phi_rnn2_bias")
  with h5py.File(path, "r+") as f:
    entry = f[f"optimizer/vars/{index}"]
    value = entry[...]
    value.flat[3] = np.nan
    entry[...] = value
  with pytest.raises(ValueError, match="meta-parameter 'rnn2/bias' contains NaN or Inf"):
    compiled(optim4rl_tf.Optim4RL.from_pretrained(), build=build).load_weights(path)


def test_keras_file_missing_an_optimizer_variable(tmp_path):
  path = str(tmp_path / "m.keras")
  trained(optim4rl_tf.Optim4RL.from_pretrained()).save(path)
  with zipfile.ZipFile(path) as zf:
    members = {n: zf.read(n) for n in zf.namelist()}
  weights = str(tmp_path / "w.h5")
  with open(weights, "wb") as f:
    f.write(members["model.weights.h5"])
  with h5py.File(weights, "r+") as f:
    last = len(f["optimizer/vars"]) - 1
    del f["optimizer/vars/5"]
  with open(weights, "rb") as f:
    members["model.weights.h5"] = f.read()
  damaged = str(tmp_path / "damaged.keras")
  with zipfile.ZipFile(damaged, "w") as zf:
    for name, blob in members.items():
      zf.writestr(name, blob)
  with pytest.raises(ValueError, match=rf"entries \[5\] of 0\.\.{last} are missing"):
    keras.models.load_model(damaged)


def test_load_own_variables_names_the_mismatch():
  opt = optim4rl_tf.Optim4RL.from_pretrained()
  net = compiled(opt, build=True)
  store = {str(i): v.numpy() for i, v in enumerate(opt.variables)}
  wrong = dict(store)
  wrong[str(len(store) - 4)] = np.zeros((8, 9, 9), np.float32)  # a hidden state of another model variable
  with pytest.raises(ValueError, match=r"has shape \(8, 3, 1\) but the file has \(8, 9, 9\)"):
    opt.load_own_variables(wrong)
  wrong = dict(store)
  wrong[str(len(store) - 2)] = np.zeros((1, 4), np.float32)
  with pytest.raises(ValueError, match="hidden states have size"):
    opt.load_own_variables(wrong)
  wrong = {k: v for k, v in store.items() if k != "0"}
  with pytest.raises(ValueError, match=r"entries \[0\]"):
    opt.load_own_variables(wrong)
  opt.load_own_variables(store)  # the optimizer's own variables load
  del net


def test_nan_in_a_meta_parameter_file_is_refused(tmp_path):
  phi = optim4rl_tf.Optim4RL.from_pretrained().meta_params
  path = str(tmp_path / "phi.npz")
  optim4rl_tf.Optim4RL(meta_params=phi).save_meta_params(path)
  with zipfile.ZipFile(path) as zf:
    members = {n: zf.read(n) for n in zf.namelist()}
  import io  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  bad = phi["mlp1/out/kernel"].copy()
  bad[0, 0] = np.inf
  np.lib.format.write_array(buffer, bad)
  members["mlp1/out/kernel.npy"] = buffer.getvalue()
  with zipfile.ZipFile(path, "w") as zf:
    for name, blob in members.items():
      zf.writestr(name, blob)
  with pytest.raises(ValueError, match="'mlp1/out/kernel' contains NaN or Inf"):
    optim4rl_tf.load_meta_params(path)
  with pytest.raises(ValueError, match="'mlp1/out/kernel' contains NaN or Inf"):
    optim4rl_tf.Optim4RL(meta_params=path)


def test_model_saved_before_its_optimizer_was_built_loads(tmp_path):
  net = compiled(optim4rl_tf.Optim4RL.from_pretrained("grid6"))
  net.save(str(tmp_path / "m.keras"))  # compiled, never trained: the file holds no phi or states
  loaded = keras.models.load_model(str(tmp_path / "m.keras"))
  assert loaded.optimizer.pretrained == "grid6"
  for k, v in net.optimizer.meta_params.items():
    np.testing.assert_array_equal(loaded.optimizer.meta_params[k], v)
  loaded.fit(*data(), batch_size=32, epochs=1, verbose=0)
  assert int(loaded.optimizer.iterations.numpy()) == 2
