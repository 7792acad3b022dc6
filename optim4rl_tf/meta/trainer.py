"""The meta-training loop: tasks, meta-optimizer, checkpoints, NaN guard (docs/fidelity.md §5.4, §5.7, §5.8).

  trainer = MetaTrainer(config, workdir)     # builds the config's problems, restores the latest checkpoint
  phi = trainer.train(progress_fn)           # runs to the last outer iteration; returns phi (dict of arrays)
  # inner problems of your own (problem.InnerProblem), config with the fields of ``trainer_config``:
  trainer = MetaTrainer(trainer_config(num_iterations=10), workdir, problems=[...], core=core, phi=phi0)

Configs (``build``; ``meta.run`` validates them): configs/meta_a2c.py (a ``meta_a2c.MetaA2C`` per task,
``meta_a2c_star.MetaA2Cstar`` for STAR), configs/ppo.py ``meta_*`` (``meta_ppo.MetaPPO``, ``MetaPPOstar``).

Per outer iteration: every task (inner problem) runs its ``outer_iteration`` with the same phi; the per-task
meta-gradients (means over units) are optionally normalised to ``max_norm`` (per task, §5.4 item 2), averaged
over tasks, clipped (elementwise ``meta_grad_clip`` or global-norm ``meta_grad_norm``) and applied with
Adam (optax defaults, §0.2). A non-finite meta-gradient, a non-finite or absurd (|x| > ``pipeline.ABSURD``)
phi or agent parameters (checked in-graph, also inside the inner loop before any rollout uses them) are never
applied. ``config.nonfinite`` says what happens then: ``"skip"`` (default) skips and counts the iteration;
after ``max_nonfinite`` consecutive skips the run stops with :class:`NonFiniteError`, after saving the applied
iterations not yet checkpointed. ``"stop"`` (the official MetaPPO/MetaPPOstar, docs/fidelity.md §5.4) ends the
run at the first such iteration with :class:`Diverged` and saves nothing from that iteration on.

The final state is always saved (checkpoint + ``phi.npz``), also when the last iterations were skipped;
``train(stop_fn=...)`` stops cleanly between iterations (signals) with :class:`Interrupted` after saving; a
failed write (disk full) raises :class:`CheckpointWriteError` and leaves no ``ckpt-N_temp`` behind.

Everything that determines the future lives in ``tf.Variable``s saved by ``tf.train.CheckpointManager``
every ``checkpoint_every`` iterations: phi, Adam state, all unit states, the iteration counter and the skip
counters. Randomness is stateless, keyed by (seed, iteration, task), so a run killed at any moment and
restarted with the same workdir finishes with exactly the phi of an uninterrupted run.
"""

import glob
import os
import shutil
import signal

import numpy as np
import tensorflow as tf

from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_a2c_star
from optim4rl_tf.meta import meta_grads
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import meta_params as meta_params_lib

NONFINITE_POLICIES = ("skip", "stop")


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
    self._structure = structure
    self.variables = [
        tf.Variable(x, trainable=False, name=f"{name}_{i}") for i, x in enumerate(tf.nest.flatten(structure))
    ]

  def read(self):
    return tf.nest.pack_sequence_as(self._structure, [v.read_value() for v in self.variables])

  def assign(self, structure):
    for v, x in zip(self.variables, tf.nest.flatten(structure)):
      v.assign(x)


def _all_finite(structure):
  flags = [tf.reduce_all(tf.math.is_finite(x)) for x in tf.nest.flatten(structure) if x.dtype.is_floating]
  return tf.reduce_all(tf.stack(flags))


def _first_line(e):
  text = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
  return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


META_AGENTS = ("meta_a2c", "meta_ppo")


def meta_agent(config):
  """The meta-training algorithm of a config: its ``agent`` field ("meta_ppo" in configs/ppo.py ``meta_*``),
  "meta_a2c" when it has none (configs/meta_a2c.py). Raises ValueError for a config of another trainer."""
  agent = config.get("agent", "meta_a2c")
  if agent not in META_AGENTS:
    raise ValueError(f"config.agent {agent!r} is not a meta-training config (valid: {', '.join(META_AGENTS)}: "
                     "configs/meta_a2c.py, configs/ppo.py:meta_*); train it with launch/train.py")
  return agent


