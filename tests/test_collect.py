"""Gradient collection: flax order, sub-sampling, the chunked store, the A2C hook and the supervised data."""

import gzip
import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import a2c_train
from optim4rl_tf.agents import networks
from optim4rl_tf.analysis import collect
from optim4rl_tf.analysis import mnist_data
from optim4rl_tf.analysis import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from optim4rl_tf.configs import collect as collect_configs  # noqa: E402

BDL_FLAX_ORDER = [
    "actor_net/bias", "actor_net/kernel", "critic_net/bias", "critic_net/kernel", "feature_net/layers_0/bias",
    "feature_net/layers_0/kernel", "feature_net/layers_3/bias", "feature_net/layers_3/kernel"
]


# ----- flattening and sub-sampling ---------------------------------------------------------------------
def test_flax_order_of_agent_and_mnist_nets():
  net = networks.make_network("big_dense_long", (5, 15, 11), 9)
  assert [net.param_names[i] for i in collect.flax_leaf_order(net.param_names)] == BDL_FLAX_ORDER
  assert [supervised.PARAM_NAMES[i] for i in collect.flax_leaf_order(supervised.PARAM_NAMES)] == [
      "feature_net/layers_0/bias", "feature_net/layers_0/kernel", "feature_net/layers_3/bias",
      "feature_net/layers_3/kernel", "head/bias", "head/kernel"
  ]
  # flax compares path components as strings: layers_10 sorts before layers_3.
  assert collect.flax_leaf_order(["a/layers_3/k", "a/layers_10/k", "a/layers_3/b"]) == [1, 2, 0]


def test_subsample_counts_of_notes_section_8():
  assert collect.num_coords(39482, 100) == 395
  assert collect.num_coords(401850, 1000) == 402
  np.testing.assert_array_equal(collect.sample_indices(10, 3), [0, 3, 6, 9])
  with pytest.raises(ValueError):
    collect.sample_indices(10, 0)


def test_flatten_subsample_on_labelled_synthetic_leaves():
  # Leaf i (param-list order) holds 1000*i + position, so every kept entry names its source.
  names = ["feature_net/layers_0/kernel", "feature_net/layers_0/bias", "actor_net/kernel", "actor_net/bias"]
  shapes = [(2, 3), (3,), (3, 2), (2,)]
  leaves = [
      np.stack([1000 * i + np.arange(np.prod(s), dtype=np.float32).reshape(s) + u * 0.5
                for u in range(2)])
      for i, s in enumerate(shapes)
  ]
  out = collect.flatten_subsample_np(leaves, names, 2)
  # flax order: actor_net/bias (leaf 3), actor_net/kernel (2), layers_0/bias (1), layers_0/kernel (0).
  full = np.concatenate([[3000, 3001], [2000, 2001, 2002, 2003, 2004, 2005], [1000, 1001, 1002], [0, 1, 2, 3, 4, 5]])
  np.testing.assert_array_equal(out[0], full[::2])
  np.testing.assert_array_equal(out[1], full[::2] + 0.5)
  probe, c = collect.make_grad_probe(names, shapes, 2)
  assert c == len(full[::2])
  np.testing.assert_array_equal(probe([tf.constant(x) for x in leaves]).numpy(), out)


# ----- on-disk store -----------------------------------------------------------------------------------
def test_chunks_reassemble_exactly(tmp_path):
  rng = np.random.default_rng(0)
  w = collect.GradientWriter(str(tmp_path / "g"),
                             num_units=2,
                             num_coords=7,
                             chunk_steps=5,
                             meta=dict(kind="rl", task="synthetic"))
  blocks = [rng.normal(size=(k, 2, 7)).astype(np.float32) for k in (1, 3, 7, 2, 9, 1)]
  blocks.append(rng.normal(size=(2, 7)).astype(np.float32))  # one step without the k axis
  for b in blocks:
    w.append(b)
  assert w.num_steps == 24
  w.close()
  want = np.concatenate([b if b.ndim == 3 else b[None] for b in blocks])
  store = collect.GradientStore(str(tmp_path / "g"))
  assert store.shape == (24, 2, 7) and store.index["complete"] and store.index["task"] == "synthetic"
  files = sorted(f for f in os.listdir(tmp_path / "g") if f.startswith("chunk_"))
  assert len(files) == 5 and [c["steps"] for c in store.index["chunks"]] == [5, 5, 5, 5, 4]
  got = store.load()
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(store.load(3, 13), want[3:13])
  np.testing.assert_array_equal(np.concatenate([x for _, x in store.iter_chunks()]), want)
  # A new writer in the same directory replaces the old store.
  w2 = collect.GradientWriter(str(tmp_path / "g"), 1, 3, chunk_steps=4)
  w2.append(np.ones((2, 1, 3)))
  w2.close(complete=False)
  store2 = collect.GradientStore(str(tmp_path / "g"))
  assert store2.shape == (2, 1, 3) and not store2.index["complete"]
  assert sorted(f for f in os.listdir(tmp_path / "g") if f.startswith("chunk_")) == ["chunk_00000.npy"]


