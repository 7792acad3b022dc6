"""The learner: meta-trains one phi with estimators of inner problems (docs/fidelity.md §5.2, §5.4, §5.7, §5.8).

  trainer = MetaTrainer(config, workdir)     # the config's problems (registry), restores the latest checkpoint
  phi = trainer.train(progress_fn)           # runs to the last outer iteration; returns phi (dict of arrays)
  # problems of your own (problem.InnerProblem), each held by an estimator; config: ``trainer_config`` fields
  trainer = MetaTrainer(trainer_config(num_iterations=10), workdir,
                        estimators=[estimators.ReplayedVJP(problem)], core=core, phi=phi0)

The learner names no problem: :func:`build` asks the registry (``registry.lookup``) for a config's problems
and composes each with its estimator (:func:`estimator_for`). Per outer iteration t, for every estimator i
(:func:`outer_iteration`): the units due at t on the pipeline schedule (``config.pipeline``,
``config.reset_interval``; ``pipeline.py``) are replaced by fresh ones (``pipeline.reset``, one
implementation for every problem), then the estimator runs the problem's inner updates and meta-loss and
returns the meta-gradient. The per-problem meta-gradients (means over units) are optionally normalised to
``max_norm`` (per problem, §5.4 item 2), averaged, clipped (elementwise ``meta_grad_clip`` or global-norm
``meta_grad_norm``) and applied with Adam (optax defaults, §0.2). A non-finite meta-gradient, a non-finite
phi or one beyond ``meta_params.PHI_LIMIT``, non-finite or absurd (|x| > ``meta_params.ABSURD``) agent
parameters (also checked by the problems inside the inner loop, ``params_ok``) are never applied; the error
that ends such a run names the knob for the check that failed (:func:`divergence_advice`). Units are
streamed: each task's new units replace its old ones as soon as that task is done, when its own agents are
sane, so a skipped iteration leaves phi and meta-Adam as they were while the sane tasks' agents (trained with
that unchanged phi) go on; at most one task holds two copies of its units at a time.
``config.nonfinite`` says what happens then: ``"skip"`` (default) skips and counts the iteration; after
``max_nonfinite`` consecutive skips the run stops with :class:`NonFiniteError`, after saving the applied iterations not yet checkpointed. ``"stop"`` (the official
MetaPPO, docs/fidelity.md §5.4) ends the run at the first such iteration with :class:`Diverged` and saves
nothing from that iteration on.

The final state is always saved (checkpoint + ``phi.npz``), also when the last iterations were skipped;
``train(stop_fn=...)`` stops cleanly between iterations (signals) with :class:`Interrupted` after saving; a
failed write (disk full) raises :class:`CheckpointWriteError` and leaves no ``ckpt-N_temp`` behind.

Everything that determines the future lives in ``tf.Variable``s saved by ``tf.train.CheckpointManager``
every ``checkpoint_every`` iterations: phi, Adam state, all unit states (flattened in field order), the
iteration counter and the skip counters. Randomness is stateless, keyed by (seed, iteration, problem), so a
run killed at any moment and restarted with the same workdir finishes with exactly the phi of an
uninterrupted run.

Beside each checkpoint the trainer writes ``meta_state.npz`` (``META_STATE_NAME``): phi, the Adam state, the
counters and ``units_restarted_at``, a few KB where a checkpoint holds every agent and every hidden state of
the learned optimizer (1.3 GB for grid6 at 128 units per task). It is what carries a run that outlasts one
machine: copy the workdir's ``config.json`` and ``meta_state.npz`` (``meta_metrics.csv`` too, for the curves)
to another machine, run the same command, and the run goes on from that outer iteration with phi and
meta-Adam restored; the agents, which the file does not hold, start fresh there (as if every unit were reset
at that iteration; the pipeline schedule re-staggers them within one reset interval), so such a run is not
bitwise an unbroken one. ``units_restarted_at`` lists the iterations where that happened. A workdir with a
checkpoint always resumes from the checkpoint (exactly).
"""

import glob
import io
import os
import shutil
import signal

import numpy as np
import tensorflow as tf

from optim4rl_tf import pretrained
from optim4rl_tf.meta import estimators as estimators_lib
from optim4rl_tf.meta import meta_grads
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import registry
from optim4rl_tf.meta import workers as workers_lib
from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.utils import workdir as workdir_lib

