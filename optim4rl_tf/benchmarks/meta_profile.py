"""Where an outer iteration of MetaA2C (ReplayedVJP, Optim4RL & co) spends its time.

``launch/benchmark.py meta --profile [--env=small_dense_long] [--units=64] [--chunk=0] [--mlp_dims=...]
[--repeats=5]``

Builds the trainer of ``configs/meta_a2c.py``'s task, runs two outer iterations (the first compiles), then
records the inputs of every phase once from the trainer's own state (phi, units) and times each phase as
its own ``tf.function`` on them (median of ``--repeats`` rounds after one tracing call; the rounds
interleave the phases and the whole iteration, so a changing load weighs on all alike):

  (a) rollouts: M + 1 rollouts of ``rollout_steps`` env steps with action sampling (and the divergence
      guard's parameter check and episode returns), chained through the env state as in the iteration;
  (b) agent gradients: M + 1 A2C losses and their gradients w.r.t. the agent parameters (flattened,
      clipped; the last one is the meta-loss cotangent);
  (c) learned-optimizer updates: M XLA-compiled ``optimizer_step`` calls chained through the hidden
      states, and the parameter updates;
  (d) replayed VJP: ``estimators.replayed_vjp`` of the M updates (the meta-gradient);
  (e) meta-update: combining/clipping the meta-gradient, Adam, the finiteness/sanity guard, the copies of
      phi, Adam state and all unit states from and into their variables, and the metrics to the host.

It also times the whole iteration (``MetaTrainer.run_iteration``); ``other`` = whole - (a..e) is what the
phases leave out (pipeline reset of the units due, TensorArray and control flow, dispatch) minus any
overlap the whole graph gets from running phases concurrently. Figures only; nothing is asserted.
"""

import datetime
import os
import statistics
import time

import tensorflow as tf

from optim4rl_tf.agents import a2c
from optim4rl_tf.benchmarks import against
from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import transforms

PHASES = (
    ("a", "rollouts (env steps + action sampling)"),
    ("b", "agent loss gradients (inner + meta-loss)"),
    ("c", "learned-optimizer updates (inner loop)"),
    ("d", "replayed VJP meta-gradient"),
    ("e", "meta-update, guard, state/host copies"),
)


def make_trainer(task, units, chunk, mlp_dims, num_iterations, workers=None):
  """A MetaTrainer of ``configs/meta_a2c.py``'s ``task`` with ``units`` units (mlp_dims None: the config's;
  ``workers``: this process's share of them, meta/workers.py)."""
  from optim4rl_tf.configs import meta_a2c  # pylint: disable=import-outside-toplevel
  config = meta_a2c.get_config(task)
  config.num_units = units
  config.chunk_size = chunk
  if mlp_dims is not None:
    config.optimizer.mlp_dims = tuple(mlp_dims)
  config.num_iterations = num_iterations
  return config, trainer_lib.MetaTrainer(config, workers=workers)


def _hidden(units):
  """The optimizer's hidden states of the units (field ``opt_state``, or ``hidden`` in older layouts)."""
  return units.opt_state if hasattr(units, "opt_state") else units.hidden


def _sync(out):
  """Waits for a phase's outputs (reads one element of each to the host)."""
  for x in tf.nest.flatten(out):
    if hasattr(x, "numpy"):
      x.numpy()


