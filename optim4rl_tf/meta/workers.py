"""Meta-training units split across W workers with TensorFlow's own tf.distribute (MultiWorkerMirroredStrategy).

  workers = workers.from_environment()          # None without TF_CONFIG; call before any other TF op runs
  trainer = MetaTrainer(config, workdir, workers=workers)

Every worker runs the same program with the same flags and ``--workdir`` and its own ``TF_CONFIG``, the
standard variable of tf.distribute (the cluster's worker list and this worker's index)::

  TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}'

Worker k holds units ``[k U/W, (k+1) U/W)`` of every problem (:class:`UnitSlice`; U must be a multiple of W),
with exactly the randomness those units have in one process: a problem splits itself
(``problem.for_units(unit_slice)``; ``meta_a2c.MetaA2C`` draws every random number at the full size U and
keeps its slice). The meta-gradient is a mean over units, so each worker's estimator returns the mean over
its units and the learner averages them across workers (:meth:`Workers.mean`, a collective all-reduce)
before the meta-update: every worker then holds the same phi, that of one process up to float rounding.

The chief (index 0) alone writes the workdir. Checkpoints have the one-process layout (all U units,
gathered with :meth:`Workers.gather`), so a run resumes with any W that divides U, or in one process;
every worker reads them, so on several machines ``--workdir`` must be on a filesystem they share.

A worker that dies or is killed is noticed by TensorFlow's coordination service (heartbeats, seconds):
the collectives of the others fail and they stop with :class:`WorkerLost` (one line in the launcher);
start all workers again with the same flags to resume from the last checkpoint.
"""

import json
import os
from typing import NamedTuple

import tensorflow as tf


class WorkerLost(RuntimeError):
  """Another worker died or became unreachable; this worker stopped (restart all to resume)."""


# What a collective raises when a peer is gone (aborted by the coordination service, or timed out).
LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError)


def lost(error):
  """A :class:`WorkerLost` with one line from a collective's ``error``."""
  text = (getattr(error, "message", None) or str(error)).strip()
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  reason = next((l for l in lines if "unhealthy" in l or "aborted" in l or "timed out" in l.lower()),
                lines[0] if lines else type(error).__name__)
  return WorkerLost(f"lost contact with another worker ({reason[:200]}); every worker stopped: start them all "
                    "again with the same flags and --workdir to resume from the last checkpoint")


class UnitSlice(NamedTuple):
  """The units ``[start, start + count)`` of a problem with ``total`` units (one worker's share)."""
  start: int
  count: int
  total: int

  def take(self, x, axis=0):
    """This slice of ``x``, which has k * total entries on ``axis`` (k per unit, unit-major)."""
    k = _per_unit(x, axis, self.total)
    begin = [0] * x.shape.rank
    size = [-1] * x.shape.rank
    begin[axis], size[axis] = self.start * k, self.count * k
    return tf.slice(x, begin, size)

  def pad(self, x, axis=0):
    """``x`` (k * count entries on ``axis``) placed at this slice of zeros with k * total entries."""
    k = _per_unit(x, axis, self.count)
    paddings = [[0, 0] for _ in range(x.shape.rank)]
    paddings[axis] = [self.start * k, (self.total - self.start - self.count) * k]
    return tf.pad(x, paddings)


def _per_unit(x, axis, units):
  size = x.shape[axis]
  if size is None or size % units:
    raise ValueError(f"a unit-state tensor of shape {x.shape} has no {units} units (or multiples) on axis {axis}")
  return size // units


def unit_slice(num_units, num_workers, index, name="problem"):
  """Worker ``index``'s :class:`UnitSlice` of ``num_units`` units; ValueError when W does not divide U."""
  if num_units % num_workers:
    raise ValueError(f"{name} has num_units={num_units}, which {num_workers} workers cannot split evenly: use "
                     f"a multiple of {num_workers} units (--config.num_units) or another number of workers")
  count = num_units // num_workers
  return UnitSlice(index * count, count, num_units)


def map_units(fn, units, unit_axes):
  """``fn(tensor, axis)`` over a unit state (NamedTuple: ``unit_axes`` {field: axis}, others 0; else axis 0)."""
  if not hasattr(units, "_fields"):
    return tf.nest.map_structure(lambda x: fn(x, 0), units)
  return type(units)(*[
      tf.nest.map_structure(lambda x, a=unit_axes.get(name, 0): fn(x, a), getattr(units, name))
      for name in units._fields
  ])


def _replica_id():
  return tf.distribute.get_replica_context().replica_id_in_sync_group


