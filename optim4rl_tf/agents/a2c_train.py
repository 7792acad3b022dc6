"""A2C training run as a library function: ``train(config, workdir) -> results``.

All ``config.num_seeds`` agents train as ONE vectorised graph: the seed axis is the unit axis of
:mod:`optim4rl_tf.agents.a2c`, the env batch holds ``num_seeds * env.num_envs`` environments. The Python loop
only calls a ``tf.function`` that runs K iterations per call (K adapted so a call takes ~``chunk_secs``); its
set-up, call sizing and timing, signals, checkpoints, params.npz and summary.json are the run lifecycle
:mod:`optim4rl_tf.utils.run_lifecycle`, shared with the PPO run, meta-training and the supervised analysis.

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard: the seed means, speed and
memory in ``tb/``, each seed's curves in its run ``tb/seed_<k>/`` under the same tags, with its HParams row and final
metrics; tags: :mod:`optim4rl_tf.utils.logging`), ``returns.csv``
(``step,seed,return``; docs/fidelity.md §4.3: one row per iteration and seed in which at least one episode ended,
step = iteration * num_envs * rollout_steps, the mean return of those episodes), ``returns.png``,
``summary.json`` and ``params.npz`` (final agent parameters, leading seed axis). With a
:class:`GradientProbe` (built by the caller: for ``config.collect``, configs/collect.py,
``optim4rl_tf.analysis.collect.gradient_probe_for(config)``), also what the probe records, e.g. ``grads/``:
the sub-sampled agent gradient of every update, streamed to disk. This module never imports the probe's
maker (agents sit below analysis; tests/test_layers.py).

Divergence: a seed whose parameters, logits or gradients become non-finite or exceed
``a2c.DIVERGENCE_BOUND`` is frozen in-graph (:func:`optim4rl_tf.agents.a2c.a2c_update`), reported on the
console and in summary.json (``diverged``: {seed: env step}); the other seeds train on, and the run stops
early only when every seed has diverged. Its returns before divergence are kept; it is left out of the final
performance.

Interruption: SIGINT/SIGTERM (in the main thread) stop the run after the current call of iterations; the run
then saves its checkpoint, writes everything computed so far (returns.csv, tb/, returns.png, params.npz,
summary.json with ``status`` "interrupted") and raises :class:`optim4rl_tf.utils.cli.Interrupted` (exit status
130/143 in the launchers). A KeyboardInterrupt or an error raised inside the loop does the same (status
"interrupted" or "failed") and is re-raised. A second signal ends the process at once.

Checkpoints and resuming (:class:`optim4rl_tf.utils.run_lifecycle.StateCheckpoint`): ``workdir/checkpoint.npz`` holds the whole training state (every seed's parameters,
the optimizer state with a learned optimizer's hidden states, the env states, the iteration counter and key,
the seeds' divergence flags) and the run's bookkeeping (the logged returns, the diverged seeds). It is written
atomically (:func:`optim4rl_tf.utils.workdir.write_arrays`) every ``config.checkpoint_every`` iterations and
every ``config.checkpoint_every_secs`` seconds (0: off), at the end and on an interruption or error. A run
started on a workdir with a checkpoint and config.json resumes from it when the config matches (the fields of
``RESUMABLE_FIELDS`` -- the budget ``train_steps`` and bookkeeping -- may differ) and finishes bit-identical
to an unbroken run; returns.csv and tb/ lose the rows/steps after the restored iteration first. A differing
config, a damaged checkpoint or a changed ``optimizer.meta_params`` file is one clear WorkdirError (nothing is
changed or deleted); a finished run started again does nothing and says so. With gradient collection
(``gradient_probe``) no checkpoint is written: such runs start again from their beginning.
"""

import math
import os
import time
from typing import Any, Protocol, Tuple

import numpy as np
import tensorflow as tf

from optim4rl_tf import envs as envs_lib
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import stats
from optim4rl_tf.utils import workdir as workdir_lib