def build(config):
  """(inner problems, learned optimizer core, initial phi, outer iterations) of a meta-training config."""
  is_star = config.optimizer.name == "star"
  core, phi0 = meta_params_lib.resolve(config.optimizer.name,
                                       config.optimizer.init_meta_params or None,
                                       mlp_dims=None if is_star else tuple(config.optimizer.mlp_dims),
                                       hidden_size=None if is_star else config.optimizer.hidden_size,
                                       seed=config.seed)
  # STAR needs second-order meta-gradients (estimators.full_unroll): its own inner problems.
  if meta_agent(config) == "meta_ppo":  # the Brax stack is imported only for MetaPPO configs
    from optim4rl_tf.meta import meta_ppo
    from optim4rl_tf.meta import meta_ppo_star
    from optim4rl_tf.meta import meta_ppo_task
    problem = meta_ppo_star.MetaPPOstar if is_star else meta_ppo.MetaPPO
    return [problem(meta_ppo_task.build_task(config))], core, phi0, meta_ppo_task.num_iterations(config)
  problem = meta_a2c_star.MetaA2Cstar if is_star else meta_a2c.MetaA2C
  return [problem(t) for t in meta_a2c.build_tasks(config)], core, phi0, meta_a2c.num_iterations(config)


def trainer_config(**fields):
  """A ConfigDict of the fields MetaTrainer itself reads (defaults as configs/meta_a2c.py), for inner
  problems passed to it directly; ``fields`` override them (num_iterations must be set)."""
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
           nonfinite="skip"))
  c.update(fields)
  return c


