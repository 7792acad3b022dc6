"""Gradient collection (docs/fidelity.md §8.1): flax-order flattening, sub-sampling, and a chunked on-disk store.

What is collected is the gradient the optimizer receives, BEFORE clipping (official ``A2Ccollect`` /
``SLCollect``): for A2C the env-averaged agent gradient of every update (one row per seed), for the supervised
run the minibatch gradient of every step. Each gradient is flattened like the official ``pytree2array``
(``jnp.concatenate(tree_leaves(grads), axis=None)``): leaves in flax pytree order -- dict keys sorted at
every level, so ``actor_net/bias, actor_net/kernel, critic_net/bias, ..., feature_net/layers_0/bias, ...`` --
each leaf raveled row-major; then every ``every_nth``-th entry is kept (``data_reduce``: 100 for A2C on
big_dense_long -> 395 of 39,482 coordinates, 1000 for MNIST -> 402 of 401,850).

On disk (:class:`GradientWriter` / :class:`GradientStore`), a directory with::

  index.json            format, kind (rl | supervised), task, dataset label, stand_in flag, every_nth,
                        num_params, num_coords, param_order, sampled flat indices, units (seed labels),
                        num_steps, complete, and the list of chunks {file, start, steps}
  chunk_00000.npy ...   float32 arrays [steps, units, coords], consecutive along time

Layout is time-major ``[steps, units, coords]`` for both runs (the official A2C file is
(updates, devices, coords), the official supervised file (coords, steps); here the supervised run has one
unit). The writer flushes a chunk whenever ``chunk_steps`` steps are buffered and rewrites index.json after
every chunk (atomically), so a long run never holds all gradients in memory and a killed run leaves a
readable prefix (``complete: false``).
"""

import json
import os

import numpy as np

from optim4rl_tf.utils import workdir as workdir_lib

FORMAT = "optim4rl_tf.gradients/1"
INDEX = "index.json"


# ----- flattening and sub-sampling ---------------------------------------------------------------------
def flax_leaf_order(param_names):
  """Indices of ``param_names`` (flax paths like ``feature_net/layers_0/kernel``) in flax pytree order.

  flax/jax flatten dicts with their keys sorted at every nesting level, i.e. the paths sorted by their
  tuple of components (string comparison, so ``layers_10`` would come before ``layers_3`` -- as in flax).
  """
  names = list(param_names)
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate parameter names: {names}")
  return sorted(range(len(names)), key=lambda i: tuple(names[i].split("/")))


def sample_indices(num_params, every_nth):
  """Flat indices kept by the official sub-sampling ``range(0, num_params, every_nth)``."""
  every_nth = int(every_nth)
  if every_nth < 1:
    raise ValueError(f"every_nth must be a positive integer, got {every_nth}")
  return np.arange(0, int(num_params), every_nth, dtype=np.int64)


def num_coords(num_params, every_nth):
  return len(sample_indices(num_params, every_nth))


def flatten_subsample_np(leaves, param_names, every_nth):
  """NumPy reference: leaves (list in ``param_names`` order, each [U, ...] with a leading unit axis) ->
  [U, C], flattened in flax order and sub-sampled."""
  order = flax_leaf_order(param_names)
  u = np.asarray(leaves[0]).shape[0]
  flat = np.concatenate([np.asarray(leaves[i]).reshape(u, -1) for i in order], axis=1)
  return flat[:, ::int(every_nth)]


def make_grad_probe(param_names, param_shapes, every_nth):
  """(probe, num_coords): ``probe(grads)`` maps a list of unit-batched gradients [U, *shape] (in
  ``param_names`` order) to the flax-ordered, sub-sampled [U, num_coords] tensor (pure TF; traceable)."""
  order = flax_leaf_order(param_names)
  sizes = [int(np.prod(s)) for s in param_shapes]
  total = sum(sizes)
  every_nth = int(every_nth)
  c = num_coords(total, every_nth)

  import tensorflow as tf

  def probe(grads):
    u = tf.shape(grads[0])[0]
    flat = tf.concat([tf.reshape(grads[i], [u, sizes[i]]) for i in order], axis=1)
    return flat[:, ::every_nth]

  return probe, c


