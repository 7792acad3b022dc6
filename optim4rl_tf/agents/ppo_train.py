"""PPO on Brax as a library function: ``train(config, workdir) -> results`` (docs/fidelity.md §7.2-§7.4, §10).

One training step (§7.4): roll out ``K = batch_size * num_minibatches / num_envs`` consecutive unrolls of
``unroll_length`` steps on all envs with the current policy and normaliser; update the normaliser with
the batch's observations; ``update_epochs`` passes of ``num_minibatches`` gradient steps on shuffled
trajectories with Adam / RMSProp (elementwise clip ``optimizer.grad_clip``) or a fixed learned optimizer
(meta-parameters from an ``.npz``). Evaluation (§7.4 item 5) at step 0 and after each of ``num_evals``
epochs of ``floor(train_steps / (num_evals * env steps per training step))`` training steps:
``num_eval_envs`` episodes per seed, stochastic policy, mean summed UNSCALED reward.

All ``num_seeds`` agents train as ONE graph: every parameter, normaliser and optimizer state carries a
leading seed axis, and the Brax batch holds ``num_seeds * env.num_envs`` environments.

The TF functions of a run (rollouts, SGD epochs and evaluations through either Brax bridge, ``env.bridge``)
are :class:`optim4rl_tf.agents.ppo_trainer.Trainer`; this module checks the config, builds the trainer
and runs the training loop (set-up, call sizing and timing, signals, checkpoints, params.npz and summary.json: the
run lifecycle :mod:`optim4rl_tf.utils.run_lifecycle`, shared with the A2C run, meta-training and the supervised
analysis).

Writes into ``workdir``: ``config.json``, ``tb/`` (TensorBoard: means over seeds, speed in ``tb/``; each seed's
evaluation returns, HParams row and final metrics in its run ``tb/seed_<k>/``; tags: :mod:`optim4rl_tf.utils.logging`),
``returns.csv`` (``step,seed,return``: one row per evaluation and seed; step = env steps per seed so far),
``returns.png``, ``summary.json`` (final performance = mean of the last ``final_last`` (2) evaluation returns,
90% bootstrap CI over seeds), ``params.npz`` (final parameters and normaliser, leading seed axis) and
``checkpoint.npz``.

Interruption and resuming: SIGINT/SIGTERM (in the main thread) stop the run after the current call of training
steps; a KeyboardInterrupt or an error raised inside the loop stops it too. The run then saves its checkpoint,
writes everything computed so far (summary.json with ``status`` "interrupted" or "failed") and re-raises (exit
status 130/143 in the launchers; a second signal ends the process at once). ``workdir/checkpoint.npz``
(:class:`optim4rl_tf.utils.run_lifecycle.StateCheckpoint`) holds the whole training state (parameters, optimizer
and normaliser states, env states, iteration counter and key of every seed) and the evaluations so far; it is
written after every evaluation and whenever the run stops. A run started on a workdir with a checkpoint and
config.json resumes from it when the config matches (``RESUMABLE_FIELDS``, bookkeeping, may differ) and finishes
bit-identical to an unbroken run (every random number comes from keys in the state); returns.csv and tb/ lose the
rows/steps after the restored step first. A differing config or a damaged checkpoint is one clear WorkdirError
(nothing is changed); a finished run started again does nothing and says so.
"""

import math
import os
import time
from typing import NamedTuple

import numpy as np

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_trainer
from optim4rl_tf.envs import registry
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import stats
from optim4rl_tf.utils import workdir as workdir_lib

BRIDGES = ("graph", "numpy")
BACKENDS = ("spring", "generalized", "positional")
# Config fields that may differ when a workdir is resumed: bookkeeping (no result depends on them: chunking does
# not change a number). The budget may not: it sets the evaluation points.
RESUMABLE_FIELDS = ("console_every_secs", "chunk_secs", "iterations_per_call", "plot", "save_params")


