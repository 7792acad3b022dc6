"""The meta-training loop: tasks, meta-optimizer, checkpoints, NaN guard (notes §5.4, §5.7, §5.8).

  trainer = MetaTrainer(config, workdir)     # builds tasks, restores the latest checkpoint if any
  phi = trainer.train(progress_fn)           # runs to config.num_iterations; returns phi (dict of arrays)

Per outer iteration: every task runs ``meta_a2c.outer_iteration`` with the same phi; the per-task
meta-gradients (means over units) are optionally normalised to ``max_norm`` (per task, §5.4 item 2), averaged
over tasks, clipped (elementwise ``meta_grad_clip`` or global-norm ``meta_grad_norm``) and applied with
Adam (optax defaults, §0). A non-finite meta-gradient, phi or unit state is never applied: the iteration is
skipped and counted; after ``max_nonfinite`` consecutive skips the run stops with :class:`NonFiniteError`,
leaving the last good checkpoint in place.

Everything that determines the future lives in ``tf.Variable``s saved by ``tf.train.CheckpointManager``
every ``checkpoint_every`` iterations: phi, Adam state, all unit states, the iteration counter and the skip
counters. Randomness is stateless, keyed by (seed, iteration, task), so a run killed at any moment and
restarted with the same workdir finishes with exactly the phi of an uninterrupted run.
"""

import os

import numpy as np
import tensorflow as tf

from optim4rl_tf import envs
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_a2c_star
from optim4rl_tf.meta import pipeline
from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib


class NonFiniteError(RuntimeError):
  """Raised after too many consecutive non-finite meta-updates."""


class VarTree:
  """A nested structure of tensors held in ``tf.Variable``s (for checkpoints and in-graph updates)."""

  def __init__(self, structure, name):
    self._structure = structure
    self.variables = [tf.Variable(x, trainable=False, name=f"{name}_{i}")
                      for i, x in enumerate(tf.nest.flatten(structure))]

  def read(self):
    return tf.nest.pack_sequence_as(self._structure, [v.read_value() for v in self.variables])

  def assign(self, structure):
    for v, x in zip(self.variables, tf.nest.flatten(structure)):
      v.assign(x)


def _all_finite(structure):
  flags = [tf.reduce_all(tf.math.is_finite(x)) for x in tf.nest.flatten(structure)
           if x.dtype.is_floating]
  return tf.reduce_all(tf.stack(flags))


def global_norm(tensors):
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