def parse_tf_config(text):
  """(number of workers, this worker's index) of a ``TF_CONFIG`` JSON string; one ValueError otherwise."""
  try:
    spec = json.loads(text)
    workers = spec["cluster"]["worker"]
    task = spec.get("task", {})
    index = int(task["index"])
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f"TF_CONFIG is not a cluster.worker list and task index ({type(e).__name__}: {e}): give e.g. "
                     '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", '
                     '"index": 0}}') from None
  others = sorted(set(spec["cluster"]) - {"worker"})
  if others or task.get("type", "worker") != "worker":
    raise ValueError(f"TF_CONFIG: only a cluster.worker list is supported (worker 0 is the chief), got jobs "
                     f"{sorted(spec['cluster'])} and task type {task.get('type')!r}")
  if not isinstance(workers, list) or not workers or not 0 <= index < len(workers):
    raise ValueError(f"TF_CONFIG: task index {index} is not one of the {len(workers)} workers of cluster.worker")
  return len(workers), index


def from_environment(timeout_seconds=None):
  """:class:`Workers` of the ``TF_CONFIG`` environment variable, or None when it is not set. Starts this
  worker's server and waits for all workers to be up; must run before any other TensorFlow op."""
  text = os.environ.get("TF_CONFIG", "")
  if not text.strip():
    return None
  return Workers(*parse_tf_config(text), timeout_seconds=timeout_seconds)


class Workers:
  """This process's place among W workers and the collectives the learner needs (replica context of
  ``run``): :meth:`mean`, :meth:`all_true`, :meth:`gather`, and :meth:`agree_max` outside ``run``.

  ``timeout_seconds``: a limit on each collective (None: none; a dead worker is noticed by heartbeats anyway)."""

  def __init__(self, num_workers, index, timeout_seconds=None):
    self.num_workers, self.index = int(num_workers), int(index)
    self.is_chief = self.index == 0
    impl = tf.distribute.experimental.CommunicationImplementation.RING  # CPU collectives
    self.options = tf.distribute.experimental.CommunicationOptions(implementation=impl, timeout_seconds=timeout_seconds)
    self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=self.options)
    if self.strategy.num_replicas_in_sync != self.num_workers:
      raise ValueError(f"TF_CONFIG names {self.num_workers} workers but tf.distribute sees "
                       f"{self.strategy.num_replicas_in_sync} replicas (one CPU device per worker is expected)")
    self._agree = tf.function(self._agree_fn)
    rank = int(self.call(tf.function(self._rank_fn)))
    if rank != self.index:
      raise ValueError(f"worker index {self.index} of TF_CONFIG is replica {rank} of tf.distribute")

  def __repr__(self):
    return f"Workers(worker {self.index} of {self.num_workers})"

  def unit_slice(self, num_units, name="problem"):
    return unit_slice(num_units, self.num_workers, self.index, name)

  def run(self, fn):
    """``fn()`` in the replica context (call inside a ``tf.function``); returns its (local) result."""
    out = self.strategy.run(fn)
    return tf.nest.map_structure(lambda x: self.strategy.experimental_local_results(x)[0], out)

  def call(self, fn, *args):
    """``fn(*args)`` (something that runs collectives), a lost peer raised as :class:`WorkerLost`."""
    try:
      return fn(*args)
    except LOST_ERRORS as e:
      raise lost(e) from None

  def mean(self, structure):
    """The mean over workers of every tensor of ``structure`` (replica context)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, structure, options=self.options)

  def all_true(self, flags):
    """bool tensor: ``flags`` true on every worker (replica context)."""
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                           tf.cast(flags, tf.float32),
                                                           options=self.options)
    return tf.equal(total, float(self.num_workers))

  def _rank_fn(self):
    return self.run(_replica_id)

  def _agree_fn(self, x):

    def extremes():
      rows = tf.distribute.get_replica_context().all_gather(tf.reshape(x, [1, -1]), axis=0, options=self.options)
      return tf.reduce_max(rows, axis=0), tf.reduce_min(rows, axis=0)

    return self.run(extremes)

  def agree_max(self, values):
    """(max, min) over workers of a list of ints (outside ``run``; every worker must call it)."""
    hi, lo = self.call(self._agree, tf.constant([int(v) for v in values], tf.int64))
    return [int(v) for v in hi.numpy()], [int(v) for v in lo.numpy()]

  def gather(self, units, unit_axes):
    """All workers' units, concatenated on each tensor's unit axis in worker order (replica context)."""
    ctx = tf.distribute.get_replica_context()
    return map_units(lambda x, a: ctx.all_gather(x, axis=a, options=self.options), units, unit_axes)