def median_secs(fns, repeats):
  """{name: median wall seconds} of ``repeats`` rounds of calls of every callable in ``fns``, after one
  untimed call each (tracing, compilation). Rounds are interleaved (a, b, ..., a, b, ...) so that a load
  that changes during the profile weighs on every phase alike."""
  for fn in fns.values():
    _sync(fn())
  times = {name: [] for name in fns}
  for _ in range(max(1, repeats)):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      _sync(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


class Phases:
  """The five phases of one outer iteration as separate ``tf.function``s on one trainer's state."""

  def __init__(self, trainer):
    self.trainer = trainer
    self.task = task = trainer.tasks[0]
    self.core = trainer.core
    self.n, self.m = int(task.num_units), int(task.inner_updates)
    self.lr, self.clip = float(task.learning_rate), float(task.grad_clip)
    self.chunk = int(trainer.config.get("chunk_size", 0))
    self.key = tf.constant([7, 11], tf.int32)
    self.phi = {k: v.read_value() for k, v in zip(trainer.keys, trainer.phi)}
    self.units = trainer.units[0].read()
    self.hidden0 = tuple(_hidden(self.units))
    self.per_unit = int(problem_lib.flatten_units(self.units.params).shape[1])
    # Scratch copies of the variables the real step reads and writes (phase e never touches the trainer's).
    self.scratch_phi = [tf.Variable(v.read_value()) for v in trainer.phi]
    self.scratch_adam = [tf.Variable(v.read_value()) for v in trainer.adam.variables]
    self.scratch_units = [tf.Variable(v.read_value()) for v in trainer.units[0].variables]
    self.adam_structure = trainer.adam.read()
    self.inputs = tf.function(self._capture)(self.phi, self.units.params, self.hidden0, self.units.env_state,
                                             self.units.obs)
    self.meta_grad = None

  def _rollouts(self, params_seq, env_state, obs, ep_return):
    task = self.task
    trajs = []
    for k in range(self.m + 1):
      params = [tf.stop_gradient(p) for p in params_seq[k]]
      ok = pipeline.all_sane(params)
      used = pipeline.or_zeros(ok, params)
      traj, env_state, obs = a2c.rollout(task.net.logits, used, task.env, env_state, obs,
                                         tf.random.experimental.stateless_fold_in(self.key, k), task.rollout_steps,
                                         self.n)
      ep_return, _, _ = a2c.episode_returns(ep_return, traj.rewards, traj.dones)
      trajs.append(traj)
    return trajs, env_state, obs, ep_return

  def _grads(self, params_seq, trajs):
    flat_grads, cotangent = [], None
    for k in range(self.m + 1):
      _, _, grads = a2c.loss_and_grads(self.task.net.apply, params_seq[k], trajs[k], self.task.hparams)
      flat = problem_lib.flatten_units(grads)
      if k == self.m:
        cotangent = flat / self.n
      else:
        flat_grads.append(transforms.clip(self.clip)([flat])[0])
    return flat_grads, cotangent

  def _optimizer(self, phi, hidden, params, flat_grads):
    params_seq, update_abs = [params], 0.0
    for flat in flat_grads:
      delta, hidden = estimators.optimizer_step(self.core, phi, hidden, flat, self.lr)
      params = [p + d for p, d in zip(params, problem_lib.unflatten_units(delta, params))]
      update_abs += tf.reduce_sum(tf.abs(delta))
      params_seq.append(params)
    return params_seq, hidden, update_abs

  def _capture(self, phi, params, hidden, env_state, obs):
    """The inputs of every phase, recorded once the way the iteration makes them."""
    params_seq, trajs, flat_grads = [params], [], []
    for k in range(self.m + 1):
      traj, env_state, obs = a2c.rollout(self.task.net.logits, params, self.task.env, env_state, obs,
                                         tf.random.experimental.stateless_fold_in(self.key, k), self.task.rollout_steps,
                                         self.n)
      trajs.append(traj)
      _, _, grads = a2c.loss_and_grads(self.task.net.apply, params, traj, self.task.hparams)
      if k == self.m:
        break
      flat = problem_lib.flatten_units(grads)
      flat = transforms.clip(self.clip)([flat])[0]
      flat_grads.append(flat)
      delta, hidden = estimators.optimizer_step(self.core, phi, hidden, flat, self.lr)
      params = [p + d for p, d in zip(params, problem_lib.unflatten_units(delta, params))]
      params_seq.append(params)
    cotangent = problem_lib.flatten_units(
        a2c.loss_and_grads(self.task.net.apply, params, trajs[-1], self.task.hparams)[2]) / self.n
    return dict(params_seq=params_seq, trajs=trajs, flat_grads=flat_grads, cotangent=cotangent)

  def _vjp(self, phi, hidden0, flat_grads, cotangent):
    return estimators.replayed_vjp(self.core,
                                   phi,
                                   hidden0,
                                   flat_grads,
                                   cotangent,
                                   self.lr,
                                   chunk_size=self.chunk,
                                   num_units=self.n,
                                   params_per_unit=self.per_unit)

  def _meta_update(self, meta_grad, new_params):
    trainer = self.trainer
    phi = {k: v.read_value() for k, v in zip(trainer.keys, self.scratch_phi)}
    units = [v.read_value() for v in self.scratch_units]  # the step reads every unit state ...
    adam = tf.nest.pack_sequence_as(self.adam_structure, [v.read_value() for v in self.scratch_adam])
    grads, grad_norm = trainer._combine([meta_grad])  # pylint: disable=protected-access
    adam_out = [classical.adam_update(s, g, trainer.config.meta_lr) for s, g in zip(adam, grads)]
    new_phi = [phi[k] + u for k, (u, _) in zip(trainer.keys, adam_out)]
    finite = tf.reduce_all(
        tf.stack([
            tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads])),
            pipeline.all_sane(new_phi),
            pipeline.all_sane(new_params)
        ]))

    def apply():
      for v, x in zip(self.scratch_phi, new_phi):
        v.assign(x)
      for v, x in zip(self.scratch_adam, tf.nest.flatten([s for _, s in adam_out])):
        v.assign(x)
      for v, x in zip(self.scratch_units, units):  # ... and writes it back
        v.assign(x)
      return tf.constant(True)

    applied = tf.cond(finite, apply, lambda: tf.constant(False))
    phi_norm = tf.linalg.global_norm([v.read_value() for v in self.scratch_phi])
    return {"grad_norm": grad_norm, "applied": tf.cast(applied, tf.float32), "phi_norm": phi_norm}

  def functions(self):
    """{phase letter: zero-argument callable running that phase once}."""
    x = self.inputs
    u = self.units
    rollouts = tf.function(self._rollouts)
    grads = tf.function(self._grads)
    optimizer = tf.function(self._optimizer)
    vjp = tf.function(self._vjp)
    meta_update = tf.function(self._meta_update)
    self.meta_grad = vjp(self.phi, self.hidden0, x["flat_grads"], x["cotangent"])
    last = x["params_seq"][-1]

    def update_and_copy():  # the real step converts each metric to a Python float, as here
      return {k: float(v) for k, v in meta_update(self.meta_grad, last).items()}

    return {
        "a": lambda: rollouts(x["params_seq"], u.env_state, u.obs, u.ep_return),
        "b": lambda: grads(x["params_seq"], x["trajs"]),
        "c": lambda: optimizer(self.phi, self.hidden0, u.params, x["flat_grads"]),
        "d": lambda: vjp(self.phi, self.hidden0, x["flat_grads"], x["cotangent"]),
        "e": update_and_copy,
    }