# Config fields that may differ when a workdir is resumed: the budget and bookkeeping (no result depends on
# them: chunking does not change a number).
RESUMABLE_FIELDS = ("train_steps", "checkpoint_every", "checkpoint_every_secs", "console_every_secs", "chunk_secs",
                    "iterations_per_call", "log_every", "plot", "save_params")


class GradientProbe(Protocol):
  """What :func:`train` needs to record a per-update gradient of every seed; built by the caller (e.g.
  :class:`optim4rl_tf.analysis.collect.A2CGradientCollector`) and passed as ``gradient_probe``.

  ``make_probe(net) -> (fn, size)``: ``fn(grads)`` maps the env-averaged agent gradient BEFORE clipping
    and the optimizer (list of [S, *shape] tensors in ``net.param_names`` order) to [S, size]; it is traced
    into the training graph (:func:`optim4rl_tf.agents.a2c.a2c_update`).
  ``open_writer(net, workdir, labels) -> writer``: ``writer.append(block)`` gets the numpy block
    [k, S, size] of every call of k iterations; ``writer.close(complete=bool)`` is called once, also when
    the run is interrupted or fails (``complete`` False then).
  """

  def make_probe(self, net) -> Tuple[Any, int]:
    ...

  def open_writer(self, net, workdir, labels) -> Any:
    ...


def collection_requested(config):
  """True when the config asks for gradient collection (``config.collect.enabled``, configs/a2c.py)."""
  return "collect" in config and bool(config.collect.enabled)


def validate_config(config):
  """Raises one clear ValueError for a bad config; returns the number of iterations."""
  cc.check_choice("task (env.name)", config.env.name, envs_lib.ENV_NAMES)
  cc.check_choice("optimizer.name", config.optimizer.name, transforms.OPTIMIZER_NAMES)
  cc.check_positive_int("num_seeds", config.num_seeds)
  cc.check_positive_int("env.num_envs", config.env.num_envs)
  cc.check_positive_int("rollout_steps", config.rollout_steps)
  train_steps = cc.check_positive_int("train_steps", config.train_steps)
  cc.check_seed(config.seed, config.num_seeds)
  cc.check_positive("optimizer.learning_rate", config.optimizer.learning_rate)
  cc.check_finite("optimizer.grad_clip", config.optimizer.grad_clip)
  cc.check_positive("env.reward_scale", config.env.reward_scale)
  cc.check_unit_interval("discount", config.discount)
  cc.check_unit_interval("gae_lambda", config.gae_lambda)
  cc.check_nonnegative("critic_weight", config.critic_weight)
  cc.check_nonnegative("entropy_weight", config.entropy_weight)
  cc.check_positive_int("log_every", config.log_every)
  cc.check_nonnegative_int("iterations_per_call", config.iterations_per_call)
  cc.check_positive("chunk_secs", config.chunk_secs)
  cc.check_nonnegative("console_every_secs", config.console_every_secs)  # 0: a line after every call
  cc.check_nonnegative_int("checkpoint_every", config.get("checkpoint_every", 0))
  cc.check_nonnegative("checkpoint_every_secs", config.get("checkpoint_every_secs", 0.0))
  cc.check_choice("conv_form", config.conv_form, networks.CONV_FORMS)
  if config.optimizer.meta_params:
    if config.optimizer.name in transforms.CLASSICAL:
      raise ValueError(f"optimizer.meta_params is set, but optimizer {config.optimizer.name!r} is not a "
                       "learned optimizer")
    cc.check_file("optimizer.meta_params", config.optimizer.meta_params)
    cc.check_npz_size("optimizer.meta_params", config.optimizer.meta_params, MAX_META_PARAMS)
  cc.check_memory(
      f"num_seeds * env.num_envs = {int(config.num_seeds) * int(config.env.num_envs):,} "
      f"environments x rollout_steps {int(config.rollout_steps)}", estimate_memory_bytes(config),
      "lower env.num_envs, num_seeds or rollout_steps")
  steps_per_iter = config.env.num_envs * config.rollout_steps
  iterations = train_steps // steps_per_iter
  if iterations < 1:
    raise ValueError(f"train_steps={train_steps} is less than one iteration "
                     f"(env.num_envs * rollout_steps = {steps_per_iter} env steps)")
  return iterations


