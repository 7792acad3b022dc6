"""The .npz meta-parameter format: round trip, keys, and one clear error per kind of bad file."""

import json
import os

import numpy as np
import pytest

import optim4rl_tf
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib

OPTIM4RL_16_16_KEYS = {
    "rnn1/kernel": (1, 24),
    "rnn1/recurrent_kernel": (8, 24),
    "rnn1/bias": (2, 24),
    "mlp1/dense_0/kernel": (8, 16),
    "mlp1/dense_0/bias": (16,),
    "mlp1/dense_1/kernel": (16, 16),
    "mlp1/dense_1/bias": (16,),
    "mlp1/out/kernel": (16, 1),
    "mlp1/out/bias": (1,),
}


def test_optim4rl_keys_and_meta(tmp_path):
  opt = optim4rl_tf.Optim4RL(seed=1)
  path = opt.save_meta_params(tmp_path / "phi.npz")
  with np.load(path) as data:
    files = set(data.files)
    meta = json.loads(str(data["__meta__"]))
    shapes = {k: data[k].shape for k in data.files if k != "__meta__"}
  expected = dict(OPTIM4RL_16_16_KEYS)
  expected.update({k.replace("rnn1", "rnn2").replace("mlp1", "mlp2"): v for k, v in OPTIM4RL_16_16_KEYS.items()})
  assert shapes == expected and "__meta__" in files
  assert meta == {"optimizer": "optim4rl", "mlp_dims": [16, 16], "hidden_size": 8, "version": optim4rl_tf.__version__}


def test_head_free_keys():
  shapes = cores.make_core("optim4rl", ()).meta_param_shapes()
  assert shapes["mlp1/out/kernel"] == (8, 1) and "mlp1/dense_0/kernel" not in shapes
  assert cores.make_core("linear_optim", ()).meta_param_shapes()["mlp/out/kernel"] == (8, 3)
  assert cores.make_core("l2lgd2", ()).meta_param_shapes()["rnn/kernel"] == (2, 24)


@pytest.mark.parametrize("name", cores.LEARNED_NAMES)
def test_round_trip(tmp_path, name):
  core = cores.make_core(name, ())
  phi = core.init_meta_params(7)
  path = meta_params_lib.save(tmp_path / "x.npz", core, phi)
  meta, arrays = meta_params_lib.load(path)
  assert meta["optimizer"] == name and meta["mlp_dims"] == []
  assert all(np.array_equal(arrays[k], phi[k]) for k in phi)
  core2, phi2 = meta_params_lib.resolve(name, str(path))
  assert core2.mlp_dims == () and all(np.array_equal(phi2[k], phi[k]) for k in phi)


def test_file_for_another_optimizer(tmp_path):
  path = optim4rl_tf.L2LGD2().save_meta_params(tmp_path / "l2l.npz")
  with pytest.raises(ValueError, match="made for optimizer 'l2lgd2', not 'optim4rl'"):
    optim4rl_tf.Optim4RL(meta_params=str(path))


def test_file_with_other_sizes(tmp_path):
  path = optim4rl_tf.Optim4RL(mlp_dims=()).save_meta_params(tmp_path / "none.npz")
  with pytest.raises(ValueError, match=r"mlp_dims=\[\], but mlp_dims=\[16, 16\] was requested"):
    optim4rl_tf.Optim4RL(mlp_dims=(16, 16), meta_params=str(path))
  assert optim4rl_tf.Optim4RL(meta_params=str(path)).mlp_dims == ()  # sizes come from the file


def test_dict_with_wrong_shape():
  phi = cores.make_core("optim4rl").init_meta_params(0)
  phi["rnn2/recurrent_kernel"] = np.zeros((8, 12), np.float32)
  with pytest.raises(ValueError, match=r"'rnn2/recurrent_kernel' has shape \(8, 12\), expected \(8, 24\)"):
    optim4rl_tf.Optim4RL(meta_params=phi)


def test_dict_with_missing_key():
  phi = cores.make_core("optim4rl").init_meta_params(0)
  del phi["mlp2/out/bias"]
  with pytest.raises(ValueError, match=r"missing keys \['mlp2/out/bias'\]"):
    optim4rl_tf.Optim4RL(meta_params=phi)


def test_truncated_file(tmp_path):
  path = optim4rl_tf.Optim4RL().save_meta_params(tmp_path / "full.npz")
  data = open(path, "rb").read()
  bad = tmp_path / "truncated.npz"
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match="not a readable .npz meta-parameter file"):
    optim4rl_tf.Optim4RL(meta_params=str(bad))


def test_not_an_npz_file(tmp_path):
  bad = tmp_path / "notes.npz"
  bad.write_text("this is not an archive\n")
  with pytest.raises(ValueError, match="not a readable .npz meta-parameter file"):
    meta_params_lib.load(bad)
  single = tmp_path / "single.npy"
  np.save(single, np.zeros(3))
  with pytest.raises(ValueError, match="not a readable .npz"):
    meta_params_lib.load(single)


def test_npz_without_meta(tmp_path):
  bad = tmp_path / "plain.npz"
  np.savez(bad, **cores.make_core("optim4rl").init_meta_params(0))
  with pytest.raises(ValueError, match="has no '__meta__' entry"):
    meta_params_lib.load(bad)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    optim4rl_tf.Optim4RL(meta_params=str(tmp_path / "nope.npz"))


def test_non_finite_phi_is_rejected_and_not_saved(tmp_path):
  core = cores.make_core("optim4rl")
  phi = core.init_meta_params(0)
  good = meta_params_lib.save(tmp_path / "phi.npz", core, phi)
  before = open(good, "rb").read()
  phi["mlp1/out/bias"] = np.array([np.nan], np.float32)
  with pytest.raises(ValueError, match="NaN or Inf"):
    meta_params_lib.save(good, core, phi)
  assert open(good, "rb").read() == before  # the existing file is untouched
  assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")] == []