class Schedule(NamedTuple):
  unrolls: int  # K unrolls of unroll_length steps per training step
  env_steps_per_train_step: int  # per seed
  train_steps_per_epoch: int
  num_epochs: int
  total_env_steps: int  # per seed


def _hidden(name, value):
  try:
    sizes = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}") from None
  if any(s <= 0 for s in sizes) or any(int(v) != v for v in value):
    raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}")
  return sizes


def validate_config(config):
  """Raises one clear ValueError for a bad config; returns the :class:`Schedule`."""
  name = config.env.name
  if isinstance(name, str) and name.startswith("brax:"):
    name = name[5:]
  cc.check_choice("task (env.name)", name, registry.BRAX_ENV_NAMES)
  cc.check_choice("env.bridge", config.env.bridge, BRIDGES)
  cc.check_choice("env.backend", config.env.backend, BACKENDS)
  cc.check_choice("optimizer.name", config.optimizer.name, transforms.OPTIMIZER_NAMES)
  num_envs = cc.check_positive_int("env.num_envs", config.env.num_envs)
  cc.check_positive_int("env.episode_length", config.env.episode_length)
  action_repeat = cc.check_positive_int("env.action_repeat", config.env.action_repeat)
  cc.check_positive_int("num_seeds", config.num_seeds)
  if "chunk_secs" in config:
    cc.check_positive("chunk_secs", config.chunk_secs)
  if "console_every_secs" in config:  # 0: a line after every call
    cc.check_nonnegative("console_every_secs", config.console_every_secs)
  train_steps = cc.check_positive_int("train_steps", config.train_steps)
  batch = cc.check_positive_int("batch_size", config.batch_size)
  mbs = cc.check_positive_int("num_minibatches", config.num_minibatches)
  unroll = cc.check_positive_int("unroll_length", config.unroll_length)
  cc.check_positive_int("update_epochs", config.update_epochs)
  num_evals = cc.check_positive_int("num_evals", config.num_evals)
  cc.check_positive_int("num_eval_envs", config.num_eval_envs)
  cc.check_positive_int("final_last", config.final_last)
  cc.check_nonnegative_int("iterations_per_call", config.iterations_per_call)
  cc.check_seed(config.seed, config.num_seeds)
  cc.check_positive("optimizer.learning_rate", config.optimizer.learning_rate)
  cc.check_finite("optimizer.grad_clip", config.optimizer.grad_clip)
  cc.check_positive("reward_scaling", config.reward_scaling)
  cc.check_unit_interval("discount", config.discount)
  cc.check_unit_interval("gae_lambda", config.gae_lambda)
  cc.check_positive("clipping_epsilon", config.clipping_epsilon)
  cc.check_nonnegative("entropy_cost", config.entropy_cost)
  _hidden("network.policy_hidden", config.network.policy_hidden)
  _hidden("network.value_hidden", config.network.value_hidden)
  if config.optimizer.meta_params:
    if config.optimizer.name in transforms.CLASSICAL:
      raise ValueError(f"optimizer.meta_params is set, but optimizer {config.optimizer.name!r} is not a "
                       "learned optimizer")
    cc.check_file("optimizer.meta_params", config.optimizer.meta_params)
  if (batch * mbs) % num_envs:
    raise ValueError(f"batch_size * num_minibatches = {batch * mbs} must be a multiple of env.num_envs = "
                     f"{num_envs} (each training step rolls out whole unrolls of all envs)")
  unrolls = batch * mbs // num_envs
  per_step = batch * mbs * unroll * action_repeat
  per_epoch = train_steps // (num_evals * per_step)
  if per_epoch < 1:
    raise ValueError(f"train_steps={train_steps} is less than num_evals={num_evals} training steps of "
                     f"{per_step} env steps (batch_size * num_minibatches * unroll_length * action_repeat)")
  return Schedule(unrolls=unrolls,
                  env_steps_per_train_step=per_step,
                  train_steps_per_epoch=per_epoch,
                  num_epochs=num_evals,
                  total_env_steps=num_evals * per_epoch * per_step)