# The meta-parameters of the paper's learned optimizers are a few thousand numbers; a file whose array headers
# declare more than this is refused before anything is loaded (the loader's own limit, when it has one).
MAX_META_PARAMS = getattr(meta_params_lib, "MAX_PHI_ELEMENTS", 1 << 26)


def estimate_memory_bytes(config):
  """A LOWER bound on the memory of one iteration of a validated config: the trajectory observations (the
  rollout's buffer and the stacked copy) and the network activations of all T+1 steps kept for the
  gradient. Used only to refuse obviously impossible sizes up front."""
  probe = envs_lib.make(config.env.name, 1)
  specs = networks.param_specs(networks.net_kind(config.env.name), probe.obs_shape, probe.num_actions)
  obs = math.prod(probe.obs_shape)
  activations = sum(math.prod(s.shape) for s in specs if s.fan_in == 0)  # one per bias entry
  envs = int(config.num_seeds) * int(config.env.num_envs)
  return envs * (int(config.rollout_steps) + 1) * 4 * (2 * obs + activations)


def build(config, gradient_probe=None):
  """(trainer, env, net, opt) for a validated config; with a :class:`GradientProbe`, ``trainer.run`` also
  returns ``"grad_probe"`` [K, S, size]."""
  num_seeds = int(config.num_seeds)
  env = envs_lib.make(config.env.name,
                      num_seeds * int(config.env.num_envs),
                      reward_scale=float(config.env.reward_scale))
  net = networks.make_network(config.env.name, env.obs_shape, env.num_actions, conv_form=config.conv_form)
  opt = transforms.make_agent_optimizer(config.optimizer.name,
                                        float(config.optimizer.learning_rate),
                                        grad_clip=float(config.optimizer.grad_clip),
                                        meta_params=config.optimizer.meta_params or None)
  hp = a2c.A2CHParams(discount=float(config.discount),
                      gae_lambda=float(config.gae_lambda),
                      critic_weight=float(config.critic_weight),
                      entropy_weight=float(config.entropy_weight))
  probe, probe_size = (None, 0) if gradient_probe is None else gradient_probe.make_probe(net)
  trainer = a2c.make_trainer(net,
                             env,
                             opt,
                             hp,
                             int(config.rollout_steps),
                             num_seeds,
                             jit_compile=bool(config.jit_compile),
                             grad_probe=probe,
                             probe_size=probe_size)
  return trainer, env, net, opt


def init_state(trainer, config):
  """Initial state: seed s (label config.seed + s) starts from key (config.seed + s, 0)."""
  num_seeds = int(config.num_seeds)
  labels = [int(config.seed) + s for s in range(num_seeds)]
  keys = tf.constant([[lab, 0] for lab in labels], tf.int32)
  return trainer.init(int(config.seed), unit_keys=keys), labels


def train(config, workdir, progress_fn=None, console=True, gradient_probe=None):
  """Trains ``config.num_seeds`` A2C agents and writes the run's files into ``workdir``, resuming from its
  checkpoint (divergence, interruption, checkpoints: see the module docstring).

  Args:
    config: ConfigDict of ``configs/a2c.py``.
    workdir: output directory (created; must be writable). Locked while the run uses it (a lock this process
      holds already, e.g. launch/train.py's, is reused).
    progress_fn: optional ``fn(step, info_dict)`` called after every chunk of iterations.
    console: print progress and the final summary line.
    gradient_probe: optional :class:`GradientProbe` recording the gradient of every update (required when
      ``config.collect.enabled``: ``optim4rl_tf.analysis.collect.gradient_probe_for(config)``).

  Returns:
    dict with ``returns`` ({seed label: (steps array, returns array)}), ``final`` (per-seed final
    performance, mean of the last 20 logged returns; NaN for diverged seeds), ``ci`` (:class:`stats.CI`
    over the healthy seeds, or None), ``steps_per_sec`` (env steps/s over all seeds, excluding the first
    call's compilation), ``iterations``, ``env_steps`` (per seed), ``wall_secs``, ``summary`` (the one-line
    summary), ``params`` (final parameters, list of [S, ...] numpy arrays; diverged seeds keep their last
    healthy ones), ``status`` ("finished", or "diverged" if any seed diverged), ``diverged`` and ``resumed_from``
    (the iteration the run resumed at, 0 for a fresh start).
  """
  iterations = validate_config(config)
  _check_probe(config, gradient_probe)
  run_lifecycle.prepare_workdir(workdir, console, transforms.untrained_warning(config.optimizer))
  with workdir_lib.lock_unless_held(workdir):
    workdir_lib.remove_stale_temps(workdir)  # left by a process killed mid-write
    return _train(config, workdir, iterations, progress_fn, console, gradient_probe)


