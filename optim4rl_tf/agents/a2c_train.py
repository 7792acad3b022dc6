"""A2C training run as a library function: ``train(config, workdir) -> results``.

All ``config.num_seeds`` agents train as ONE vectorised graph: the seed axis is the unit axis of
:mod:`optim4rl_tf.agents.a2c`, the env batch holds ``num_seeds * env.num_envs`` environments. The Python loop
only calls a ``tf.function`` that runs K iterations per call (K adapted so a call takes ~``chunk_secs``).

Writes into ``workdir``: ``config.json`` (resolved config), ``tb/`` (TensorBoard scalars), ``returns.csv``
(``step,seed,return``; notes §4.3: one row per iteration and seed in which at least one episode ended,
step = iteration * num_envs * rollout_steps, the mean return of those episodes), ``returns.png``,
``summary.json`` and ``params.npz`` (final agent parameters, leading seed axis). With
``config.collect.enabled`` (configs/collect.py), also ``grads/``: the sub-sampled agent gradient of every
update, streamed to disk (:mod:`optim4rl_tf.analysis.collect`).
"""

import math
import os
import time

import numpy as np
import tensorflow as tf

from optim4rl_tf import envs as envs_lib
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import networks
from optim4rl_tf.analysis import collect as collect_lib
from optim4rl_tf.eval import stats
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib


def validate_config(config):
  """Raises one clear ValueError for a bad config; returns the number of iterations."""
  cc.check_choice("task (env.name)", config.env.name, envs_lib.ENV_NAMES)
  cc.check_choice("optimizer.name", config.optimizer.name, transforms.OPTIMIZER_NAMES)
  cc.check_positive_int("num_seeds", config.num_seeds)
  cc.check_positive_int("env.num_envs", config.env.num_envs)
  cc.check_positive_int("rollout_steps", config.rollout_steps)
  train_steps = cc.check_positive_int("train_steps", config.train_steps)
  cc.check_positive("optimizer.learning_rate", config.optimizer.learning_rate)
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
  collect_lib.validate_collect(config)
  steps_per_iter = config.env.num_envs * config.rollout_steps
  iterations = train_steps // steps_per_iter
  if iterations < 1:
    raise ValueError(f"train_steps={train_steps} is less than one iteration "
                     f"(env.num_envs * rollout_steps = {steps_per_iter} env steps)")
  return iterations


def build(config):
  """(trainer, env, net, opt) for a validated config."""
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
  probe, probe_size = collect_lib.a2c_probe(config, net)
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