def build(config, schedule=None):
  """The :class:`optim4rl_tf.agents.ppo_trainer.Trainer` of a validated config."""
  from optim4rl_tf.envs import brax_bridge  # JAX imported here
  schedule = schedule or validate_config(config)
  s = int(config.num_seeds)
  kw = dict(episode_length=int(config.env.episode_length),
            action_repeat=int(config.env.action_repeat),
            backend=config.env.backend,
            bridge=config.env.bridge)
  env = brax_bridge.make(config.env.name, s * int(config.env.num_envs), **kw)
  eval_env = brax_bridge.make(config.env.name, s * int(config.num_eval_envs), **kw)
  nets = ppo.PPONetworks(env.obs_size, env.action_size, _hidden("policy", config.network.policy_hidden),
                         _hidden("value", config.network.value_hidden))
  opt = transforms.make_agent_optimizer(config.optimizer.name,
                                        float(config.optimizer.learning_rate),
                                        grad_clip=float(config.optimizer.grad_clip),
                                        meta_params=config.optimizer.meta_params or None)
  return ppo_trainer.Trainer(config, schedule, env, eval_env, nets, opt)


def train(config, workdir, progress_fn=None, console=True):
  """Trains ``config.num_seeds`` PPO agents on a Brax task and writes the run's files into ``workdir``, resuming
  from its checkpoint (interruption, checkpoints: see the module docstring).

  Returns a dict with ``returns`` ({seed label: (steps, eval returns)}), ``final`` (per seed: mean of the
  last ``final_last`` eval returns), ``ci`` (stats.CI over seeds), ``steps_per_sec`` (env steps/s of all
  seeds in training, excluding the first call's compilation and the evaluations), ``env_steps`` (per
  seed), ``schedule``, ``wall_secs``, ``summary``, ``aborted`` (True if an evaluation return was NaN),
  ``status`` ("finished", or "diverged" when a NaN evaluation return stopped the run), ``params`` (list of
  [S, ...] numpy arrays) and ``resumed_from`` (the training step the run resumed at, 0 for a fresh start).

  A KeyboardInterrupt (SIGINT/SIGTERM, recorded and raised after the current call) or an error during training
  writes everything computed so far (checkpoint.npz, returns.csv, tb/, returns.png, params.npz and summary.json
  with ``status`` "interrupted" or "failed") and is then re-raised.
  """
  schedule = validate_config(config)
  run_lifecycle.prepare_workdir(workdir, console, transforms.untrained_warning(config.optimizer))
  with workdir_lib.lock_unless_held(workdir):
    workdir_lib.remove_stale_temps(workdir)  # left by a process killed mid-write
    return _train(config, workdir, schedule, progress_fn, console)