# ----- on-disk store -----------------------------------------------------------------------------------
def _write_json_atomic(path, obj):
  workdir_lib.atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


class GradientWriter:
  """Streams [k, units, coords] blocks to chunk files; see the module docstring.

  Args:
    directory: created if needed; an existing store there is replaced.
    num_units: rows per step (seeds; 1 for the supervised run).
    num_coords: sub-sampled coordinates per row.
    chunk_steps: steps per chunk file.
    meta: dict stored in index.json (kind, task, dataset, stand_in, every_nth, num_params, ...).
  """

  def __init__(self, directory, num_units, num_coords, chunk_steps=1024, meta=None):
    if int(chunk_steps) < 1:
      raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps}")
    self.directory = directory
    self.num_units, self.num_coords = int(num_units), int(num_coords)
    self.chunk_steps = int(chunk_steps)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # a fresh store: drop an older run's chunks
      if name == INDEX or (name.startswith("chunk_") and name.endswith(".npy")):
        os.remove(os.path.join(directory, name))
    self.index = dict(meta or {},
                      format=FORMAT,
                      layout="steps x units x coords",
                      dtype="float32",
                      num_units=self.num_units,
                      num_coords=self.num_coords,
                      num_steps=0,
                      complete=False,
                      chunks=[])
    self._buf, self._buffered = [], 0
    self._closed = False
    _write_json_atomic(os.path.join(directory, INDEX), self.index)

  @property
  def num_steps(self):
    """Steps appended so far (written or buffered)."""
    return self.index["num_steps"] + self._buffered

  def append(self, block):
    """Appends ``block`` [k, units, coords] (a [units, coords] array counts as one step)."""
    if self._closed:
      raise ValueError("GradientWriter is closed")
    x = np.asarray(block, np.float32)
    if x.ndim == 2:
      x = x[None]
    if x.ndim != 3 or x.shape[1:] != (self.num_units, self.num_coords):
      raise ValueError(f"gradient block has shape {x.shape}, expected [k, {self.num_units}, "
                       f"{self.num_coords}]")
    self._buf.append(x)
    self._buffered += x.shape[0]
    while self._buffered >= self.chunk_steps:
      self._flush(self.chunk_steps)

  def _flush(self, steps):
    data = np.concatenate(self._buf, axis=0) if len(self._buf) > 1 else self._buf[0]
    out, rest = data[:steps], data[steps:]
    self._buf = [rest] if rest.shape[0] else []
    self._buffered = rest.shape[0]
    name = f"chunk_{len(self.index['chunks']):05d}.npy"
    np.save(os.path.join(self.directory, name), np.ascontiguousarray(out))
    self.index["chunks"].append(dict(file=name, start=self.index["num_steps"], steps=int(out.shape[0])))
    self.index["num_steps"] += int(out.shape[0])
    _write_json_atomic(os.path.join(self.directory, INDEX), self.index)

  def close(self, complete=True, **extra_meta):
    """Writes the buffered rest; marks the store complete (``complete=False`` for an aborted run)."""
    if self._closed:
      return
    if self._buffered:
      self._flush(self._buffered)
    self.index.update(extra_meta)
    self.index["complete"] = bool(complete)
    _write_json_atomic(os.path.join(self.directory, INDEX), self.index)
    self._closed = True


class GradientStore:
  """Reads a store written by :class:`GradientWriter`."""

  def __init__(self, directory):
    path = os.path.join(directory, INDEX)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no gradient store in {directory!r} (missing {INDEX}); run "
                              "launch/collect_gradients.py first")
    with open(path) as f:
      self.index = json.load(f)
    if self.index.get("format") != FORMAT:
      raise ValueError(f"{path}: unknown format {self.index.get('format')!r} (expected {FORMAT!r})")
    self.directory = directory

  @property
  def num_steps(self):
    return int(self.index["num_steps"])

  @property
  def shape(self):
    return (self.num_steps, int(self.index["num_units"]), int(self.index["num_coords"]))

  def iter_chunks(self, mmap=True):
    """Yields (start_step, array [steps, units, coords]) in time order."""
    for ch in self.index["chunks"]:
      x = np.load(os.path.join(self.directory, ch["file"]), mmap_mode="r" if mmap else None)
      if x.shape[0] != ch["steps"]:
        raise ValueError(f"{ch['file']}: {x.shape[0]} steps, index.json says {ch['steps']}")
      yield int(ch["start"]), x

  def load(self, start=0, stop=None):
    """Steps [start, stop) as one array [steps, units, coords] (reads only the chunks needed)."""
    stop = self.num_steps if stop is None else min(int(stop), self.num_steps)
    parts = []
    for s, x in self.iter_chunks():
      e = s + x.shape[0]
      if e <= start or s >= stop:
        continue
      parts.append(np.asarray(x[max(start - s, 0):min(stop, e) - s]))
    if not parts:
      return np.zeros((0,) + self.shape[1:], np.float32)
    return np.concatenate(parts, axis=0)