def test_writer_rejects_bad_blocks_and_reader_bad_dirs(tmp_path):
  w = collect.GradientWriter(str(tmp_path / "g"), 1, 3)
  with pytest.raises(ValueError, match="shape"):
    w.append(np.zeros((2, 2, 3)))
  w.close()
  with pytest.raises(ValueError, match="closed"):
    w.append(np.zeros((1, 1, 3)))
  with pytest.raises(FileNotFoundError, match="collect_gradients"):
    collect.GradientStore(str(tmp_path / "nothing"))


def test_writer_flushes_chunks_while_running(tmp_path):
  w = collect.GradientWriter(str(tmp_path / "g"), 1, 2, chunk_steps=3)
  w.append(np.zeros((4, 1, 2)))
  idx = json.load(open(tmp_path / "g" / "index.json"))
  assert idx["num_steps"] == 3 and not idx["complete"]  # one chunk on disk, one step buffered
  w.close()


# ----- A2C hook ----------------------------------------------------------------------------------------
def tiny_collect_config(**kw):
  c = collect_configs.get_config("bdl")
  c.env.num_envs = 4
  c.num_seeds = 2
  c.train_steps = 4 * 20 * 5
  c.iterations_per_call = 2
  c.console_every_secs = 0.0
  c.plot = False
  c.collect.chunk_steps = 2
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_collect_configs():
  c = collect_configs.get_config("bdl")
  assert (c.env.name, c.env.num_envs, c.train_steps, c.seed, c.num_seeds) == ("big_dense_long", 512, 3e7, 42, 1)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.grad_clip) == ("rmsprop", 3e-3, 1.0)
  assert (c.collect.enabled, c.collect.every_nth) == (True, 100)
  assert a2c_train.validate_config(c) == 2929
  assert collect_configs.get_config("bdl_adam").optimizer.name == "adam"
  m = collect_configs.get_config("mnist")
  assert (m.batch_size, m.optimizer.learning_rate, m.collect.every_nth, m.seed) == (128, 3e-4, 1000, 1)
  with pytest.raises(ValueError, match="Unknown collect variant"):
    collect_configs.get_config("nope")


def test_a2c_probe_is_the_env_averaged_gradient_before_clipping():
  c = tiny_collect_config(train_steps=4 * 20)
  trainer, env, net, opt = a2c_train.build(c)
  state, _ = a2c_train.init_state(trainer, c)
  probe, size = collect.a2c_probe(c, net)
  hp = a2c.A2CHParams()
  _, m = a2c.a2c_update(net, env, opt, hp, 20, 2, state, grad_probe=probe)
  # The same iteration by hand: rollout with the iteration key, loss gradients, flax order, every 100th.
  it_key = tf.random.experimental.stateless_fold_in(state.key, state.iteration)
  traj, _, _ = a2c.rollout(net.logits, state.params, env, state.env_state, state.obs, it_key, 20, 2)
  _, _, grads = a2c.loss_and_grads(net.apply, state.params, traj, hp)
  want = collect.flatten_subsample_np([g.numpy() for g in grads], net.param_names, 100)
  assert m["grad_probe"].shape == (2, size) == (2, 395)
  np.testing.assert_allclose(m["grad_probe"].numpy(), want, rtol=1e-5, atol=1e-8)
  assert np.abs(want).max() > 0
  # The big (unclipped) gradient really is what is collected: scale the loss so |g| > clip somewhere.
  hp_big = a2c.A2CHParams(critic_weight=1e4)
  _, m_big = a2c.a2c_update(net, env, opt, hp_big, 20, 2, state, grad_probe=probe)
  assert np.abs(m_big["grad_probe"].numpy()).max() > 1.0


@pytest.mark.slow(5)
def test_a2c_run_streams_gradients(tmp_path):
  c = tiny_collect_config()
  res = a2c_train.train(c, str(tmp_path), console=False, gradient_probe=collect.gradient_probe_for(c))
  store = collect.GradientStore(str(tmp_path / "grads"))
  assert store.shape == (res["iterations"], 2, 395) == (5, 2, 395)
  assert store.index["complete"] and store.index["units"] == [42, 43]
  assert store.index["param_order"] == BDL_FLAX_ORDER
  assert len(store.index["chunks"]) == 3  # chunk_steps=2: 2 + 2 + 1
  g = store.load()
  assert np.all(np.isfinite(g)) and not np.array_equal(g[0], g[1])
  # Collection off: the trainer returns no gradient output.
  c_off = tiny_collect_config()
  c_off.collect.enabled = False
  trainer_off, *_ = a2c_train.build(c_off)
  s, _ = a2c_train.init_state(trainer_off, c_off)
  _, m = trainer_off.run(s, tf.constant(1))
  assert "grad_probe" not in m