def _train(config, workdir, iterations, progress_fn, console, gradient_probe):
  t_start = time.time()
  trainer, _, net, _ = build(config, gradient_probe)
  per_iter = int(config.env.num_envs) * int(config.rollout_steps)  # env steps per iteration and seed
  state, labels = init_state(trainer, config)
  seeds = _Seeds(labels, per_iter, int(config.log_every), None)
  checkpointing = gradient_probe is None  # (a resumed run could not continue the probe's stream)
  done, prior_wall = 0, 0.0
  checkpoint = run_lifecycle.StateCheckpoint(workdir, "a2c", config, RESUMABLE_FIELDS, config.optimizer.meta_params)
  restored = checkpoint.load(state, console) if checkpointing else None
  if restored is not None:
    state, done, prior_wall = restored.state, restored.iterations, restored.wall_secs
    seeds.restore(restored.meta, restored.arrays)
    if done >= iterations or len(seeds.diverged) == len(labels):
      if done > iterations:
        raise workdir_lib.WorkdirError(
            f"workdir {workdir} holds a run at env step {done * per_iter:,}, beyond train_steps="
            f"{int(config.train_steps):,} ({iterations * per_iter:,} env steps); raise train_steps or use a new "
            "--workdir")
      status = "diverged" if seeds.diverged else "finished"
      rewrite = run_lifecycle.outputs_to_rewrite(workdir)
      result = _finish(config,
                       workdir,
                       net,
                       state,
                       seeds,
                       status,
                       None,
                       iterations,
                       done,
                       run_lifecycle.CallTimer(),
                       t_start,
                       prior_wall,
                       write=rewrite)
      return run_lifecycle.finished_again(result, workdir, done, done * per_iter, rewrite, console)
    if console:
      print(f"resuming {workdir} at iteration {done:,}/{iterations:,} (env step {done * per_iter:,})", flush=True)
  logger = _open_logger(config, workdir, seeds, done)
  seeds.logger = logger
  _log_hparams(config, logger, labels)
  resumed_from = done
  progress = run_lifecycle.make_progress(config, iterations * per_iter,
                                         f"[a2c {config.env.name} {config.optimizer.name}] ", len(labels))
  sizer, timer = run_lifecycle.CallSizer(config), run_lifecycle.CallTimer()
  status, error = "finished", None
  every = int(config.get("checkpoint_every", 0))
  every_secs = float(config.get("checkpoint_every_secs", 0.0))

  def save(status):
    checkpoint.save(state,
                    done,
                    status,
                    prior_wall + time.time() - t_start,
                    arrays=seeds.arrays(),
                    env_steps=done * per_iter,
                    **seeds.meta())

  committed = done  # the iterations whose returns are all logged: what a checkpoint may hold
  grad_writer = None if gradient_probe is None else gradient_probe.open_writer(net, workdir, labels)
  with run_lifecycle.deferred_signals() as stop:
    try:
      calls = 0
      while done < iterations and len(seeds.diverged) < len(labels):
        k = sizer.take(iterations - done)
        if every:
          k = min(k, every - done % every)  # calls end at the checkpoint iterations
        t0 = time.time()
        new_state, m = trainer.run(state, tf.constant(k, tf.int32))
        m = {name: v.numpy() for name, v in m.items()}  # [k, S]
        if grad_writer is not None:
          grad_writer.append(m.pop("grad_probe"))  # [k, S, coords]
        dt = time.time() - t0
        timer.add(dt, k)
        # Count the chunk before logging it: an interrupt during logging then never leaves rows in
        # returns.csv beyond the env steps that summary.json and params.npz record.
        state, done = new_state, done + k  # (together: params.npz matches env_steps)
        newly = seeds.log_chunk(m, k, done - k)
        if calls or done == iterations:  # the first call's time includes tracing (unless it is all)
          logger.scalars(
              done * per_iter, {
                  logging_lib.SPEED_ENV_STEPS: k * per_iter * len(labels) / max(dt, 1e-9),
                  logging_lib.SPEED_ITERATIONS: k / max(dt, 1e-9),
                  logging_lib.MEMORY_PEAK_RSS: logging_lib.peak_rss_gb()
              })
        calls += 1
        logger.flush()
        committed = done
        if checkpointing and ((every and done % every == 0) or (every_secs > 0 and checkpoint.age() >= every_secs)):
          save("running")
        if newly and console:
          print(seeds.divergence_warning(newly), flush=True)
        info = {"return": seeds.mean_last_return(), "iteration": done}
        if console:
          progress.update(done * per_iter, {"return": info["return"]}, force=done == iterations)
        if progress_fn is not None:
          progress_fn(done * per_iter, dict(info, steps_per_sec=progress.rate * len(labels)))
        sizer.record(dt, k)
        if stop():
          raise run_lifecycle.interrupted(stop())
    except (KeyboardInterrupt, Exception) as e:  # SIGINT/SIGTERM (above), progress_fn's, out of memory, ...
      status, error = run_lifecycle.outcome(e), e  # "interrupted" or "failed": keep what exists
    finally:
      logger.flush()  # (closed after the final metrics, below)
      if grad_writer is not None:
        grad_writer.close(complete=done == iterations)
    if status == "finished" and seeds.diverged:
      status = "diverged"
    try:
      if checkpointing and committed == done and done > 0:
        try:
          save(status)
        except OSError as e:
          if error is None:
            status, error = "failed", e
          else:
            print(f"WARNING: {e}", flush=True)
      result = _finish(config, workdir, net, state, seeds, status, error, iterations, done, timer, t_start, prior_wall)
      status, error = result["status"], result.pop("error")
      finals = [None] * len(labels) if result["final"] is None else result["final"]
      logging_lib.log_final(logger, done * per_iter, result["steps_per_sec"],
                            None if result["ci"] is None else result["ci"].mean, {
                                logging_lib.seed_run(lab): f for lab, f in zip(labels, finals)
                            })
    finally:
      logger.close()
  result["resumed_from"] = resumed_from
  if console and error is None:
    print(result["summary"], flush=True)
  if error is not None:
    raise error
  return result