def _train(config, workdir, schedule, progress_fn, console):
  t_start = time.time()
  trainer = build(config, schedule)
  labels, per_step, per_epoch = trainer.labels, schedule.env_steps_per_train_step, schedule.train_steps_per_epoch
  tag = f"[ppo {trainer.env.name} {config.optimizer.name} {config.env.bridge}] "
  state = trainer.init()
  checkpoint = run_lifecycle.StateCheckpoint(workdir, "ppo", config, RESUMABLE_FIELDS, config.optimizer.meta_params)
  restored = checkpoint.load(trainer.checkpoint_state(state), console)
  evals = _Evaluations(trainer)
  done, prior_wall = 0, 0.0
  if restored is not None:
    state, done, prior_wall = trainer.from_checkpoint_state(restored.state), restored.iterations, restored.wall_secs
    evals.restore(restored.meta, restored.arrays)
    if evals.finished(schedule):
      rewrite = run_lifecycle.outputs_to_rewrite(workdir)
      result = _finish(config,
                       workdir,
                       trainer,
                       state,
                       evals,
                       run_lifecycle.CallTimer(),
                       schedule,
                       t_start,
                       prior_wall,
                       False,
                       "diverged" if evals.aborted else "finished",
                       None,
                       write=rewrite)
      return run_lifecycle.finished_again(result, workdir, done, result["env_steps"], rewrite, console)
    if console:
      print(
          f"resuming {workdir} at training step {done:,}/{schedule.num_epochs * per_epoch:,} (env step "
          f"{done * per_step:,})",
          flush=True)
  resumed_from = done
  evals.logger = logger = _open_logger(config, workdir, evals, done * per_step)
  progress = run_lifecycle.make_progress(config, schedule.total_env_steps, tag, len(labels))
  if console and not done:
    print(
        f"{tag}{schedule.num_epochs} epochs x {per_epoch} training steps x "
        f"{per_step:,} env steps = {schedule.total_env_steps:,} env steps per seed; {len(labels)} seed(s); "
        "compiling (Brax on CPU: up to a few minutes)...",
        flush=True)
  _log_hparams(config, logger, labels)
  sizer = run_lifecycle.CallSizer(config, adaptive=trainer.bridge == "graph")
  timer = run_lifecycle.CallTimer()
  status, error = "finished", None

  def save(status):
    checkpoint.save(trainer.checkpoint_state(state),
                    done,
                    status,
                    prior_wall + time.time() - t_start,
                    arrays=evals.arrays(),
                    **evals.meta())

  with run_lifecycle.deferred_signals() as stop:
    try:
      ret = evals.last_returns()
      # Evaluation i comes after i * per_epoch training steps (i = 0 .. num_epochs).
      while not evals.finished(schedule):
        i = evals.count
        if done == i * per_epoch:
          ret = evals.run(state, i, done * per_step)
          save("running")
          if evals.aborted:
            print(f"ERROR: evaluation return is NaN at step {done * per_step:,}; stopping the run", flush=True)
            break
          if console and i == 0:  # (the progress rate starts after the first training call, after compilation)
            print(f"{tag}step 0 | return {float(np.mean(ret)):.4g} | training (first call compiles)...", flush=True)
          if i:
            info = {"return": float(np.mean(ret)), "epoch": i}
            if console:
              progress.update(done * per_step, {"return": info["return"]}, force=True)
            if progress_fn is not None:
              progress_fn(done * per_step, dict(info, steps_per_sec=timer.rate(per_step * len(labels))))
        else:
          k = sizer.take(i * per_epoch - done)
          t0 = time.time()
          state, m = trainer.run(state, k)
          dt = time.time() - t0
          timer.add(dt, k)
          done += k
          _log_training(logger, m, done, done * per_step, k * per_step * len(labels) / max(dt, 1e-9), k / max(dt, 1e-9))
          if console:
            progress.update(done * per_step, {"return": float(np.mean(ret)), "loss": float(np.mean(m["loss"]))})
          sizer.record(dt, k)
        if stop():
          raise run_lifecycle.interrupted(stop())
    except (KeyboardInterrupt, Exception) as e:  # SIGINT/SIGTERM (above), progress_fn's, out of memory, ...
      status, error = run_lifecycle.outcome(e), e  # "interrupted" or "failed": keep what exists
    finally:
      logger.flush()  # (closed after the final metrics, below)
    if status == "finished" and evals.aborted:
      status = "diverged"
    try:
      try:
        save(status)
      except OSError as e:
        if error is None:
          status, error = "failed", e
        else:
          print(f"WARNING: {e}", flush=True)
      result = _finish(config, workdir, trainer, state, evals, timer, schedule, t_start, prior_wall, console and
                       error is None, status, error)
      status, error = result["status"], result.pop("error")
      finals = [None] * len(labels) if result["final"] is None else result["final"]
      logging_lib.log_final(logger, result["env_steps"], result["steps_per_sec"],
                            None if result["ci"] is None else result["ci"].mean, {
                                logging_lib.seed_run(lab): f for lab, f in zip(labels, finals)
                            })
    finally:
      logger.close()
  result["resumed_from"] = resumed_from
  if error is not None:
    raise error
  return result