NONFINITE_POLICIES = ("skip", "stop")
META_STATE_NAME = "meta_state.npz"


class NonFiniteError(RuntimeError):
  """Raised after too many consecutive non-finite meta-updates."""


class Diverged(NonFiniteError):
  """``nonfinite="stop"``: outer iteration ``iteration`` was non-finite or absurd; the run ended there and
  nothing from that iteration on was saved."""

  def __init__(self, iteration, message):
    super().__init__(message)
    self.iteration = int(iteration)


def nonfinite_policy(config):
  """``config.nonfinite`` ("skip" when the field is absent, as in configs made before it existed)."""
  return config.get("nonfinite", "skip")


class Interrupted(Exception):
  """Raised by ``train`` when ``stop_fn`` asked to stop (a signal); the state was saved first."""

  def __init__(self, signum, message):
    super().__init__(message)
    self.signum = int(signum)
    self.exit_code = 128 + self.signum


class CheckpointWriteError(OSError):
  """A checkpoint or phi.npz could not be written (disk full ...); the previous checkpoint is intact."""


class VarTree:
  """A nested structure of tensors held in ``tf.Variable``s (for checkpoints and in-graph updates)."""

  def __init__(self, structure, name):
    # The layout only: holding the initial tensors would keep a second copy of all units alive once the
    # variables are first assigned (5.1 GB for grid6 at 512 units per task).
    self._structure = tf.nest.map_structure(lambda _: 0, structure)
    self.variables = [
        tf.Variable(x, trainable=False, name=f"{name}_{i}") for i, x in enumerate(tf.nest.flatten(structure))
    ]

  def read(self):
    return tf.nest.pack_sequence_as(self._structure, [v.read_value() for v in self.variables])

  def assign(self, structure):
    for v, x in zip(self.variables, tf.nest.flatten(structure)):
      v.assign(x)


def _assigned(tree, structure):
  """Assigns ``structure`` to the VarTree ``tree``; True once done (a tf.cond branch)."""
  tree.assign(structure)
  return tf.constant(True)


def divergence_advice(config, checks):
  """What failed in a skipped outer iteration and the knob to turn, from the guard's ``checks`` ([3] ints:
  meta-gradient finite, phi within ``meta_params.PHI_LIMIT``, agents finite and within ``meta_params.ABSURD``;
  1 passed)."""
  grads_ok, phi_ok, agents_ok = (bool(x) for x in np.asarray(checks))
  clip_v, norm_v = config.get("meta_grad_clip", -1.0), config.get("meta_grad_norm", -1.0)
  clip = (f"meta_grad_clip={clip_v:g}"
          if clip_v > 0 else f"meta_grad_norm={norm_v:g}" if norm_v > 0 else "no meta-gradient clipping")
  parts = []
  if not agents_ok:
    knobs = ("the tasks' learning_rate or agent_grad_clip" if "tasks" in config else
             "learning_rate or grad_clip" if "learning_rate" in config else "the agents' learning rate")
    parts.append(f"the agents' parameters became non-finite or absurd (|x| > {meta_params_lib.ABSURD:g}) "
                 f"inside the inner loop: lower the agents' step ({knobs})")
  if not grads_ok:
    parts.append(f"the meta-gradient was non-finite ({clip}): set meta_grad_clip or meta_grad_norm, or lower "
                 f"meta_lr (now {config.meta_lr:g})")
  if not phi_ok:
    parts.append(f"phi left |x| <= {meta_params_lib.PHI_LIMIT:g} after the meta-update ({clip}): lower meta_lr "
                 f"(now {config.meta_lr:g})")
  return "; ".join(parts) or "a non-finite meta-loss or metric"


def _times(shape, axis, factor):
  """``shape`` as a list with ``shape[axis]`` multiplied by ``factor``."""
  out = shape.as_list()
  out[axis] *= factor
  return out


def _all_finite(structure):
  flags = [tf.reduce_all(tf.math.is_finite(x)) for x in tf.nest.flatten(structure) if x.dtype.is_floating]
  return tf.reduce_all(tf.stack(flags))


def _first_line(e):
  text = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
  return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


META_AGENTS = tuple(registry._BUILTIN)  # pylint: disable=protected-access


