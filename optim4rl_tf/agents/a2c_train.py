"""A2C training run as a library function: ``train(config, workdir) -> results``.

All ``config.num_seeds`` agents train as ONE vectorised graph: the seed axis is the unit axis of
:mod:`optim4rl_tf.agents.a2c`, the env batch holds ``num_seeds * env.num_envs`` environments. The Python loop
only calls a ``tf.function`` that runs K iterations per call (K adapted so a call takes ~``chunk_secs``); its
set-up, call sizing and timing are :mod:`optim4rl_tf.agents.run_scaffold`, shared with the PPO run.

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard scalars), ``returns.csv``
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

Interruption: a KeyboardInterrupt (SIGINT; SIGTERM too under :func:`optim4rl_tf.utils.cli.run`) or an error
during training writes everything computed so far (returns.csv, tb/, returns.png, params.npz, summary.json
with ``status`` "interrupted" or "failed") and is then re-raised.
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
from optim4rl_tf.agents import run_scaffold
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import stats


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
  """Trains ``config.num_seeds`` A2C agents and writes the run's files into ``workdir`` (divergence and
  interruption: see the module docstring).

  Args:
    config: ConfigDict of ``configs/a2c.py``.
    workdir: output directory (created; must be writable).
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
    healthy ones), ``status`` ("finished", or "diverged" if any seed diverged) and ``diverged``.
  """
  iterations = validate_config(config)
  _check_probe(config, gradient_probe)
  run_scaffold.prepare_workdir(config, workdir, console)
  t_start = time.time()
  trainer, _, net, _ = build(config, gradient_probe)
  logger = run_scaffold.open_run(config, workdir)
  per_iter = int(config.env.num_envs) * int(config.rollout_steps)  # env steps per iteration and seed
  state, labels = init_state(trainer, config)
  progress = run_scaffold.make_progress(config, iterations * per_iter,
                                        f"[a2c {config.env.name} {config.optimizer.name}] ", len(labels))
  seeds = _Seeds(labels, per_iter, int(config.log_every), logger)
  sizer, timer = run_scaffold.CallSizer(config), run_scaffold.CallTimer()
  done, status, error = 0, "finished", None
  grad_writer = None if gradient_probe is None else gradient_probe.open_writer(net, workdir, labels)
  try:
    while done < iterations and len(seeds.diverged) < len(labels):
      k = sizer.take(iterations - done)
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
      if done > k or done == iterations:  # the first call's time includes tracing (unless it is all)
        logger.scalars(done * per_iter, {"perf/env_steps_per_sec": k * per_iter * len(labels) / max(dt, 1e-9)})
      logger.flush()
      if newly and console:
        print(seeds.divergence_warning(newly), flush=True)
      info = {"return": seeds.mean_last_return(), "iteration": done}
      if console:
        progress.update(done * per_iter, {"return": info["return"]}, force=done == iterations)
      if progress_fn is not None:
        progress_fn(done * per_iter, dict(info, steps_per_sec=progress.rate * len(labels)))
      sizer.record(dt, k)
  except KeyboardInterrupt as e:  # SIGINT, or SIGTERM under utils.cli
    status, error = "interrupted", e
  except Exception as e:  # e.g. out of memory: keep what exists
    status, error = "failed", e
  finally:
    logger.close()
    if grad_writer is not None:
      grad_writer.close(complete=done == iterations)
  if status == "finished" and seeds.diverged:
    status = "diverged"
  result = _finish(config, workdir, net, state, seeds, status, error, iterations, done, timer, t_start)
  if console and error is None:
    print(result["summary"], flush=True)
  if error is not None:
    raise error
  return result


def _check_probe(config, gradient_probe):
  if gradient_probe is None and collection_requested(config):
    raise ValueError("config.collect.enabled asks for gradient collection, which the caller builds: pass "
                     "gradient_probe=optim4rl_tf.analysis.collect.gradient_probe_for(config) "
                     "(launch/train.py and launch/collect_gradients.py do)")


_LOGGED = (("loss", "loss/total"), ("actor_loss", "loss/actor"), ("critic_loss", "loss/critic"),
           ("entropy_loss", "loss/entropy"), ("entropy", "policy/entropy"), ("grad_norm", "norm/grad"), ("update_norm",
                                                                                                         "norm/update"))


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
      scalars = {}
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
          scalars[f"return/seed_{lab}"] = r
      if np.any(cnt > 0):
        scalars["return/mean"] = float(np.mean(tot[cnt > 0] / cnt[cnt > 0]))
      if it % self.log_every == 0:
        if np.any(healthy):  # means over the healthy seeds (a diverged one is NaN)
          for name, tag in _LOGGED:
            scalars[tag] = float(np.mean(m[name][j][healthy]))
        scalars["health/diverged_seeds"] = float(len(self.diverged))
      if scalars:
        self.logger.scalars(step, scalars)
    return newly

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


def _finish(config, workdir, net, state, seeds, status, error, iterations, done_iters, timer, t_start):
  """Writes returns.png, params.npz and summary.json (also for a diverged, interrupted or failed run);
  the dict :func:`train` returns."""
  steps_per_iter, labels, diverged = seeds.steps_per_iter, seeds.labels, seeds.diverged
  total_steps, done_steps = iterations * steps_per_iter, done_iters * steps_per_iter
  returns = run_scaffold.returns_arrays(seeds.runs)
  healthy = seeds.healthy
  finals, ci = None, None
  if any(len(returns[lab][1]) for lab in healthy):
    finals, ci = stats.summarize_final([returns[lab][1] if lab in healthy else np.zeros(0) for lab in labels], last=20)
  summary = _summary_line(config, seeds, ci, done_steps)
  if status in ("interrupted", "failed"):
    summary = f"{status.upper()} at step {done_steps:,} of {total_steps:,}: {summary}"
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
  params = [p.numpy() for p in state.params]
  if config.save_params:
    run_scaffold.save_params(workdir, labels, net.param_names, params)
  steps_per_sec = timer.rate(steps_per_iter * len(labels))
  wall = time.time() - t_start
  clean = run_scaffold.finite_or_none
  logging_lib.write_json(
      os.path.join(workdir, "summary.json"),
      dict(summary=summary,
           status=status,
           error=None if error is None else _describe(error),
           env_steps=done_steps,
           planned_env_steps=total_steps,
           iterations=done_iters,
           planned_iterations=iterations,
           seeds=labels,
           diverged={
               str(lab): st for lab, st in diverged.items()
           },
           final=None if finals is None else [clean(f) for f in finals.tolist()],
           **run_scaffold.ci_fields(ci),
           env_steps_per_sec=clean(steps_per_sec),
           wall_secs=wall))
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


def _describe(error):
  if isinstance(error, KeyboardInterrupt):
    return getattr(error, "reason", None) or "interrupted (SIGINT)"
  first = (str(error).strip().splitlines() or [""])[0]
  return f"{type(error).__name__}: {first}"[:500]


def divergence_message(config, workdir, diverged, labels):
  """One line for a run in which seeds diverged: which, when, and what to change."""
  seeds = ", ".join(f"{lab} (by env step {step:,})" for lab, step in sorted(diverged.items()))
  clip = float(config.optimizer.grad_clip)
  advice = (f"lower optimizer.learning_rate (now {float(config.optimizer.learning_rate):g})" +
            (" or set optimizer.grad_clip > 0 (now off)" if clip <= 0 else f" or optimizer.grad_clip (now {clip:g})"))
  which = "all seeds" if len(diverged) == len(labels) else f"{len(diverged)} of {len(labels)} seeds"
  return (f"{which} diverged (non-finite or |x| > {a2c.DIVERGENCE_BOUND:g} parameters/logits/gradients): "
          f"seed{'s' if len(diverged) > 1 else ''} {seeds}; {advice}; the results so far are in {workdir}")