# ----- supervised data ---------------------------------------------------------------------------------
def _write_idx(path, arr, gz):
  arr = np.asarray(arr, np.uint8)
  head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(head + arr.tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_reader(tmp_path, gz):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, size=(30, 28, 28))
  y = np.arange(30) % 10
  sfx = ".gz" if gz else ""
  _write_idx(str(tmp_path / f"train-images-idx3-ubyte{sfx}"), x, gz)
  _write_idx(str(tmp_path / f"train-labels-idx1-ubyte{sfx}"), y, gz)
  xs, ys, desc = mnist_data.load_mnist(str(tmp_path))
  assert xs.shape == (30, 28, 28, 1) and xs.dtype == np.float32
  np.testing.assert_array_equal(xs[..., 0], x)
  np.testing.assert_array_equal(ys, y)
  assert desc.startswith("MNIST")


def test_mnist_npz_and_missing_files(tmp_path):
  x = np.zeros((20, 28, 28), np.uint8)
  x[:, 3, 4] = 255
  y = np.arange(20) % 10
  np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
  xs, ys, _ = mnist_data.load_mnist(str(tmp_path / "mnist.npz"))
  assert xs.shape == (20, 28, 28, 1) and xs[0, 3, 4, 0] == 255.0
  d = tmp_path / "official"
  d.mkdir()
  np.savez(d / "train.npz", x=x[..., None] / 255.0, y=y)  # official layout, already in [0, 1]
  xs2, _, _ = mnist_data.load_mnist(str(d))
  np.testing.assert_allclose(xs2, xs)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz.*put the files in that directory"):
    mnist_data.load_mnist(str(empty))
  _write_idx(str(empty / "train-images-idx3-ubyte.gz"), x, True)
  with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz is missing"):
    mnist_data.load_mnist(str(empty))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    mnist_data.load_mnist(str(tmp_path / "nope"))


def test_batching_of_notes_section_8():
  rng = np.random.default_rng(0)
  y = np.concatenate([np.full(n, c) for c, n in enumerate([300, 270, 520, 260, 400, 256, 300, 300, 300, 300])])
  y = rng.permutation(y)
  idx = supervised.class_truncate_shuffle(y, 128, np.random.default_rng(3))
  assert len(idx) == 10 * 256 and len(set(idx.tolist())) == len(idx)  # min class 256 -> 2 batches each
  np.testing.assert_array_equal(y[idx], np.repeat(np.arange(10), 256))  # sorted by label
  assert not np.array_equal(idx[:256], np.sort(idx[:256]))  # shuffled within the class
  b = supervised.epoch_batches(len(idx), 128, np.random.default_rng(4))
  assert b.shape == (20, 128) and sorted(b.ravel().tolist()) == list(range(len(idx)))
  b2 = supervised.epoch_batches(300, 128, np.random.default_rng(4))
  assert b2.shape == (2, 128)  # incomplete batch dropped


def test_mnist_network_and_rmsprop_semantics():
  import keras
  model = supervised.make_model(1)
  shapes = [tuple(w.shape) for w in model.trainable_variables]
  assert shapes == [(2, 2, 1, 16), (16,), (12544, 32), (32,), (32, 10), (10,)]
  assert sum(int(np.prod(s)) for s in shapes) == 401850
  # keras RMSprop(rho=0.9, epsilon=1e-8) == optax.rmsprop: nu = 0.1 g^2, step = -lr g / sqrt(nu + 1e-8).
  v = keras.Variable(np.zeros(3, np.float32))
  opt = keras.optimizers.RMSprop(learning_rate=3e-4, rho=0.9, epsilon=1e-8)
  g = np.array([1e-3, -2.0, 1e-5], np.float32)
  opt.apply_gradients([(tf.constant(g), v)])
  np.testing.assert_allclose(v.numpy(), -3e-4 * g / np.sqrt(0.1 * g.astype(np.float64)**2 + 1e-8), rtol=1e-5)


def test_digits_stand_in():
  x, y, label = mnist_data.load_digits_stand_in()
  assert x.shape == (1797, 28, 28, 1) and "STAND-IN" in label
  assert x.max() <= 255.0 and x.max() > 200.0 and x[:, :4].max() == 0.0  # 20x20 box centred, 4 px border
  assert np.bincount(y).min() == 174