def estimator_for(problem, core, through_data=False, chunk_size=0):
  """The estimator of ``problem`` with ``core``: ``ReplayedVJP`` (chunked) when the core's gradient input is
  under stop-gradient and the data do not depend on phi, else ``FullUnroll`` (STAR: second order)."""
  if estimators_lib.is_feature_major(core) and not through_data:
    return estimators_lib.ReplayedVJP(problem, chunk_size=chunk_size)
  return estimators_lib.FullUnroll(problem)


def build(config):
  """(estimators, learned optimizer core, initial phi, outer iterations) of a meta-training config."""
  entry = registry.lookup(config)
  is_star = config.optimizer.name == "star"
  core, phi0 = meta_params_lib.resolve(config.optimizer.name,
                                       pretrained.file_of(config.optimizer.init_meta_params) or None,
                                       mlp_dims=None if is_star else tuple(config.optimizer.mlp_dims),
                                       hidden_size=None if is_star else config.optimizer.hidden_size,
                                       seed=config.seed)
  through = entry.through_data(config)
  chunk = int(config.get("chunk_size", 0))
  ests = [estimator_for(p, core, through, chunk) for p in entry.build(config)]
  return ests, core, phi0, entry.num_iterations(config)


def schedule_interval(config):
  """m of the pipeline schedule: ``config.reset_interval`` when ``config.pipeline``, else -1 (never)."""
  return int(config.reset_interval) if config.get("pipeline", False) else -1


def outer_iteration(estimator, core, phi, units, iteration, key, reset_indices, reset_interval):
  """One outer iteration of one estimator's problem: the pipeline reset of the units due at ``iteration``
  (key ``split(key)[0]``), then ``estimator.estimate`` (key ``split(key)[1]``). Returns (new units,
  meta-gradient dict like phi, metrics)."""
  keys = tf.random.experimental.stateless_split(key, 2)
  mask = pipeline.reset_mask(iteration, reset_indices, reset_interval)
  units = pipeline.reset(units, lambda: estimator.init_units(core, keys[0]), mask, estimator.problem.num_units,
                         estimator.unit_axes(core))
  return estimator.estimate(core, phi, units, keys[1])