class MetaTrainer:
  """Owns the variables, the compiled outer step and the checkpoint manager of one run.

  Without ``problems`` it builds the run from a meta-training config (:func:`build`). With
  ``problems`` (objects implementing ``problem.InnerProblem``), ``core`` (the learned optimizer's core) and
  ``phi`` (its initial meta-parameters, a dict of arrays), ``config`` needs only the fields of
  :func:`trainer_config` and runs ``config.num_iterations`` outer iterations.
  """

  def __init__(self, config, workdir=None, problems=None, core=None, phi=None):
    self.config = config
    self.workdir = workdir
    if problems is None:
      problems, self.core, phi0, self.total_iterations = build(config)
    else:
      if core is None or phi is None:
        raise ValueError("MetaTrainer(problems=...) needs the learned optimizer's core and initial phi")
      if int(config.num_iterations) < 1:
        raise ValueError(f"num_iterations must be a positive integer, got {config.num_iterations!r}")
      self.core, phi0, self.total_iterations = core, phi, int(config.num_iterations)
    self.problems = problem_lib.as_problems(problems)
    # A MetaA2C/MetaPPO task, or the problem itself when it has none.
    self.tasks = [getattr(p, "task", p) for p in self.problems]
    self.keys = sorted(phi0)
    for k in self.keys:
      if not np.all(np.abs(np.asarray(phi0[k])) <= pipeline.ABSURD):
        raise ValueError(f"the initial phi has non-finite or absurd (|x| > {pipeline.ABSURD:g}) entries in "
                         f"{k!r}")
    self.phi = [tf.Variable(phi0[k], name=k.replace("/", "_")) for k in self.keys]
    self.adam = VarTree([classical.adam_init(tf.constant(phi0[k])) for k in self.keys], "adam")
    base = tf.constant([config.seed, 0x5eed], tf.int32)
    self.base_key = base
    self.units = [
        VarTree(p.fresh_units(self.core, tf.random.experimental.stateless_fold_in(base, 1000 + i)), f"units{i}")
        for i, p in enumerate(self.problems)
    ]
    self.iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
    self.skipped_total = tf.Variable(0, dtype=tf.int64, name="skipped_total")
    self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, name="skipped_in_a_row")
    self.manager = None
    if workdir:
      ckpt = tf.train.Checkpoint(phi=self.phi,
                                 adam=self.adam.variables,
                                 units=[u.variables for u in self.units],
                                 iteration=self.iteration,
                                 skipped_total=self.skipped_total,
                                 skipped_in_a_row=self.skipped_in_a_row)
      self.manager = tf.train.CheckpointManager(ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=2)
      self._remove_partial_checkpoints()  # left by a process killed while saving
      latest = self.manager.latest_checkpoint
      if latest:
        try:
          ckpt.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
          raise ValueError(f"checkpoint {latest} does not fit this config ({_first_line(e)}); use the "
                           "config it was made with or a new --workdir") from None
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

  @tf.function
  def _step(self):
    t = self.iteration + 1
    key = tf.random.experimental.stateless_fold_in(self.base_key, tf.cast(t, tf.int32))
    phi = {k: v.read_value() for k, v in zip(self.keys, self.phi)}
    task_grads, new_units, metrics = [], [], {}
    for i, (problem, units) in enumerate(zip(self.problems, self.units)):
      units_new, grads, m = problem.outer_iteration(self.core, phi, units.read(), t,
                                                    tf.random.experimental.stateless_fold_in(key, i))
      task_grads.append(grads)
      new_units.append(units_new)
      metrics.update({f"{problem.name}/{k}": v for k, v in m.items()})
    grads, grad_norm = self._combine(task_grads)
    adam_out = [classical.adam_update(s, g, self.config.meta_lr) for s, g in zip(self.adam.read(), grads)]
    new_phi = [phi[k] + u for k, (u, _) in zip(self.keys, adam_out)]
    # Divergence guard: a finite but absurd phi (meta_lr=1e30) or agent would blow up the next rollouts.
    # MetaA2C's inner loop also reports whether its rollouts only ever saw sane parameters (params_ok).
    checks = [
        _all_finite(grads),
        pipeline.all_sane(new_phi),
        pipeline.all_sane([problem_lib.agent_params(u) for u in new_units])
    ]
    checks += [metrics[f"{p.name}/params_ok"] > 0 for p in self.problems if f"{p.name}/params_ok" in metrics]
    finite = tf.reduce_all(tf.stack(checks))

    def apply():
      for v, x in zip(self.phi, new_phi):
        v.assign(x)
      self.adam.assign([s for _, s in adam_out])
      for tree, u in zip(self.units, new_units):
        tree.assign(u)
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

  def _remove_partial_checkpoints(self):
    """Deletes ``ckpt-N_temp`` folders and files of checkpoints the manager does not list."""
    folder = self.manager.directory
    kept = {os.path.basename(p) for p in self.manager.checkpoints}
    for path in glob.glob(os.path.join(folder, "ckpt-*")):
      name = os.path.basename(path)
      if name.split(".")[0] in kept and not name.endswith("_temp"):
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
    try:
      self.manager.save(checkpoint_number=t)
      meta_params_lib.save(os.path.join(self.workdir, "phi.npz"), self.core, self.meta_params())
    except (OSError, tf.errors.OpError) as e:
      self._remove_partial_checkpoints()
      previous = self.manager.latest_checkpoint
      previous = f"{os.path.basename(previous)} is intact" if previous else "no earlier checkpoint exists"
      raise CheckpointWriteError(
          f"could not save outer iteration {t} in {self.workdir} ({_first_line(e)}); {previous}; free "
          "disk space and run again with the same --workdir") from None
    self._saved_iteration = t

  def run_iteration(self):
    """One outer iteration. Returns a dict of float metrics; raises NonFiniteError when too many
    consecutive iterations were skipped."""
    metrics = {k: float(v) for k, v in self._step().items()}
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
          t, f"meta-training diverged at outer iteration {t}: a non-finite or absurd (|x| > "
          f"{pipeline.ABSURD:g}) meta-gradient, phi or agent (nonfinite='stop', as the official "
          f"MetaPPO); nothing was saved from iteration {t} on{kept}; this run has no learned "
          "optimizer")
    if not metrics["meta/applied"]:
      in_a_row = int(self.skipped_in_a_row.numpy())
      if in_a_row >= self.config.max_nonfinite:
        last = self.applied_through
        where = ("no iteration was applied"
                 if last == 0 else f"phi.npz in {self.workdir} holds phi after iteration {last}, the last applied one"
                 if self.workdir else f"the last applied iteration was {last}")
        raise NonFiniteError(
            f"{in_a_row} consecutive outer iterations produced a non-finite or absurd (|x| > "
            f"{pipeline.ABSURD:g}) meta-gradient, phi or agent; stopping at iteration "
            f"{int(self.iteration.numpy())}; {where}; lower meta_lr or enable meta_grad_clip/meta_grad_norm "
            "(in a new --workdir)")

  def train(self, progress_fn=None, stop_fn=None):
    """Runs to ``total_iterations``, checkpointing every ``checkpoint_every`` and at the end; returns phi.

    ``stop_fn()`` is polled after every iteration; a true value (a signal number) saves the last completed
    iteration and raises :class:`Interrupted`. A :class:`NonFiniteError` stop saves applied iterations that
    were not yet checkpointed first; a :class:`Diverged` stop (``nonfinite="stop"``) saves nothing.
    """
    every = max(int(self.config.checkpoint_every), 1)
    while int(self.iteration.numpy()) < self.total_iterations:
      metrics = {k: float(v) for k, v in self._step().items()}
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
    if (int(self.iteration.numpy()) > self._saved_iteration or
        not os.path.exists(os.path.join(self.workdir, "phi.npz"))):
      self.save()