def _open_logger(config, workdir, evals, step):
  """config.json and the run's logger. Resuming at env step ``step`` > 0: returns.csv is rewritten with the rows
  of the restored evaluations (atomically) and appended to, tb/ loses the summaries after ``step``; a fresh
  start (0) clears tb/'s summaries of an earlier attempt."""
  tb = os.path.join(workdir, "tb")
  if os.path.isdir(tb):  # (with the seeds' runs tb/seed_<k>; the HParams summaries are written again)
    workdir_lib.truncate_tensorboard(tb, step if evals.count else -1, drop_hparams=True)
  if not evals.count:
    return run_lifecycle.open_run(config, workdir)
  logging_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG_NAME), logging_lib.config_to_dict(config))
  path = os.path.join(workdir, "returns.csv")
  workdir_lib.atomic_write(path, evals.csv_text())
  logger = logging_lib.RunLogger(workdir, returns_csv=None)
  logger.csv = logging_lib.ReturnsCSV(path, append=True)
  return logger


class _Evaluations:
  """The evaluations of a run (§7.4 item 5): per seed, the mean return of ``num_eval_envs`` episodes, logged
  to returns.csv and TensorBoard (``logger``, set before :meth:`run`); ``aborted`` once a return is not
  finite."""

  def __init__(self, trainer):
    self.trainer, self.logger = trainer, None
    self.labels = trainer.labels
    self.runs = {lab: ([], []) for lab in trainer.labels}  # seed label -> (env steps, returns)
    self.aborted = False
    self.secs = 0.0

  @property
  def count(self):
    """Evaluations done (the next one's index)."""
    return len(self.runs[self.labels[0]][0])

  def finished(self, schedule):
    """All ``num_epochs + 1`` evaluations done, or a NaN return stopped the run."""
    return self.aborted or self.count > schedule.num_epochs

  def last_returns(self):
    """The last evaluation's return per seed [S] (NaN before the first)."""
    return np.array([self.runs[lab][1][-1] if self.runs[lab][1] else np.nan for lab in self.labels])

  def arrays(self):
    """The evaluations as checkpoint arrays: ``eval_steps`` [n], ``eval_returns`` [S, n]."""
    return dict(eval_steps=np.asarray(self.runs[self.labels[0]][0], np.int64),
                eval_returns=np.asarray([self.runs[lab][1] for lab in self.labels],
                                        np.float64).reshape(len(self.labels), self.count))

  def meta(self):
    """The JSON part of a checkpoint's bookkeeping."""
    return dict(labels=list(self.labels), aborted=bool(self.aborted), eval_secs=float(self.secs))

  def restore(self, meta, arrays):
    """Back to the evaluations of a checkpoint (:meth:`arrays`, :meth:`meta`)."""
    if meta.get("labels") != list(self.labels):
      raise workdir_lib.WorkdirError(f"the checkpoint holds seeds {meta.get('labels')}, this config "
                                     f"{list(self.labels)}; use a new --workdir")
    try:
      steps, rets = arrays["eval_steps"], arrays["eval_returns"]
      if rets.shape != (len(self.labels), len(steps)):
        raise ValueError(f"eval_returns has shape {rets.shape}")
      self.runs = {lab: ([int(x) for x in steps], [float(x) for x in rets[s]]) for s, lab in enumerate(self.labels)}
      self.aborted, self.secs = bool(meta["aborted"]), float(meta["eval_secs"])
    except (KeyError, TypeError, ValueError) as e:
      raise workdir_lib.WorkdirError(f"checkpoint {run_lifecycle.CHECKPOINT_NAME} is damaged (its evaluations: "
                                     f"{e})") from None

  def csv_text(self):
    """returns.csv as the run wrote it (one row per evaluation and seed)."""
    return logging_lib.ReturnsCSV.text((st, lab, r)
                                       for j, st in enumerate(self.runs[self.labels[0]][0])
                                       for lab in self.labels
                                       for r in (self.runs[lab][1][j],))

  def run(self, state, index, step):
    """Evaluation ``index`` after ``step`` env steps per seed -> mean return per seed [S]."""
    t0 = time.time()
    ret, length = self.trainer.evaluate(state, index)
    self.secs += time.time() - t0
    scalars = {
        logging_lib.EPISODE_RETURN: float(np.mean(ret)),
        logging_lib.EPISODE_LENGTH: float(np.mean(length)),
        "eval/secs": time.time() - t0
    }
    length = np.broadcast_to(np.asarray(length, np.float64), np.shape(ret))
    per_seed = {}
    for s, lab in enumerate(self.trainer.labels):
      self.runs[lab][0].append(step)
      self.runs[lab][1].append(float(ret[s]))
      self.logger.returns(step, lab, float(ret[s]))
      per_seed[logging_lib.seed_run(lab)] = {
          logging_lib.EPISODE_RETURN: float(ret[s]),
          logging_lib.EPISODE_LENGTH: float(length[s])
      }
    self.logger.scalars(step, scalars)
    self.logger.run_scalars(step, per_seed)
    self.logger.flush()
    if not np.all(np.isfinite(ret)):
      self.aborted = True
    return ret


