"""A2C training run as a library function: ``train(config, workdir) -> results``.

All ``config.num_seeds`` agents train as ONE vectorised graph: the seed axis is the unit axis of
:mod:`optim4rl_tf.agents.a2c`, the env batch holds ``num_seeds * env.num_envs`` environments. The Python loop
only calls a ``tf.function`` that runs K iterations per call (K adapted so a call takes ~``chunk_secs``).

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard scalars), ``returns.csv``
(``step,seed,return``; docs/fidelity.md §4.3: one row per iteration and seed in which at least one episode ended,
step = iteration * num_envs * rollout_steps, the mean return of those episodes), ``returns.png``,
``summary.json`` and ``params.npz`` (final agent parameters, leading seed axis). With a
:class:`GradientProbe` (built by the caller: for ``config.collect``, configs/collect.py,
``optim4rl_tf.analysis.collect.gradient_probe_for(config)``), also what the probe records, e.g. ``grads/``:
the sub-sampled agent gradient of every update, streamed to disk. This module never imports the probe's
maker (agents sit below analysis; tests/test_layers.py).
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
  cc.check_memory(f"num_seeds * env.num_envs = {int(config.num_seeds) * int(config.env.num_envs):,} "
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
  activations = sum(math.prod(s.shape) for s in specs if s.fan_in == 0)       # one per bias entry
  envs = int(config.num_seeds) * int(config.env.num_envs)
  return envs * (int(config.rollout_steps) + 1) * 4 * (2 * obs + activations)


def build(config, gradient_probe=None):
  """(trainer, env, net, opt) for a validated config; with a :class:`GradientProbe`, ``trainer.run`` also
  returns ``"grad_probe"`` [K, S, size]."""
  num_seeds = int(config.num_seeds)
  env = envs_lib.make(config.env.name, num_seeds * int(config.env.num_envs),
                      reward_scale=float(config.env.reward_scale))
  net = networks.make_network(config.env.name, env.obs_shape, env.num_actions, conv_form=config.conv_form)
  opt = transforms.make_agent_optimizer(config.optimizer.name, float(config.optimizer.learning_rate),
                                        grad_clip=float(config.optimizer.grad_clip),
                                        meta_params=config.optimizer.meta_params or None)
  hp = a2c.A2CHParams(discount=float(config.discount), gae_lambda=float(config.gae_lambda),
                      critic_weight=float(config.critic_weight),
                      entropy_weight=float(config.entropy_weight))
  probe, probe_size = (None, 0) if gradient_probe is None else gradient_probe.make_probe(net)
  trainer = a2c.make_trainer(net, env, opt, hp, int(config.rollout_steps), num_seeds,
                             jit_compile=bool(config.jit_compile), grad_probe=probe,
                             probe_size=probe_size)
  return trainer, env, net, opt


def init_state(trainer, config):
  """Initial state: seed s (label config.seed + s) starts from key (config.seed + s, 0)."""
  num_seeds = int(config.num_seeds)
  labels = [int(config.seed) + s for s in range(num_seeds)]
  keys = tf.constant([[lab, 0] for lab in labels], tf.int32)
  return trainer.init(int(config.seed), unit_keys=keys), labels


def train(config, workdir, progress_fn=None, console=True, gradient_probe=None):
  """Trains ``config.num_seeds`` A2C agents and writes the run's files into ``workdir``.

  Args:
    config: ConfigDict of ``configs/a2c.py``.
    workdir: output directory (created; must be writable).
    progress_fn: optional ``fn(step, info_dict)`` called after every chunk of iterations.
    console: print progress and the final summary line.
    gradient_probe: optional :class:`GradientProbe` recording the gradient of every update (required when
      ``config.collect.enabled``: ``optim4rl_tf.analysis.collect.gradient_probe_for(config)``).

  Divergence: a seed whose parameters, logits or gradients become non-finite or exceed
  ``a2c.DIVERGENCE_BOUND`` is frozen in-graph (:func:`a2c.a2c_update`), reported on the console and in
  summary.json (``diverged``: {seed: env step}); the other seeds train on, and the run stops early only when
  every seed has diverged. Its returns before divergence are kept; it is left out of the final performance.

  Interruption: a KeyboardInterrupt (SIGINT; SIGTERM too under :func:`optim4rl_tf.utils.cli.run`) or an
  error during training writes everything computed so far (returns.csv, tb/, returns.png, params.npz,
  summary.json with ``status`` "interrupted" or "failed") and is then re-raised.

  Returns:
    dict with ``returns`` ({seed label: (steps array, returns array)}), ``final`` (per-seed final
    performance, mean of the last 20 logged returns; NaN for diverged seeds), ``ci`` (:class:`stats.CI`
    over the healthy seeds, or None), ``steps_per_sec`` (env steps/s over all seeds, excluding the first
    call's compilation), ``iterations``, ``env_steps`` (per seed), ``wall_secs``, ``summary`` (the one-line
    summary), ``params`` (final parameters, list of [S, ...] numpy arrays; diverged seeds keep their last
    healthy ones), ``status`` ("finished", or "diverged" if any seed diverged) and ``diverged``.
  """
  iterations = validate_config(config)
  if gradient_probe is None and collection_requested(config):
    raise ValueError("config.collect.enabled asks for gradient collection, which the caller builds: pass "
                     "gradient_probe=optim4rl_tf.analysis.collect.gradient_probe_for(config) "
                     "(launch/train.py and launch/collect_gradients.py do)")
  cc.check_writable_dir(workdir)
  if config.optimizer.name not in transforms.CLASSICAL and not config.optimizer.meta_params and console:
    print(f"WARNING: {config.optimizer.name} without optimizer.meta_params uses an untrained (random) phi")
  t_start = time.time()
  trainer, env, net, opt = build(config, gradient_probe)
  del env, opt
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  logger = logging_lib.RunLogger(workdir)
  num_envs, t_steps = int(config.env.num_envs), int(config.rollout_steps)
  steps_per_iter = num_envs * t_steps
  total_steps = iterations * steps_per_iter
  state, labels = init_state(trainer, config)
  progress = logging_lib.Progress(total_steps, every_secs=float(config.console_every_secs),
                                  prefix=f"[a2c {config.env.name} {config.optimizer.name}] ",
                                  rate_scale=len(labels),
                                  rate_label="env steps/s" + (" (all seeds)" if len(labels) > 1 else ""))
  runs = {lab: ([], []) for lab in labels}
  last_return = np.full(len(labels), np.nan)
  diverged = {}                              # seed label -> env steps at the end of the iteration it diverged in
  done_iters = 0
  k = 1 if not config.iterations_per_call else int(config.iterations_per_call)
  timed_secs, timed_iters = 0.0, 0
  status, error = "finished", None
  grad_writer = None if gradient_probe is None else gradient_probe.open_writer(net, workdir, labels)
  try:
    while done_iters < iterations and len(diverged) < len(labels):
      k = min(k, iterations - done_iters)
      t0 = time.time()
      new_state, m = trainer.run(state, tf.constant(k, tf.int32))
      m = {name: v.numpy() for name, v in m.items()}          # [k, S]
      if grad_writer is not None:
        grad_writer.append(m.pop("grad_probe"))                # [k, S, coords]
      dt = time.time() - t0
      if done_iters > 0:                                       # first call includes tracing
        timed_secs += dt
        timed_iters += k
      chunk_rate = k * steps_per_iter * len(labels) / max(dt, 1e-9)
      # Count the chunk before logging it: an interrupt during logging then never leaves rows in
      # returns.csv beyond the env steps that summary.json and params.npz record.
      first_iter = done_iters
      state, done_iters = new_state, done_iters + k           # (together: params.npz matches env_steps)
      newly = _log_chunk(m, k, first_iter, labels, steps_per_iter, int(config.log_every), runs, last_return,
                         diverged, logger)
      step_now = done_iters * steps_per_iter
      if done_iters > k or done_iters == iterations:
        logger.scalars(step_now, {"perf/env_steps_per_sec": chunk_rate})
      logger.flush()
      if newly and console:
        rest = len(labels) - len(diverged)
        print(f"WARNING: seed(s) {', '.join(f'{lab} (by env step {diverged[lab]:,})' for lab in newly)} "
              f"diverged (non-finite or |x| > {a2c.DIVERGENCE_BOUND:g} parameters, logits or gradients) and "
              "are frozen at their last finite parameters"
              + (f"; the other {rest} seed(s) continue" if rest else "; no seed left: stopping"), flush=True)
      alive = [s for s, lab in enumerate(labels) if lab not in diverged]
      info = {"return": float(np.nanmean(last_return[alive])) if np.any(np.isfinite(last_return[alive])) else
              float("nan"), "iteration": done_iters}
      if console:
        progress.update(step_now, {"return": info["return"]}, force=done_iters == iterations)
      if progress_fn is not None:
        progress_fn(step_now, dict(info, steps_per_sec=progress.rate * len(labels)))
      if not config.iterations_per_call:
        per_iter = dt / k
        k = int(min(max(1, round(float(config.chunk_secs) / max(per_iter, 1e-6))), 1000))
  except KeyboardInterrupt as e:                               # SIGINT, or SIGTERM under utils.cli
    status, error = "interrupted", e
  except Exception as e:                                       # e.g. out of memory: keep what exists
    status, error = "failed", e
  finally:
    logger.close()
    if grad_writer is not None:
      grad_writer.close(complete=done_iters == iterations)
  if status == "finished" and diverged:
    status = "diverged"
  result = _finish(config, workdir, net, state, labels, runs, diverged, status, error, iterations, done_iters,
                   steps_per_iter, timed_iters, timed_secs, t_start)
  if console and error is None:
    print(result["summary"], flush=True)
  if error is not None:
    raise error
  return result


_LOGGED = (("loss", "loss/total"), ("actor_loss", "loss/actor"), ("critic_loss", "loss/critic"),
           ("entropy_loss", "loss/entropy"), ("entropy", "policy/entropy"), ("grad_norm", "norm/grad"),
           ("update_norm", "norm/update"))


def _log_chunk(m, k, done_iters, labels, steps_per_iter, log_every, runs, last_return, diverged, logger):
  """Writes the returns and scalars of k iterations; records newly diverged seeds (returned, in order)."""
  newly = []
  for j in range(k):
    it = done_iters + j
    step = it * steps_per_iter
    cnt, tot, healthy = m["return_count"][j], m["return_sum"][j], m["healthy"][j] > 0.5
    scalars = {}
    for s, lab in enumerate(labels):
      if not healthy[s] and lab not in diverged:
        diverged[lab] = step + steps_per_iter            # detected within this iteration
        newly.append(lab)
      if cnt[s] > 0:                      # (0 in-graph from the iteration whose rollout diverged)
        r = tot[s] / cnt[s]
        runs[lab][0].append(step)
        runs[lab][1].append(r)
        last_return[s] = r
        logger.returns(step, lab, r)
        scalars[f"return/seed_{lab}"] = r
    if np.any(cnt > 0):
      scalars["return/mean"] = float(np.mean(tot[cnt > 0] / cnt[cnt > 0]))
    if it % log_every == 0:
      if np.any(healthy):                 # means over the healthy seeds (a diverged one is NaN)
        for name, tag in _LOGGED:
          scalars[tag] = float(np.mean(m[name][j][healthy]))
      scalars["health/diverged_seeds"] = float(len(diverged))
    if scalars:
      logger.scalars(step, scalars)
  return newly


def _finish(config, workdir, net, state, labels, runs, diverged, status, error, iterations, done_iters,
            steps_per_iter, timed_iters, timed_secs, t_start):
  """Writes returns.png, params.npz and summary.json (also for a diverged, interrupted or failed run)."""
  total_steps = iterations * steps_per_iter
  done_steps = done_iters * steps_per_iter
  returns = {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}
  healthy = [lab for lab in labels if lab not in diverged]
  finals, ci = None, None
  if any(len(returns[lab][1]) for lab in healthy):
    finals, ci = stats.summarize_final([returns[lab][1] if lab in healthy else np.zeros(0) for lab in labels],
                                       last=20)
  of = (f"over {len(healthy)} seeds" if not diverged else
        f"over the {len(healthy)} of {len(labels)} seeds that did not diverge")
  if ci is not None:
    summary = (f"final return of {config.env.name} with {config.optimizer.name} "
               f"(lr {config.optimizer.learning_rate:g}) after {done_steps:,} steps, mean of the last 20 "
               f"logged returns {of}: {ci.mean:.4g} ± {ci.half_width:.3g} "
               f"(90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  elif healthy:
    summary = f"no episode finished in {done_steps:,} steps: no return to report"
  else:
    summary = f"all {len(labels)} seeds diverged: no final return to report"
  if status in ("interrupted", "failed"):
    summary = f"{status.upper()} at step {done_steps:,} of {total_steps:,}: {summary}"
  if config.plot and any(len(r[1]) for r in returns.values()):
    from optim4rl_tf.utils import plots
    try:
      plots.plot_returns(returns, os.path.join(workdir, "returns.png"),
                         title=f"A2C {config.env.name}, {config.optimizer.name} "
                               f"lr {config.optimizer.learning_rate:g}",
                         label=config.optimizer.name)
    except Exception as e:  # pylint: disable=broad-except   (never lose the summary to a plot)
      print(f"WARNING: no returns.png: {type(e).__name__}: {e}", flush=True)
  params = [p.numpy() for p in state.params]
  if config.save_params:
    np.savez(os.path.join(workdir, "params.npz"), seeds=np.array(labels),
             **{name: p for name, p in zip(net.param_names, params)})
  steps_per_sec = (timed_iters * steps_per_iter * len(labels) / timed_secs) if timed_secs > 0 else \
      float("nan")
  wall = time.time() - t_start
  clean = lambda v: None if v is None or not math.isfinite(v) else v
  logging_lib.write_json(os.path.join(workdir, "summary.json"), dict(
      summary=summary, status=status, error=None if error is None else _describe(error),
      env_steps=done_steps, planned_env_steps=total_steps, iterations=done_iters,
      planned_iterations=iterations, seeds=labels, diverged={str(lab): st for lab, st in diverged.items()},
      final=None if finals is None else [clean(f) for f in finals.tolist()],
      mean=None if ci is None else ci.mean, ci_low=None if ci is None else ci.low,
      ci_high=None if ci is None else ci.high, half_width=None if ci is None else ci.half_width,
      env_steps_per_sec=clean(steps_per_sec), wall_secs=wall))
  return dict(returns=returns, final=finals, ci=ci, steps_per_sec=steps_per_sec, iterations=iterations,
              env_steps=done_steps, wall_secs=wall, summary=summary, params=params, labels=labels,
              status=status, diverged=dict(diverged))


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
            (" or set optimizer.grad_clip > 0 (now off)" if clip <= 0 else
             f" or optimizer.grad_clip (now {clip:g})"))
  which = "all seeds" if len(diverged) == len(labels) else f"{len(diverged)} of {len(labels)} seeds"
  return (f"{which} diverged (non-finite or |x| > {a2c.DIVERGENCE_BOUND:g} parameters/logits/gradients): "
          f"seed{'s' if len(diverged) > 1 else ''} {seeds}; {advice}; the results so far are in {workdir}")