def trainer_config(**fields):
  """A ConfigDict of the fields MetaTrainer itself reads (defaults as configs/meta_a2c.py, no pipeline), for
  estimators passed to it directly; ``fields`` override them (num_iterations must be set)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = ml_collections.ConfigDict(
      dict(seed=0,
           num_iterations=0,
           meta_lr=1e-3,
           meta_grad_clip=-1.0,
           meta_grad_norm=0.5,
           max_norm=-1.0,
           checkpoint_every=10,
           max_nonfinite=5,
           nonfinite="skip",
           pipeline=False,
           reset_interval=-1))
  c.update(fields)
  return c


def _complete_checkpoints(folder):
  """Prefixes ``folder/ckpt-N`` that have an ``.index`` and a data file, by N."""
  found = []
  for index in glob.glob(os.path.join(folder, "ckpt-*.index")):
    prefix = index[:-len(".index")]
    try:
      n = int(os.path.basename(prefix).split("-", 1)[1])
    except ValueError:
      continue
    if glob.glob(prefix + ".data-*"):
      found.append((n, prefix))
  return [p for _, p in sorted(found)]


def _repair_state_file(folder):
  """The checkpoint manager resumes from the checkpoints its state file (``checkpoint``) lists. When that file
  is missing or unreadable but complete checkpoints are on disk, it is rewritten to list the newest two (with
  a warning line), so a resume neither restarts from iteration 0 nor deletes them. Returns True if rewritten."""
  found = _complete_checkpoints(folder)
  if not found:
    return False
  try:
    state = tf.train.get_checkpoint_state(folder)
  except Exception:  # pylint: disable=broad-except   (a damaged text proto)
    state = None
  if state is not None and state.model_checkpoint_path and any(
      os.path.basename(p) in {os.path.basename(f) for f in found} for p in state.all_model_checkpoint_paths):
    return False
  keep = found[-2:]
  stamps = [os.path.getmtime(p + ".index") for p in keep]
  tf.compat.v1.train.update_checkpoint_state(folder,
                                             keep[-1],
                                             all_model_checkpoint_paths=keep,
                                             all_model_checkpoint_timestamps=stamps,
                                             last_preserved_timestamp=min(stamps) - 1.0)
  print(
      f"WARNING: the checkpoint list {os.path.join(folder, 'checkpoint')} was missing or damaged; rebuilt "
      f"from the checkpoints on disk (newest: {os.path.basename(found[-1])})",
      flush=True)
  return True


class MetaTrainer:
  """Owns the variables, the compiled outer step and the checkpoint manager of one run.

  Without ``estimators`` it builds the run from a meta-training config (:func:`build`). With
  ``estimators`` (``estimators.ReplayedVJP`` / ``FullUnroll``, each holding a ``problem.InnerProblem``),
  ``core`` (the learned optimizer's core) and ``phi`` (its initial meta-parameters, a dict of arrays),
  ``config`` needs only the fields of :func:`trainer_config` and runs ``config.num_iterations`` outer
  iterations.
  """

  def __init__(self, config, workdir=None, estimators=None, core=None, phi=None, workers=None):
    self.config = config
    self.workdir = workdir
    self.workers = workers  # workers.Workers: this process holds a share of the units (workers.py)
    if estimators is None:
      estimators, self.core, phi0, self.total_iterations = build(config)
    else:
      if core is None or phi is None:
        raise ValueError("MetaTrainer(estimators=...) needs the learned optimizer's core and initial phi")
      if int(config.num_iterations) < 1:
        raise ValueError(f"num_iterations must be a positive integer, got {config.num_iterations!r}")
      self.core, phi0, self.total_iterations = core, phi, int(config.num_iterations)
    self.estimators = list(estimators)
    for e in self.estimators:
      if not isinstance(e, estimators_lib.Estimator):
        raise TypeError(f"{type(e).__name__} is not an estimator (optim4rl_tf.meta.estimators): give "
                        "ReplayedVJP(problem) or FullUnroll(problem)")
    problem_lib.as_problems(e.problem for e in self.estimators)
    interval = schedule_interval(config)
    # The reset indices of one process's run (of this worker's units).
    self.schedule = [(pipeline.reset_indices(e.problem.num_units, interval), interval) for e in self.estimators]
    if workers is not None:
      slices = [workers.unit_slice(e.problem.num_units, f"inner problem {e.name!r}") for e in self.estimators]
      self.estimators = [e.for_units(s) for e, s in zip(self.estimators, slices)]
      self.unit_slices = slices
      self.schedule = [(r[s.start:s.start + s.count], m) for (r, m), s in zip(self.schedule, slices)]
    self.problems = problem_lib.as_problems(e.problem for e in self.estimators)
    # A MetaA2C/MetaPPO task, or the problem itself when it has none.
    self.tasks = [getattr(p, "task", p) for p in self.problems]
    self.keys = sorted(phi0)
    for k in self.keys:
      if not np.all(np.abs(np.asarray(phi0[k])) <= meta_params_lib.PHI_LIMIT):
        raise ValueError(f"the initial phi has non-finite or absurd (|x| > {meta_params_lib.PHI_LIMIT:g}) "
                         f"entries in {k!r}")
    self.phi = [tf.Variable(phi0[k], name=k.replace("/", "_")) for k in self.keys]
    self.adam = VarTree([classical.adam_init(tf.constant(phi0[k])) for k in self.keys], "adam")
    base = tf.constant([config.seed, 0x5eed], tf.int32)
    self.base_key = base
    self.units = [
        VarTree(e.init_units(self.core, tf.random.experimental.stateless_fold_in(base, 1000 + i)), f"units{i}")
        for i, e in enumerate(self.estimators)
    ]
    self.iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
    self.skipped_total = tf.Variable(0, dtype=tf.int64, name="skipped_total")
    self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, name="skipped_in_a_row")
    # The last iteration's guard checks (meta-gradient, phi, agents): 1 passed, 0 failed; not checkpointed.
    self.last_checks = tf.Variable([1, 1, 1], dtype=tf.int32, trainable=False, name="last_checks")
    self.manager = None
    self.units_restarted_at = []  # outer iterations where the run went on from meta_state.npz, agents fresh
    self.resumed_from_meta_state = False  # this process went on from meta_state.npz (no checkpoint)
    # Checkpoints hold all units as one process has them (with workers: gathered into full-size variables).
    self.saved_units = self.units if workers is None else [
        VarTree(
            workers_lib.map_units(lambda x, a: tf.zeros(_times(x.shape, a, workers.num_workers), x.dtype), u.read(),
                                  e.unit_axes(self.core)), f"all_units{i}")
        for i, (u, e) in enumerate(zip(self.units, self.estimators))
    ]
    self._gather = None
    if workdir:
      ckpt = tf.train.Checkpoint(phi=self.phi,
                                 adam=self.adam.variables,
                                 units=[u.variables for u in self.saved_units],
                                 iteration=self.iteration,
                                 skipped_total=self.skipped_total,
                                 skipped_in_a_row=self.skipped_in_a_row)
      folder = os.path.join(workdir, "checkpoints")
      if self.is_chief:  # only the chief writes the workdir
        _repair_state_file(folder)  # a missing or unreadable state file: rebuilt from the checkpoints on disk
        self.manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=2)
        self._remove_partial_checkpoints()  # left by a process killed while saving
      if workers is not None:
        workers.agree_max([0])  # a barrier: the chief has tidied the checkpoints
        self.manager = self.manager or tf.train.CheckpointManager(ckpt, folder, max_to_keep=2)
      restored = self._restore(ckpt)
      if workers is not None:
        self._take_restored_units(restored)
      self._read_meta_state(restore=not restored)
    # The state after this iteration is on disk (0: the initial state, which the config reproduces).
    self._saved_iteration = int(self.iteration.numpy())

  # -------------------------------------------------------------------------------------------------

  def _combine(self, task_grads):
    """The meta-gradient Adam applies: ``meta_grads.combine`` with this run's clipping settings."""
    cfg = self.config
    shapes = {k: v.shape for k, v in zip(self.keys, self.phi)}
    return meta_grads.combine(self.keys,
                              shapes,
                              task_grads,
                              max_norm=cfg.max_norm,
                              meta_grad_clip=cfg.meta_grad_clip,
                              meta_grad_norm=cfg.meta_grad_norm)

  @property
  def is_chief(self):
    """Whether this process writes the workdir (always without workers)."""
    return self.workers is None or self.workers.is_chief

  def _take_restored_units(self, restored):
    """Workers: the same iteration restored everywhere (one ValueError otherwise), each worker's units the
    slice of the restored ones."""
    hi, lo = self.workers.agree_max([int(self.iteration.numpy())])
    if hi != lo:
      raise ValueError(f"the workers found different checkpoints in {self.workdir} (outer iterations {lo[0]} to "
                       f"{hi[0]}): every worker must read the chief's --workdir (a filesystem all machines share)")
    if restored:
      for tree, full, e, s in zip(self.units, self.saved_units, self.estimators, self.unit_slices):
        tree.assign(workers_lib.map_units(s.take, full.read(), e.unit_axes(self.core)))

  def _gather_units(self):
    """Workers: every worker's units into ``saved_units`` (a collective; every worker calls it)."""
    if self._gather is None:

      def gather():
        for full, tree, e in zip(self.saved_units, self.units, self.estimators):
          full.assign(self.workers.gather(tree.read(), e.unit_axes(self.core)))
        return tf.constant(0)

      self._gather = tf.function(lambda: self.workers.run(gather))
    self.workers.call(self._gather)

  @tf.function
  def _step(self):
    if self.workers is not None:
      return self.workers.run(self._outer_step)
    return self._outer_step()

  def _outer_step(self):
    t = self.iteration + 1
    key = tf.random.experimental.stateless_fold_in(self.base_key, tf.cast(t, tf.int32))
    phi = {k: v.read_value() for k, v in zip(self.keys, self.phi)}
    task_grads, agents_ok, metrics, previous = [], [], {}, []
    for i, (estimator, units) in enumerate(zip(self.estimators, self.units)):
      problem = estimator.problem
      # One task after another: without the dependency the executor may run the tasks' rollouts and replays
      # at the same time, so the peak memory would be the sum of their working sets instead of the largest.
      # The order changes no number.
      with tf.control_dependencies(previous):
        units_new, grads, m = outer_iteration(estimator, self.core, phi, units.read(), t,
                                              tf.random.experimental.stateless_fold_in(key, i), *self.schedule[i])
      # The task's agents: sane parameters, and (MetaA2C) rollouts that only ever saw sane ones (params_ok).
      ok = pipeline.all_sane([problem_lib.agent_params(units_new)])
      if "params_ok" in m:
        ok = tf.logical_and(ok, m["params_ok"] > 0)
      # Streamed units: a task's sane new units replace its old ones as soon as the task is done, so that at
      # most one task holds two copies of its units at a time (all tasks' new units kept until the phi
      # update would add them all to the peak: the units of grid6 at 512 units per task are 5.1 GB).
      stored = tf.cond(ok, lambda u=units, x=units_new: _assigned(u, x), lambda: tf.constant(False))
      previous = tf.nest.flatten(grads) + [stored]
      task_grads.append(grads)
      agents_ok.append(ok)
      metrics.update({f"{problem.name}/{k}": v for k, v in m.items()})
    if self.workers is not None:  # the means over this worker's units -> the means over all units
      task_grads = self.workers.mean(task_grads)
    grads, grad_norm = self._combine(task_grads)
    adam_out = [classical.adam_update(s, g, self.config.meta_lr) for s, g in zip(self.adam.read(), grads)]
    new_phi = [phi[k] + u for k, (u, _) in zip(self.keys, adam_out)]
    # Divergence guard: a finite but absurd phi (meta_lr=1e30) or agent would blow up the next rollouts.
    checks = tf.stack(
        [_all_finite(grads),
         pipeline.all_sane(new_phi, meta_params_lib.PHI_LIMIT),
         tf.reduce_all(tf.stack(agents_ok))])
    if self.workers is not None:  # every worker applies or skips: passed on all; metrics: means over workers
      metrics, passed = self.workers.mean((metrics, tf.cast(checks, tf.float32)))
      checks = tf.equal(passed, 1.0)
    self.last_checks.assign(tf.cast(checks, tf.int32))
    finite = tf.reduce_all(checks)

    def apply():
      for v, x in zip(self.phi, new_phi):
        v.assign(x)
      self.adam.assign([s for _, s in adam_out])
      self.skipped_in_a_row.assign(0)
      return tf.constant(True)

    def skip():
      self.skipped_total.assign_add(1)
      self.skipped_in_a_row.assign_add(1)
      return tf.constant(False)

    applied = tf.cond(finite, apply, skip)
    self.iteration.assign(t)
    metrics.update({
        "meta/grad_norm": grad_norm,
        "meta/applied": tf.cast(applied, tf.float32),
        "meta/phi_norm": meta_grads.global_norm([v.read_value() for v in self.phi])
    })
    return metrics

  # -------------------------------------------------------------------------------------------------

  def meta_params(self):
    """Current phi as a dict {npz key: np.ndarray}."""
    return {k: v.numpy() for k, v in zip(self.keys, self.phi)}

  @property
  def applied_through(self):
    """The last applied outer iteration (phi is the one after it)."""
    return int(self.iteration.numpy()) - int(self.skipped_in_a_row.numpy())

  def _restore(self, ckpt):
    """Restores the newest checkpoint that reads; a damaged (truncated) newest one falls back to the one
    before it with a warning line. Nothing is deleted. A checkpoint that reads but does not fit this config
    is one ValueError naming the config; none that reads is one ValueError naming the damage. Returns whether a checkpoint was restored."""
    latest = self.manager.latest_checkpoint
    candidates = ([latest] if latest else []) + [p for p in reversed(self.manager.checkpoints) if p != latest]
    damaged = []
    for path in candidates:
      try:
        status = ckpt.restore(path)
      except Exception as e:  # pylint: disable=broad-except   (truncated files raise all sorts)
        damaged.append(f"{os.path.basename(path)}: {_first_line(e)}")
        continue
      try:
        status.assert_existing_objects_matched()
      except (AssertionError, ValueError) as e:
        raise ValueError(f"checkpoint {path} does not fit this config ({_first_line(e)}); use the "
                         "config it was made with or a new --workdir") from None
      if damaged:
        print(
            f"WARNING: damaged checkpoint(s) skipped ({'; '.join(damaged)}); resuming from "
            f"{os.path.basename(path)} (outer iteration {int(self.iteration.numpy())})",
            flush=True)
      return True
    if damaged:
      raise ValueError(f"every checkpoint in {self.manager.directory} is damaged ({'; '.join(damaged)}); nothing "
                       "was deleted: move the folder away to start afresh, or use a new --workdir")

  def _meta_state(self):
    """{npz key: array}: phi, the Adam state, the counters and ``units_restarted_at``."""
    out = {f"phi/{k}": v.numpy() for k, v in zip(self.keys, self.phi)}
    out.update({f"adam/{i}": v.numpy() for i, v in enumerate(self.adam.variables)})
    out.update(iteration=self.iteration.numpy(),
               skipped_total=self.skipped_total.numpy(),
               skipped_in_a_row=self.skipped_in_a_row.numpy(),
               units_restarted_at=np.asarray(self.units_restarted_at, np.int64))
    return out

  def _read_meta_state(self, restore):
    """Reads the workdir's meta_state.npz, if any: its ``units_restarted_at`` always; with ``restore`` (no
    checkpoint was restored) also phi, Adam and the counters, and the agents start fresh at that iteration.
    A file that does not fit this config is one ValueError; nothing is written."""
    path = os.path.join(self.workdir, META_STATE_NAME)
    if not os.path.exists(path):
      return
    try:
      with np.load(path, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    except Exception as e:  # pylint: disable=broad-except   (truncated or foreign files raise all sorts)
      raise ValueError(f"{path} cannot be read ({_first_line(e)}); move it away to start afresh") from None
    want = self._meta_state()
    wrong = sorted(k for k in set(want) ^ set(state)) + sorted(
        k for k in set(want) & set(state) if k != "units_restarted_at" and state[k].shape != want[k].shape)
    if wrong:
      raise ValueError(f"{path} does not fit this config (keys or shapes differ: {', '.join(wrong[:4])}); use the "
                       "config it was made with or a new --workdir")
    self.units_restarted_at = [int(x) for x in state["units_restarted_at"]]
    if not restore:
      return
    for k, v in zip(self.keys, self.phi):
      v.assign(state[f"phi/{k}"])
    for i, v in enumerate(self.adam.variables):
      v.assign(state[f"adam/{i}"])
    for name in ("iteration", "skipped_total", "skipped_in_a_row"):
      getattr(self, name).assign(state[name])
    t = int(self.iteration.numpy())
    # Fresh agents, drawn with a key of this iteration (not the initial agents again).
    base = tf.random.experimental.stateless_fold_in(self.base_key, tf.cast(t, tf.int32))
    for i, (e, units) in enumerate(zip(self.estimators, self.units)):
      units.assign(e.init_units(self.core, tf.random.experimental.stateless_fold_in(base, 1000 + i)))
    self.units_restarted_at.append(t)
    self.resumed_from_meta_state = True

  def _write_meta_state(self):
    buf = io.BytesIO()
    np.savez(buf, **self._meta_state())
    workdir_lib.atomic_write(os.path.join(self.workdir, META_STATE_NAME), buf.getvalue())

  def _remove_partial_checkpoints(self):
    """Deletes what a save cut short: ``ckpt-N_temp`` folders and the files of incomplete checkpoints (no
    ``.index`` or no data file) the manager does not list. Complete checkpoints are never deleted."""
    folder = self.manager.directory
    kept = {os.path.basename(p) for p in self.manager.checkpoints}
    complete = {os.path.basename(p) for p in _complete_checkpoints(folder)}
    for path in glob.glob(os.path.join(folder, "ckpt-*")):
      name = os.path.basename(path)
      prefix = name.split(".")[0]
      if (prefix in kept or prefix in complete) and not name.endswith("_temp"):
        continue
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        try:
          os.remove(path)
        except OSError:
          pass

  def save(self):
    """Checkpoint + ``phi.npz`` (atomic) in the workdir. A failed write removes what it left and raises
    :class:`CheckpointWriteError` (one line); the previous checkpoint stays the latest."""
    if self.manager is None:
      return
    t = int(self.iteration.numpy())
    if self.workers is not None:
      self._gather_units()  # every worker: all units into the checkpoint's variables
      if not self.workers.is_chief:
        self._saved_iteration = t
        return
    try:
      self.manager.save(checkpoint_number=t)
      meta_params_lib.save(os.path.join(self.workdir, "phi.npz"), self.core, self.meta_params())
      self._write_meta_state()
    except (OSError, tf.errors.OpError) as e:
      self._remove_partial_checkpoints()
      previous = self.manager.latest_checkpoint
      previous = f"{os.path.basename(previous)} is intact" if previous else "no earlier checkpoint exists"
      raise CheckpointWriteError(
          f"could not save outer iteration {t} in {self.workdir} ({_first_line(e)}); {previous}; free "
          "disk space and run again with the same --workdir") from None
    self._saved_iteration = t

  def _run_step(self):
    return self._step() if self.workers is None else self.workers.call(self._step)

  def run_iteration(self):
    """One outer iteration. Returns a dict of float metrics; raises NonFiniteError when too many
    consecutive iterations were skipped."""
    metrics = {k: float(v) for k, v in self._run_step().items()}
    self._check_skips(metrics)
    return metrics

  def _check_skips(self, metrics):
    """Raises Diverged at the first skipped iteration (``nonfinite="stop"``), else NonFiniteError when
    ``max_nonfinite`` iterations in a row were skipped."""
    if not metrics["meta/applied"] and nonfinite_policy(self.config) == "stop":
      t, saved = int(self.iteration.numpy()), self._saved_iteration
      kept = (f"; {self.workdir} keeps only checkpoints from before it (latest: iteration {saved})"
              if saved and self.workdir else "")
      raise Diverged(
          t, f"meta-training diverged at outer iteration {t}: {divergence_advice(self.config, self.last_checks)} "
          f"(nonfinite='stop', as the official MetaPPO); nothing was saved from iteration {t} on{kept}; this "
          "run has no learned optimizer")
    if not metrics["meta/applied"]:
      in_a_row = int(self.skipped_in_a_row.numpy())
      if in_a_row >= self.config.max_nonfinite:
        last = self.applied_through
        where = ("no iteration was applied"
                 if last == 0 else f"phi.npz in {self.workdir} holds phi after iteration {last}, the last applied one"
                 if self.workdir else f"the last applied iteration was {last}")
        raise NonFiniteError(f"{in_a_row} consecutive outer iterations were skipped; stopping at iteration "
                             f"{int(self.iteration.numpy())}; {where}; the last one: "
                             f"{divergence_advice(self.config, self.last_checks)} (in a new --workdir)")

  def train(self, progress_fn=None, stop_fn=None):
    """Runs to ``total_iterations``, checkpointing every ``checkpoint_every`` and at the end; returns phi.

    ``stop_fn()`` is polled after every iteration; a true value (a signal number) saves the last completed
    iteration and raises :class:`Interrupted`. A :class:`NonFiniteError` stop saves applied iterations that
    were not yet checkpointed first; a :class:`Diverged` stop (``nonfinite="stop"``) saves nothing.
    """
    every = max(int(self.config.checkpoint_every), 1)
    while int(self.iteration.numpy()) < self.total_iterations:
      metrics = {k: float(v) for k, v in self._run_step().items()}
      t = int(self.iteration.numpy())
      if progress_fn is not None:
        progress_fn(t, metrics)  # also for the iteration that stops the run below: it is logged
      try:
        self._check_skips(metrics)
      except Diverged:
        raise  # "stop": nothing more is saved
      except NonFiniteError:
        if self.applied_through > self._saved_iteration:
          self.save()
        raise
      # Periodic checkpoints hold applied iterations only: a skipped one leaves the last good one latest.
      if metrics["meta/applied"] and t % every == 0:
        self.save()
      signum = stop_fn() if stop_fn is not None else None
      if self.workers is not None:  # a signal to any worker stops all after this iteration
        signum = self.workers.agree_max([signum or 0])[0][0] or None
      if signum:
        if t > self._saved_iteration:
          self.save()
        name = signal.Signals(signum).name if signum in set(signal.Signals) else f"signal {signum}"
        raise Interrupted(
            signum, f"interrupted by {name} after outer iteration {t}/{self.total_iterations}" +
            (f"; saved it in {self.workdir}, run again with the same --workdir to resume" if self.workdir else ""))
    self.finish()
    return self.meta_params()

  def finish(self):
    """Saves the final state (checkpoint + phi.npz) unless it is on disk already."""
    if self.manager is None:
      return
    due = (int(self.iteration.numpy()) > self._saved_iteration or
           not os.path.exists(os.path.join(self.workdir, "phi.npz")))
    if self.workers is not None:  # saving is collective: all or none
      due = self.workers.agree_max([due])[0][0]
    if due:
      self.save()