def profile(trainer, repeats=5):
  """({phase letter: median seconds}, median seconds of a whole iteration) of a warmed-up ``trainer``."""
  fns = Phases(trainer).functions()
  fns["whole"] = trainer.run_iteration
  secs = median_secs(fns, repeats)
  return {name: secs[name] for name, _ in PHASES}, secs["whole"]


def table(secs, whole):
  """Lines: each phase's ms/it, its share of the phases' sum and of the whole iteration; then other."""
  total = sum(secs.values())
  lines = [f"  {'phase':48s} {'ms/it':>9s} {'share':>7s} {'of whole':>9s}"]
  for name, label in PHASES:
    s = secs[name]
    lines.append(f"  ({name}) {label:44s} {1e3 * s:9.1f} {100 * s / total:6.1f}% {100 * s / whole:8.1f}%")
  lines.append(f"  {'sum of (a)-(e)':48s} {1e3 * total:9.1f} {100.0:6.1f}% {100 * total / whole:8.1f}%")
  lines.append(f"  {'whole iteration (MetaTrainer.run_iteration)':48s} {1e3 * whole:9.1f} {'':7s} {100.0:8.1f}%")
  other = whole - total
  lines.append(f"  {'other (reset, control flow, dispatch; - overlap)':48s} {1e3 * other:9.1f} {'':7s} "
               f"{100 * other / whole:8.1f}%")
  return lines


def run_profile(task, units, chunk=0, mlp_dims=None, repeats=5, printer=print):
  """Builds, warms up and profiles MetaA2C on ``task``; prints the breakdown with the load beside it."""
  before, t0, total0, own0 = os.getloadavg(), time.time(), against.machine_cpu_seconds(), against.own_cpu_seconds()
  cpu0 = against.cpu_snapshot()
  config, trainer = make_trainer(task, units, chunk, mlp_dims, 10**9)
  for _ in range(2):
    trainer.run_iteration()
  secs, whole = profile(trainer, repeats)
  after = os.getloadavg()
  seconds, total1 = time.time() - t0, against.machine_cpu_seconds()
  busy, cores, top = against.busy_others(cpu0, against.cpu_snapshot(), seconds, exclude={os.getpid()})
  if total0 is not None and total1 is not None:
    cores = max(0.0, (total1 - total0 - (against.own_cpu_seconds() - own0)) / seconds)
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  net = trainer.tasks[0].net
  used = f"{chunk} units" if chunk else f"{estimators.REPLAY_CHUNK_COORDS} coords"
  printer(f"MetaA2C profile: {task}, {units} units x {net.num_params:,} params, chunk {used}, Optim4RL heads "
          f"{list(config.optimizer.mlp_dims)}, M = {config.inner_updates}, rollout {config.rollout_steps}; "
          f"median of {repeats} interleaved rounds after warm-up")
  printer(f"  {now}; commit {against.commit_of()}; {os.cpu_count()} CPUs; load {before[0]:.2f}->{after[0]:.2f} "
          f"(1-min); others used {cores:.1f} cores; {busy} other busy processes{' (' + top + ')' if top else ''}")
  for line in table(secs, whole):
    printer(line)
  return secs, whole