def _open_logger(config, workdir, seeds, done):
  """config.json and the run's logger. Resuming at iteration ``done`` > 0: returns.csv is rewritten with the
  rows of the restored iterations (atomically) and appended to, tb/ loses the summaries from iteration
  ``done`` on; a fresh start (0) clears tb/'s summaries of an earlier attempt."""
  tb = os.path.join(workdir, "tb")
  if os.path.isdir(tb):  # (with the seeds' runs tb/seed_<k>; the HParams summaries are written again)
    workdir_lib.truncate_tensorboard(tb, done * seeds.steps_per_iter - 1, drop_hparams=True)
  if not done:
    return run_lifecycle.open_run(config, workdir)
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  path = os.path.join(workdir, "returns.csv")
  workdir_lib.atomic_write(path, seeds.csv_text())
  logger = logging_lib.RunLogger(workdir, returns_csv=None)
  logger.csv = logging_lib.ReturnsCSV(path, append=True)
  return logger


def _check_probe(config, gradient_probe):
  if gradient_probe is None and collection_requested(config):
    raise ValueError("config.collect.enabled asks for gradient collection, which the caller builds: pass "
                     "gradient_probe=optim4rl_tf.analysis.collect.gradient_probe_for(config) "
                     "(launch/train.py and launch/collect_gradients.py do)")