# PPO's training metrics (ppo.SGD_METRICS) -> TensorBoard tags (others: "train/<name>").
_TAGS = {
    "loss": logging_lib.LOSS_TOTAL,
    "policy_loss": logging_lib.LOSS_ACTOR,
    "value_loss": logging_lib.LOSS_CRITIC,
    "entropy_loss": logging_lib.LOSS_ENTROPY,
    "entropy": logging_lib.POLICY_ENTROPY,
    "approx_kl": "policy/approx_kl",
    "clip_fraction": "policy/clip_fraction",
    "grad_norm": logging_lib.NORM_GRAD,
    "update_norm": logging_lib.NORM_UPDATE,
}
# Bookkeeping fields left out of the HParams dashboard (no result depends on them).
_NOT_HPARAMS = ("console_every_secs", "chunk_secs", "iterations_per_call", "plot", "save_params")


def _log_hparams(config, logger, labels):
  """Each seed's row of TensorBoard's HParams dashboard (run tb/seed_<k>: the config, ``seed`` its label)."""
  base = logging_lib.flat_hparams(config, {"agent": "ppo"}, exclude=_NOT_HPARAMS)
  for lab in labels:
    logger.hparams(dict(base, seed=int(lab)), run=logging_lib.seed_run(lab))


def _log_training(logger, metrics, done_steps, step, env_steps_per_sec, iterations_per_sec):
  """TensorBoard scalars of one call ({metric: [k, S]}; means over steps and seeds) at env step ``step``;
  a warning for a non-finite loss or gradient."""
  scalars = {_TAGS.get(n, f"train/{n}"): float(np.mean(metrics[n])) for n in metrics}
  scalars[logging_lib.SPEED_ENV_STEPS] = env_steps_per_sec
  scalars[logging_lib.SPEED_ITERATIONS] = iterations_per_sec
  scalars[logging_lib.MEMORY_PEAK_RSS] = logging_lib.peak_rss_gb()
  logger.scalars(step, scalars)
  if not all(np.all(np.isfinite(metrics[n])) for n in ("loss", "grad_norm")):
    print(f"WARNING: non-finite loss or gradient around training step {done_steps}", flush=True)