# ----- the gradient probe of the A2C run (optim4rl_tf.agents.a2c_train.GradientProbe) ------------------
class A2CGradientCollector:
  """Gradient collection of an A2C run, as the :class:`optim4rl_tf.agents.a2c_train.GradientProbe` that the
  caller passes to the trainer::

    a2c_train.train(config, workdir, gradient_probe=collect.gradient_probe_for(config))

  ``make_probe(net)`` -> (in-graph probe, num_coords) of :func:`a2c_probe`; ``open_writer(net, workdir,
  labels)`` -> the :class:`GradientWriter` of :func:`a2c_writer` (``workdir/<collect.subdir>``). The
  config's ``collect`` block is checked when the collector is made.
  """

  def __init__(self, config):
    validate_collect(config)
    if not collect_enabled(config):
      raise ValueError("config.collect.enabled is False: there is no gradient to collect")
    self.config = config

  def make_probe(self, net):
    return a2c_probe(self.config, net)

  def open_writer(self, net, workdir, labels):
    return a2c_writer(self.config, net, workdir, labels)


def gradient_probe_for(config):
  """The :class:`A2CGradientCollector` of an A2C config that asks for collection, else None (what a
  launcher passes as ``gradient_probe``); ValueError for a bad ``collect`` block."""
  validate_collect(config)
  return A2CGradientCollector(config) if collect_enabled(config) else None


def collect_enabled(config):
  """True when the A2C config asks for gradient collection (``config.collect.enabled``)."""
  return "collect" in config and bool(config.collect.enabled)


def validate_collect(config):
  if not collect_enabled(config):
    return
  every = config.collect.every_nth
  if isinstance(every, bool) or int(every) != every or int(every) < 1:
    raise ValueError(f"collect.every_nth must be a positive integer, got {every!r}")
  chunk = config.collect.get("chunk_steps", 1024)
  if isinstance(chunk, bool) or int(chunk) != chunk or int(chunk) < 1:
    raise ValueError(f"collect.chunk_steps must be a positive integer, got {chunk!r}")


def a2c_probe(config, net):
  """(probe, num_coords) for an A2C config with collection on, else (None, 0)."""
  if not collect_enabled(config):
    return None, 0
  return make_grad_probe(net.param_names, [s.shape for s in net.specs], int(config.collect.every_nth))


def a2c_writer(config, net, workdir, labels):
  """The :class:`GradientWriter` of an A2C run (``workdir/<collect.subdir>``), or None when off."""
  if not collect_enabled(config):
    return None
  every = int(config.collect.every_nth)
  order = flax_leaf_order(net.param_names)
  meta = dict(kind="rl",
              task=config.env.name,
              dataset=config.env.name,
              stand_in=False,
              optimizer=config.optimizer.name,
              learning_rate=float(config.optimizer.learning_rate),
              grad_clip=float(config.optimizer.grad_clip),
              every_nth=every,
              num_params=net.num_params,
              param_order=[net.param_names[i] for i in order],
              sampled_flat_indices=sample_indices(net.num_params, every).tolist(),
              units=[int(x) for x in labels],
              unit_name="seed",
              env_steps_per_step=int(config.env.num_envs) * int(config.rollout_steps),
              what="env-averaged agent gradient of every A2C update, before clipping")
  return GradientWriter(os.path.join(workdir, config.collect.get("subdir", "grads")),
                        len(labels),
                        num_coords(net.num_params, every),
                        chunk_steps=int(config.collect.get("chunk_steps", 1024)),
                        meta=meta)