_LOGGED = (("loss", logging_lib.LOSS_TOTAL), ("actor_loss", logging_lib.LOSS_ACTOR),
           ("critic_loss", logging_lib.LOSS_CRITIC), ("entropy_loss", logging_lib.LOSS_ENTROPY),
           ("entropy", logging_lib.POLICY_ENTROPY), ("grad_norm", logging_lib.NORM_GRAD), ("update_norm",
                                                                                           logging_lib.NORM_UPDATE))
# Bookkeeping fields left out of the HParams dashboard (no result depends on them).
_NOT_HPARAMS = tuple(f for f in RESUMABLE_FIELDS if f != "train_steps") + ("collect",)


def _log_hparams(config, logger, labels):
  """Each seed's row of TensorBoard's HParams dashboard (run tb/seed_<k>: the config, ``seed`` its label)."""
  base = logging_lib.flat_hparams(config, {"agent": "a2c"}, exclude=_NOT_HPARAMS)
  for lab in labels:
    logger.hparams(dict(base, seed=int(lab)), run=logging_lib.seed_run(lab))


class _Seeds:
  """Per-seed record of a run: the logged returns (``runs``: label -> (env steps, returns)), each seed's
  last return and the diverged seeds (``diverged``: label -> env steps at the end of the iteration it
  diverged in); writes returns.csv rows and TensorBoard scalars."""

  def __init__(self, labels, steps_per_iter, log_every, logger):
    self.labels, self.steps_per_iter, self.log_every, self.logger = labels, steps_per_iter, log_every, logger
    self.runs = {lab: ([], []) for lab in labels}
    self.last_return = np.full(len(labels), np.nan)
    self.diverged = {}

  @property
  def healthy(self):
    return [lab for lab in self.labels if lab not in self.diverged]

  def log_chunk(self, m, k, done_iters):
    """Writes the returns and scalars of k iterations (metrics ``m``: name -> [k, S], the first iteration
    ``done_iters``); returns the newly diverged seeds, in order."""
    newly = []
    for j in range(k):
      it = done_iters + j
      step = it * self.steps_per_iter
      cnt, tot, healthy = m["return_count"][j], m["return_sum"][j], m["healthy"][j] > 0.5
      scalars, per_seed = {}, {logging_lib.seed_run(lab): {} for lab in self.labels}
      for s, lab in enumerate(self.labels):
        if not healthy[s] and lab not in self.diverged:
          self.diverged[lab] = step + self.steps_per_iter  # detected within this iteration
          newly.append(lab)
        if cnt[s] > 0:  # (0 in-graph from the iteration whose rollout diverged)
          r = tot[s] / cnt[s]
          self.runs[lab][0].append(step)
          self.runs[lab][1].append(r)
          self.last_return[s] = r
          self.logger.returns(step, lab, r)
          per_seed[logging_lib.seed_run(lab)][logging_lib.EPISODE_RETURN] = r
      if np.any(cnt > 0):
        scalars[logging_lib.EPISODE_RETURN] = float(np.mean(tot[cnt > 0] / cnt[cnt > 0]))
      if it % self.log_every == 0:
        if np.any(healthy):  # means over the healthy seeds (a diverged one is NaN)
          for name, tag in _LOGGED:
            scalars[tag] = float(np.mean(m[name][j][healthy]))
            for s in np.flatnonzero(healthy):
              per_seed[logging_lib.seed_run(self.labels[s])][tag] = m[name][j][s]
        scalars[logging_lib.HEALTH_DIVERGED_SEEDS] = float(len(self.diverged))
      self.logger.scalars(step, scalars)
      self.logger.run_scalars(step, per_seed)
    return newly

  def arrays(self):
    """The logged returns as checkpoint arrays (``steps_i``, ``returns_i`` of the i-th seed, ``last_return``)."""
    out = {"last_return": np.asarray(self.last_return, np.float64)}
    for i, lab in enumerate(self.labels):
      out[f"steps_{i}"] = np.asarray(self.runs[lab][0], np.int64)
      out[f"returns_{i}"] = np.asarray(self.runs[lab][1], np.float64)
    return out

  def meta(self):
    """The JSON part of a checkpoint's bookkeeping."""
    return dict(labels=list(self.labels), diverged={str(lab): int(st) for lab, st in self.diverged.items()})

  def restore(self, meta, arrays):
    """Back to the bookkeeping of a checkpoint (:meth:`arrays`, :meth:`meta`)."""
    if meta.get("labels") != list(self.labels):
      raise workdir_lib.WorkdirError(f"the checkpoint holds seeds {meta.get('labels')}, this config "
                                     f"{list(self.labels)}; use a new --workdir")
    try:
      for i, lab in enumerate(self.labels):
        steps, rets = arrays[f"steps_{i}"], arrays[f"returns_{i}"]
        self.runs[lab] = ([int(x) for x in steps], [float(x) for x in rets])
      self.last_return = np.array(arrays["last_return"], np.float64)
      self.diverged = {int(lab): int(st) for lab, st in meta["diverged"].items()}
    except (KeyError, TypeError, ValueError) as e:
      raise workdir_lib.WorkdirError(
          f"checkpoint {run_lifecycle.CHECKPOINT_NAME} is damaged (its returns: {e})") from None
    if self.last_return.shape != (len(self.labels),):
      raise workdir_lib.WorkdirError(f"checkpoint {run_lifecycle.CHECKPOINT_NAME} is damaged (last_return has shape "
                                     f"{self.last_return.shape})")

  def csv_text(self):
    """returns.csv as the run wrote it (rows per iteration in seed order, :class:`logging_lib.ReturnsCSV`)."""
    rows = sorted((st, s, lab, r) for s, lab in enumerate(self.labels) for st, r in zip(*self.runs[lab]))
    return logging_lib.ReturnsCSV.text((st, lab, r) for st, _, lab, r in rows)

  def mean_last_return(self):
    """Mean of the healthy seeds' last returns (NaN if none has one)."""
    alive = [s for s, lab in enumerate(self.labels) if lab not in self.diverged]
    last = self.last_return[alive]
    return float(np.nanmean(last)) if np.any(np.isfinite(last)) else float("nan")

  def divergence_warning(self, newly):
    rest = len(self.labels) - len(self.diverged)
    return (f"WARNING: seed(s) {', '.join(f'{lab} (by env step {self.diverged[lab]:,})' for lab in newly)} "
            f"diverged (non-finite or |x| > {a2c.DIVERGENCE_BOUND:g} parameters, logits or gradients) and "
            "are frozen at their last finite parameters" +
            (f"; the other {rest} seed(s) continue" if rest else "; no seed left: stopping"))