def num_iterations(config):
  """T = floor(train_steps / macro_step), macro_step = n * rollout_steps * (M + 1) (§5.8)."""
  if config.num_iterations > 0:
    return int(config.num_iterations)
  macro = task_units(config, config.tasks[0]) * config.rollout_steps * (config.inner_updates + 1)
  return int(config.train_steps // macro)


def task_units(config, spec):
  """A task's number of units (``config.num_units`` > 0 overrides every task's own)."""
  return int(config.num_units) if config.get("num_units", 0) > 0 else int(spec.num_units)


def build_tasks(config):
  """Builds :class:`meta_a2c.Task`s from the config's ``tasks`` list."""
  hparams = a2c.A2CHParams(discount=config.discount, gae_lambda=config.gae_lambda,
                           critic_weight=config.critic_weight, entropy_weight=config.entropy_weight)
  tasks = []
  for spec in config.tasks:
    n = task_units(config, spec)
    env = envs.make(spec.env_name, n, reward_scale=spec.reward_scale)
    net = networks.make_network(spec.env_name, env.obs_shape, env.num_actions)
    interval = config.reset_interval if config.pipeline else -1
    tasks.append(meta_a2c.Task(
        name=spec.env_name, env=env, net=net, num_units=n,
        learning_rate=float(spec.learning_rate), grad_clip=float(config.agent_grad_clip),
        reset_indices=tf.constant(pipeline.reset_indices(n, interval)),
        reset_interval=int(interval), hparams=hparams, rollout_steps=config.rollout_steps,
        inner_updates=config.inner_updates, chunk_size=config.chunk_size))
  return tasks


class MetaTrainer:
  """Owns the variables, the compiled outer step and the checkpoint manager of one run."""

  def __init__(self, config, workdir=None):
    self.config = config
    self.workdir = workdir
    self.algorithm, self.core, phi0, self.tasks, self.total_iterations = self._build(config)
    self.keys = sorted(phi0)
    self.phi = [tf.Variable(phi0[k], name=k.replace("/", "_")) for k in self.keys]
    self.adam = VarTree([classical.adam_init(tf.constant(phi0[k])) for k in self.keys], "adam")
    base = tf.constant([config.seed, 0x5eed], tf.int32)
    self.base_key = base
    self.units = [VarTree(self.algorithm.fresh_units(t, self.core, tf.random.experimental.stateless_fold_in(
        base, 1000 + i)), f"units{i}") for i, t in enumerate(self.tasks)]
    self.iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
    self.skipped_total = tf.Variable(0, dtype=tf.int64, name="skipped_total")
    self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, name="skipped_in_a_row")
    self.manager = None
    if workdir:
      ckpt = tf.train.Checkpoint(phi=self.phi, adam=self.adam.variables,
                                 units=[u.variables for u in self.units], iteration=self.iteration,
                                 skipped_total=self.skipped_total, skipped_in_a_row=self.skipped_in_a_row)
      self.manager = tf.train.CheckpointManager(ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=2)
      if self.manager.latest_checkpoint:
        ckpt.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()

  def _build(self, config):
    """(algorithm module, core, initial phi, tasks, total iterations). Subclasses (MetaPPO) override it;
    everything else (variables, checkpoints, the outer step) is shared."""
    is_star = config.optimizer.name == "star"
    # STAR (MetaA2Cstar) needs second-order meta-gradients: its own outer iteration (meta_a2c_star).
    algorithm = meta_a2c_star if is_star else meta_a2c
    core, phi0 = meta_params_lib.resolve(
        config.optimizer.name, config.optimizer.init_meta_params or None,
        mlp_dims=None if is_star else tuple(config.optimizer.mlp_dims),
        hidden_size=None if is_star else config.optimizer.hidden_size, seed=config.seed)
    return algorithm, core, phi0, build_tasks(config), num_iterations(config)

  # -------------------------------------------------------------------------------------------------

  def _combine(self, task_grads):
    """Per-task max_norm normalisation, mean over tasks, then clipping (§5.4)."""
    cfg = self.config
    per_task = []
    for grads in task_grads:
      g = [grads[k] for k in self.keys]
      if cfg.max_norm > 0:
        norm = global_norm(g)
        g = [x * (cfg.max_norm / tf.maximum(norm, 1e-12)) for x in g]  # §13 item 6: guard a zero norm
      per_task.append(g)
    grads = [tf.add_n(list(xs)) / len(per_task) for xs in zip(*per_task)]
    norm = global_norm(grads)
    if cfg.meta_grad_clip > 0:
      grads = [tf.clip_by_value(g, -cfg.meta_grad_clip, cfg.meta_grad_clip) for g in grads]
    elif cfg.meta_grad_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, cfg.meta_grad_norm, use_norm=norm)
    return grads, norm

  @tf.function
  def _step(self):
    t = self.iteration + 1
    key = tf.random.experimental.stateless_fold_in(self.base_key, tf.cast(t, tf.int32))
    phi = {k: v.read_value() for k, v in zip(self.keys, self.phi)}
    task_grads, new_units, metrics = [], [], {}
    for i, (task, units) in enumerate(zip(self.tasks, self.units)):
      units_new, grads, m = self.algorithm.outer_iteration(
          task, self.core, phi, units.read(), t, tf.random.experimental.stateless_fold_in(key, i))
      task_grads.append(grads)
      new_units.append(units_new)
      metrics.update({f"{task.name}/{k}": v for k, v in m.items()})
    grads, grad_norm = self._combine(task_grads)
    adam_out = [classical.adam_update(s, g, self.config.meta_lr)
                for s, g in zip(self.adam.read(), grads)]
    new_phi = [phi[k] + u for k, (u, _) in zip(self.keys, adam_out)]
    finite = tf.logical_and(_all_finite(grads), _all_finite(new_phi))
    finite = tf.logical_and(finite, _all_finite([u.params for u in new_units]))

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
    metrics.update({"meta/grad_norm": grad_norm, "meta/applied": tf.cast(applied, tf.float32),
                    "meta/phi_norm": global_norm([v.read_value() for v in self.phi])})
    return metrics

  # -------------------------------------------------------------------------------------------------

  def meta_params(self):
    """Current phi as a dict {npz key: np.ndarray}."""
    return {k: v.numpy() for k, v in zip(self.keys, self.phi)}

  def save(self):
    """Checkpoint + ``phi.npz`` (atomic) in the workdir."""
    if self.manager is None:
      return
    self.manager.save(checkpoint_number=int(self.iteration.numpy()))
    meta_params_lib.save(os.path.join(self.workdir, "phi.npz"), self.core, self.meta_params())

  def run_iteration(self):
    """One outer iteration. Returns a dict of float metrics; raises NonFiniteError when too many
    consecutive iterations were skipped."""
    metrics = {k: float(v) for k, v in self._step().items()}
    if not metrics["meta/applied"]:
      in_a_row = int(self.skipped_in_a_row.numpy())
      if in_a_row >= self.config.max_nonfinite:
        raise NonFiniteError(
            f"{in_a_row} consecutive outer iterations produced a non-finite meta-gradient, phi or agent; "
            f"stopping at iteration {int(self.iteration.numpy())}. The last good checkpoint is kept in "
            f"{self.workdir}; lower meta_lr or enable meta_grad_clip/meta_grad_norm.")
    return metrics

  def train(self, progress_fn=None):
    """Runs to ``total_iterations``, checkpointing every ``checkpoint_every``; returns phi."""
    every = max(int(self.config.checkpoint_every), 1)
    while int(self.iteration.numpy()) < self.total_iterations:
      metrics = self.run_iteration()
      t = int(self.iteration.numpy())
      if progress_fn is not None:
        progress_fn(t, metrics)
      # Checkpoints hold applied iterations only: a skipped one leaves the last good checkpoint latest.
      if metrics["meta/applied"] and (t % every == 0 or t == self.total_iterations):
        self.save()
    return self.meta_params()