def _finish(config,
            workdir,
            trainer,
            state,
            evals,
            timer,
            schedule,
            t_start,
            prior_wall,
            console,
            status="finished",
            error=None,
            write=True):
  """Writes returns.png, params.npz and summary.json (``status``: "finished", "diverged" -- a NaN evaluation
  return stopped the run --, "interrupted" or "failed", with ``error``, also for the last two; a failed write of
  params.npz makes a finished run "failed"); prints the summary; the dict :func:`train` returns, with ``status``
  and ``error``. ``prior_wall``: seconds of the earlier sessions of a resumed run; ``write`` False: the dict only
  (a finished run started again; its rate and time from summary.json)."""
  labels = trainer.labels
  returns = run_lifecycle.returns_arrays(evals.runs)
  last = int(config.final_last)
  finals, ci = None, None
  try:
    finals, ci = stats.summarize_final([returns[lab][1] for lab in labels], last=last)
  except ValueError:
    pass
  env_steps = int(state.iteration.numpy()) * schedule.env_steps_per_train_step
  params = [p.numpy() for p in state.params]
  if write and config.save_params:
    norm = {f"normalizer/{k}": v.numpy() for k, v in state.norm._asdict().items()}
    try:  # (atomic: a full disk keeps the previous params.npz whole)
      run_lifecycle.save_params(workdir, labels, trainer.nets.param_names, params, **norm)
    except OSError as e:
      if error is None:
        status, error = "failed", e
      else:
        print(f"WARNING: {e}", flush=True)
  summary = _summary_line(config, trainer, ci, last, env_steps, evals.aborted)
  if status in ("interrupted", "failed"):
    summary = f"{status.upper()} at step {env_steps:,} of {schedule.total_env_steps:,}: {summary}"
  result = dict(returns=returns,
                final=finals,
                ci=ci,
                env_steps=env_steps,
                schedule=schedule,
                summary=summary,
                aborted=evals.aborted,
                params=params,
                labels=labels,
                status=status,
                error=error,
                eval_secs=evals.secs)
  if not write:
    old = run_lifecycle.read_summary(workdir)
    return dict(result,
                steps_per_sec=old.get("env_steps_per_sec") or float("nan"),
                wall_secs=old.get("wall_secs") or prior_wall)
  if config.plot and ci is not None:
    from optim4rl_tf.utils import plots
    try:
      plots.plot_returns(returns,
                         os.path.join(workdir, "returns.png"),
                         title=f"PPO {trainer.env.name}, {config.optimizer.name} "
                         f"lr {config.optimizer.learning_rate:g}",
                         label=config.optimizer.name)
    except ValueError as e:  # e.g. non-finite returns
      print(f"WARNING: no returns.png: {e}")
  steps_per_sec = timer.rate(schedule.env_steps_per_train_step * len(labels))
  wall = prior_wall + time.time() - t_start
  clean = run_lifecycle.finite_or_none
  run_lifecycle.write_summary(workdir,
                              status,
                              summary,
                              wall,
                              env_steps,
                              schedule.total_env_steps,
                              error,
                              seeds=labels,
                              aborted=evals.aborted,
                              final=None if finals is None else [clean(f) for f in finals.tolist()],
                              **run_lifecycle.ci_fields(ci, finite_only=True),
                              eval_returns={str(lab): returns[lab][1].tolist() for lab in labels},
                              eval_steps=returns[labels[0]][0].tolist(),
                              env_steps_per_sec=steps_per_sec,
                              eval_secs=evals.secs,
                              bridge=config.env.bridge)
  if console:
    print(summary, flush=True)
  return dict(result, steps_per_sec=steps_per_sec, wall_secs=wall)


def _summary_line(config, trainer, ci, last, env_steps, aborted):
  if ci is not None and math.isfinite(ci.mean):
    summary = (f"final return of {trainer.env.name} with PPO + {config.optimizer.name} "
               f"(lr {config.optimizer.learning_rate:g}) after {env_steps:,} env steps, mean of the last "
               f"{last} evaluation returns over {len(trainer.labels)} seed(s): {ci.mean:.4g} ± "
               f"{ci.half_width:.3g} (90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  else:
    summary = f"no finite evaluation return after {env_steps:,} env steps"
  return "ABORTED (NaN evaluation return): " + summary if aborted else summary