def train(config, workdir, progress_fn=None, console=True):
  """Trains ``config.num_seeds`` A2C agents and writes the run's files into ``workdir``.

  Args:
    config: ConfigDict of ``configs/a2c.py``.
    workdir: output directory (created; must be writable).
    progress_fn: optional ``fn(step, info_dict)`` called after every chunk of iterations.
    console: print progress and the final summary line.

  Returns:
    dict with ``returns`` ({seed label: (steps array, returns array)}), ``final`` (per-seed final
    performance, mean of the last 20 logged returns), ``ci`` (:class:`stats.CI` over seeds, or None),
    ``steps_per_sec`` (env steps/s over all seeds, excluding the first call's compilation),
    ``iterations``, ``env_steps`` (per seed), ``wall_secs``, ``summary`` (the one-line summary) and
    ``params`` (final parameters, list of [S, ...] numpy arrays).
  """
  iterations = validate_config(config)
  cc.check_writable_dir(workdir)
  if config.optimizer.name not in transforms.CLASSICAL and not config.optimizer.meta_params and console:
    print(f"WARNING: {config.optimizer.name} without optimizer.meta_params uses an untrained (random) phi")
  t_start = time.time()
  trainer, env, net, opt = build(config)
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
  done_iters = 0
  k = 1 if not config.iterations_per_call else int(config.iterations_per_call)
  timed_secs, timed_iters = 0.0, 0
  grad_writer = collect_lib.a2c_writer(config, net, workdir, labels)
  try:
    while done_iters < iterations:
      k = min(k, iterations - done_iters)
      t0 = time.time()
      state, m = trainer.run(state, tf.constant(k, tf.int32))
      m = {name: v.numpy() for name, v in m.items()}          # [k, S]
      if grad_writer is not None:
        grad_writer.append(m.pop("grad_probe"))                # [k, S, coords]
      dt = time.time() - t0
      if done_iters > 0:                                       # first call includes tracing
        timed_secs += dt
        timed_iters += k
      chunk_rate = k * steps_per_iter * len(labels) / max(dt, 1e-9)
      for j in range(k):
        it = done_iters + j
        step = it * steps_per_iter
        cnt, tot = m["return_count"][j], m["return_sum"][j]
        scalars = {}
        for s, lab in enumerate(labels):
          if cnt[s] > 0:
            r = tot[s] / cnt[s]
            runs[lab][0].append(step)
            runs[lab][1].append(r)
            last_return[s] = r
            logger.returns(step, lab, r)
            scalars[f"return/seed_{lab}"] = r
        if np.any(cnt > 0):
          scalars["return/mean"] = float(np.mean(tot[cnt > 0] / cnt[cnt > 0]))
        if it % int(config.log_every) == 0:
          for name, tag in (("loss", "loss/total"), ("actor_loss", "loss/actor"),
                            ("critic_loss", "loss/critic"), ("entropy_loss", "loss/entropy"),
                            ("entropy", "policy/entropy"), ("grad_norm", "norm/grad"),
                            ("update_norm", "norm/update")):
            scalars[tag] = float(np.mean(m[name][j]))
        if scalars:
          logger.scalars(step, scalars)
      done_iters += k
      step_now = done_iters * steps_per_iter
      if done_iters > k or done_iters == iterations:
        logger.scalars(step_now, {"perf/env_steps_per_sec": chunk_rate})
      logger.flush()
      if not all(np.all(np.isfinite(m[n])) for n in ("loss", "grad_norm")):
        print(f"WARNING: non-finite loss or gradient at iteration ~{done_iters}")
      info = {"return": float(np.nanmean(last_return)) if np.any(np.isfinite(last_return)) else
              float("nan"), "iteration": done_iters}
      if console:
        progress.update(step_now, {"return": info["return"]}, force=done_iters == iterations)
      if progress_fn is not None:
        progress_fn(step_now, dict(info, steps_per_sec=progress.rate * len(labels)))
      if not config.iterations_per_call:
        per_iter = dt / k
        k = int(min(max(1, round(float(config.chunk_secs) / max(per_iter, 1e-6))), 1000))
  finally:
    logger.close()
    if grad_writer is not None:
      grad_writer.close(complete=done_iters == iterations)

  returns = {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}
  finals, ci = None, None
  if any(len(r[1]) for r in returns.values()):
    finals, ci = stats.summarize_final([returns[lab][1] for lab in labels], last=20)
    summary = (f"final return of {config.env.name} with {config.optimizer.name} "
               f"(lr {config.optimizer.learning_rate:g}) after {total_steps:,} steps, mean of the last 20 "
               f"logged returns over {len(labels)} seeds: {ci.mean:.4g} ± {ci.half_width:.3g} "
               f"(90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  else:
    summary = f"no episode finished in {total_steps:,} steps: no return to report"
  if config.plot and ci is not None:
    from optim4rl_tf.eval import plots
    plots.plot_returns(returns, os.path.join(workdir, "returns.png"),
                       title=f"A2C {config.env.name}, {config.optimizer.name} "
                             f"lr {config.optimizer.learning_rate:g}",
                       label=config.optimizer.name)
  params = [p.numpy() for p in state.params]
  if config.save_params:
    np.savez(os.path.join(workdir, "params.npz"), seeds=np.array(labels),
             **{name: p for name, p in zip(net.param_names, params)})
  steps_per_sec = (timed_iters * steps_per_iter * len(labels) / timed_secs) if timed_secs > 0 else \
      float("nan")
  wall = time.time() - t_start
  logging_lib.write_json(os.path.join(workdir, "summary.json"), dict(
      summary=summary, env_steps=total_steps, iterations=iterations, seeds=labels,
      final=None if finals is None else [None if not math.isfinite(f) else f for f in finals.tolist()],
      mean=None if ci is None else ci.mean, ci_low=None if ci is None else ci.low,
      ci_high=None if ci is None else ci.high, half_width=None if ci is None else ci.half_width,
      env_steps_per_sec=steps_per_sec, wall_secs=wall))
  if console:
    print(summary, flush=True)
  return dict(returns=returns, final=finals, ci=ci, steps_per_sec=steps_per_sec, iterations=iterations,
              env_steps=total_steps, wall_secs=wall, summary=summary, params=params, labels=labels)