def _finish(config,
            workdir,
            net,
            state,
            seeds,
            status,
            error,
            iterations,
            done_iters,
            timer,
            t_start,
            prior_wall=0.0,
            write=True):
  """Writes returns.png, params.npz and summary.json (also for a diverged, interrupted or failed run);
  the dict :func:`train` returns, with the run's ``status`` and ``error`` (a failed write of params.npz makes a
  finished run "failed", its OSError the error). ``prior_wall``: seconds of the earlier sessions of a resumed
  run; ``write`` False: the dict only (a finished run started again; its rate and time from summary.json)."""
  steps_per_iter, labels, diverged = seeds.steps_per_iter, seeds.labels, seeds.diverged
  total_steps, done_steps = iterations * steps_per_iter, done_iters * steps_per_iter
  returns = run_lifecycle.returns_arrays(seeds.runs)
  healthy = seeds.healthy
  finals, ci = None, None
  if any(len(returns[lab][1]) for lab in healthy):
    finals, ci = stats.summarize_final([returns[lab][1] if lab in healthy else np.zeros(0) for lab in labels], last=20)
  params = [p.numpy() for p in state.params]
  if write and config.save_params:
    try:  # (atomic: a full disk keeps the previous params.npz whole)
      run_lifecycle.save_params(workdir, labels, net.param_names, params)
    except OSError as e:
      if error is None:
        status, error = "failed", e
      else:
        print(f"WARNING: {e}", flush=True)
  summary = _summary_line(config, seeds, ci, done_steps)
  if status in ("interrupted", "failed"):
    summary = f"{status.upper()} at step {done_steps:,} of {total_steps:,}: {summary}"
  if not write:
    old = run_lifecycle.read_summary(workdir)
    return dict(returns=returns,
                final=finals,
                ci=ci,
                steps_per_sec=old.get("env_steps_per_sec") or float("nan"),
                iterations=iterations,
                env_steps=done_steps,
                wall_secs=old.get("wall_secs") or prior_wall,
                summary=summary,
                params=params,
                labels=labels,
                status=status,
                error=error,
                diverged=dict(diverged))
  if config.plot and any(len(r[1]) for r in returns.values()):
    from optim4rl_tf.utils import plots
    try:
      plots.plot_returns(returns,
                         os.path.join(workdir, "returns.png"),
                         title=f"A2C {config.env.name}, {config.optimizer.name} "
                         f"lr {config.optimizer.learning_rate:g}",
                         label=config.optimizer.name)
    except Exception as e:  # pylint: disable=broad-except   (never lose the summary to a plot)
      print(f"WARNING: no returns.png: {type(e).__name__}: {e}", flush=True)
  steps_per_sec = timer.rate(steps_per_iter * len(labels))
  wall = prior_wall + time.time() - t_start
  clean = run_lifecycle.finite_or_none
  run_lifecycle.write_summary(workdir,
                              status,
                              summary,
                              wall,
                              done_steps,
                              total_steps,
                              error,
                              iterations=done_iters,
                              planned_iterations=iterations,
                              seeds=labels,
                              diverged={
                                  str(lab): st for lab, st in diverged.items()
                              },
                              final=None if finals is None else [clean(f) for f in finals.tolist()],
                              **run_lifecycle.ci_fields(ci),
                              env_steps_per_sec=clean(steps_per_sec))
  return dict(returns=returns,
              final=finals,
              ci=ci,
              steps_per_sec=steps_per_sec,
              iterations=iterations,
              env_steps=done_steps,
              wall_secs=wall,
              summary=summary,
              params=params,
              labels=labels,
              status=status,
              error=error,
              diverged=dict(diverged))


def _summary_line(config, seeds, ci, done_steps):
  healthy, labels = seeds.healthy, seeds.labels
  of = (f"over {len(healthy)} seeds"
        if not seeds.diverged else f"over the {len(healthy)} of {len(labels)} seeds that did not diverge")
  if ci is not None:
    return (f"final return of {config.env.name} with {config.optimizer.name} "
            f"(lr {config.optimizer.learning_rate:g}) after {done_steps:,} steps, mean of the last 20 "
            f"logged returns {of}: {ci.mean:.4g} ± {ci.half_width:.3g} "
            f"(90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  if healthy:
    return f"no episode finished in {done_steps:,} steps: no return to report"
  return f"all {len(labels)} seeds diverged: no final return to report"


def divergence_message(config, workdir, diverged, labels):
  """One line for a run in which seeds diverged: which, when, and what to change."""
  seeds = ", ".join(f"{lab} (by env step {step:,})" for lab, step in sorted(diverged.items()))
  clip = float(config.optimizer.grad_clip)
  advice = (f"lower optimizer.learning_rate (now {float(config.optimizer.learning_rate):g})" +
            (" or set optimizer.grad_clip > 0 (now off)" if clip <= 0 else f" or optimizer.grad_clip (now {clip:g})"))
  which = "all seeds" if len(diverged) == len(labels) else f"{len(diverged)} of {len(labels)} seeds"
  return (f"{which} diverged (non-finite or |x| > {a2c.DIVERGENCE_BOUND:g} parameters/logits/gradients): "
          f"seed{'s' if len(diverged) > 1 else ''} {seeds}; {advice}; the results so far are in {workdir}")
