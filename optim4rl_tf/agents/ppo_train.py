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
and runs the training loop.

Writes into ``workdir``: ``config.json``, ``tb/`` (TensorBoard), ``returns.csv`` (``step,seed,return``: one
row per evaluation and seed; step = env steps per seed so far), ``returns.png``, ``summary.json`` (final
performance = mean of the last ``final_last`` (2) evaluation returns, 90% bootstrap CI over seeds) and
``params.npz`` (final parameters and normaliser, leading seed axis).
"""

import math
import os
import time
from typing import NamedTuple

import numpy as np

from optim4rl_tf.agents import ppo
from optim4rl_tf.agents import ppo_trainer
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import config_checks as cc
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import stats

# Kept in step with brax_bridge (not imported here: that would import nothing heavy, but the check
# messages should not need JAX).
BRAX_ENV_NAMES = ("ant", "humanoid", "inverted_double_pendulum", "walker2d", "inverted_pendulum")
BRIDGES = ("graph", "numpy")
BACKENDS = ("spring", "generalized", "positional")
# The in-graph rollout, where meta/meta_ppo_grad.py (the MetaPPO files) calls it as ppo_train.graph_rollout.
graph_rollout = ppo_trainer.graph_rollout


class Schedule(NamedTuple):
  unrolls: int                 # K unrolls of unroll_length steps per training step
  env_steps_per_train_step: int  # per seed
  train_steps_per_epoch: int
  num_epochs: int
  total_env_steps: int         # per seed


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
  cc.check_choice("task (env.name)", name, BRAX_ENV_NAMES)
  cc.check_choice("env.bridge", config.env.bridge, BRIDGES)
  cc.check_choice("env.backend", config.env.backend, BACKENDS)
  cc.check_choice("optimizer.name", config.optimizer.name, transforms.OPTIMIZER_NAMES)
  num_envs = cc.check_positive_int("env.num_envs", config.env.num_envs)
  cc.check_positive_int("env.episode_length", config.env.episode_length)
  action_repeat = cc.check_positive_int("env.action_repeat", config.env.action_repeat)
  cc.check_positive_int("num_seeds", config.num_seeds)
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
  return Schedule(unrolls=unrolls, env_steps_per_train_step=per_step, train_steps_per_epoch=per_epoch,
                  num_epochs=num_evals, total_env_steps=num_evals * per_epoch * per_step)


def build(config, schedule=None):
  """The :class:`optim4rl_tf.agents.ppo_trainer.Trainer` of a validated config."""
  from optim4rl_tf.envs import brax_bridge   # JAX imported here
  schedule = schedule or validate_config(config)
  s = int(config.num_seeds)
  kw = dict(episode_length=int(config.env.episode_length), action_repeat=int(config.env.action_repeat),
            backend=config.env.backend, bridge=config.env.bridge)
  env = brax_bridge.make(config.env.name, s * int(config.env.num_envs), **kw)
  eval_env = brax_bridge.make(config.env.name, s * int(config.num_eval_envs), **kw)
  nets = ppo.PPONetworks(env.obs_size, env.action_size, _hidden("policy", config.network.policy_hidden),
                         _hidden("value", config.network.value_hidden))
  opt = transforms.make_agent_optimizer(config.optimizer.name, float(config.optimizer.learning_rate),
                                        grad_clip=float(config.optimizer.grad_clip),
                                        meta_params=config.optimizer.meta_params or None)
  return ppo_trainer.Trainer(config, schedule, env, eval_env, nets, opt)


def train(config, workdir, progress_fn=None, console=True):
  """Trains ``config.num_seeds`` PPO agents on a Brax task and writes the run's files into ``workdir``.

  Returns a dict with ``returns`` ({seed label: (steps, eval returns)}), ``final`` (per seed: mean of the
  last ``final_last`` eval returns), ``ci`` (stats.CI over seeds), ``steps_per_sec`` (env steps/s of all
  seeds in training, excluding the first call's compilation and the evaluations), ``env_steps`` (per
  seed), ``schedule``, ``wall_secs``, ``summary``, ``aborted`` (True if an evaluation return was NaN)
  and ``params`` (list of [S, ...] numpy arrays).
  """
  schedule = validate_config(config)
  cc.check_writable_dir(workdir)
  if config.optimizer.name not in transforms.CLASSICAL and not config.optimizer.meta_params and console:
    print(f"WARNING: {config.optimizer.name} without optimizer.meta_params uses an untrained (random) phi")
  t_start = time.time()
  trainer = build(config, schedule)
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  logger = logging_lib.RunLogger(workdir)
  labels = trainer.labels
  per_step = schedule.env_steps_per_train_step
  total = schedule.total_env_steps
  tag = f"[ppo {trainer.env.name} {config.optimizer.name} {config.env.bridge}] "
  progress = logging_lib.Progress(total, every_secs=float(config.console_every_secs), prefix=tag,
                                  rate_scale=len(labels),
                                  rate_label="env steps/s" + (" (all seeds)" if len(labels) > 1 else ""))
  if console:
    print(f"{tag}{schedule.num_epochs} epochs x {schedule.train_steps_per_epoch} training steps x "
          f"{per_step:,} env steps = {total:,} env steps per seed; {len(labels)} seed(s); compiling "
          "(Brax on CPU: up to a few minutes)...", flush=True)
  runs = {lab: ([], []) for lab in labels}
  aborted = False
  timed_secs, timed_steps = 0.0, 0
  eval_secs = 0.0

  def do_eval(state, index, step):
    nonlocal aborted, eval_secs
    t0 = time.time()
    ret, length = trainer.evaluate(state, index)
    eval_secs += time.time() - t0
    scalars = {"return/mean": float(np.mean(ret)), "eval/episode_length": float(np.mean(length)),
               "eval/secs": time.time() - t0}
    for s, lab in enumerate(labels):
      runs[lab][0].append(step)
      runs[lab][1].append(float(ret[s]))
      logger.returns(step, lab, float(ret[s]))
      scalars[f"return/seed_{lab}"] = float(ret[s])
    logger.scalars(step, scalars)
    logger.flush()
    if not np.all(np.isfinite(ret)):
      aborted = True
    return ret

  state = trainer.init()
  try:
    ret = do_eval(state, 0, 0)
    if console:   # (the progress rate starts after the first training call, i.e. after compilation)
      print(f"{tag}step 0 | return {float(np.mean(ret)):.4g} | training (first call compiles)...",
            flush=True)
    done_steps = 0
    k = 1 if not config.iterations_per_call else int(config.iterations_per_call)
    first_call = True
    for epoch in range(schedule.num_epochs):
      if aborted:
        break
      left = schedule.train_steps_per_epoch
      while left > 0:
        k_now = min(k, left)
        t0 = time.time()
        state, m = trainer.run(state, k_now)
        dt = time.time() - t0
        if not first_call:
          timed_secs += dt
          timed_steps += k_now
        first_call = False
        left -= k_now
        done_steps += k_now
        step_now = done_steps * per_step
        scalars = {f"loss/{n}" if "loss" in n else f"train/{n}": float(np.mean(m[n])) for n in m}
        scalars["perf/env_steps_per_sec"] = k_now * per_step * len(labels) / max(dt, 1e-9)
        logger.scalars(step_now, scalars)
        if not all(np.all(np.isfinite(m[n])) for n in ("loss", "grad_norm")):
          print(f"WARNING: non-finite loss or gradient around training step {done_steps}", flush=True)
        if console:
          progress.update(step_now, {"return": float(np.mean(ret)), "loss": float(np.mean(m["loss"]))})
        if trainer.bridge == "graph" and not config.iterations_per_call:
          k = int(min(max(1, round(float(config.chunk_secs) / max(dt / k_now, 1e-6))), 1000))
      step_now = done_steps * per_step
      ret = do_eval(state, epoch + 1, step_now)
      if aborted:
        print(f"ERROR: evaluation return is NaN at step {step_now:,}; stopping the run", flush=True)
      info = {"return": float(np.mean(ret)), "epoch": epoch + 1}
      if console:
        progress.update(step_now, {"return": info["return"]}, force=True)
      if progress_fn is not None:
        progress_fn(step_now, dict(info, steps_per_sec=timed_steps * per_step * len(labels) /
                                   timed_secs if timed_secs else float("nan")))
  finally:
    logger.close()

  returns = {lab: (np.array(a, np.int64), np.array(b, np.float64)) for lab, (a, b) in runs.items()}
  last = int(config.final_last)
  finals, ci = None, None
  try:
    finals, ci = stats.summarize_final([returns[lab][1] for lab in labels], last=last)
  except ValueError:
    pass
  env_steps = int(state.iteration.numpy()) * per_step
  if ci is not None and math.isfinite(ci.mean):
    summary = (f"final return of {trainer.env.name} with PPO + {config.optimizer.name} "
               f"(lr {config.optimizer.learning_rate:g}) after {env_steps:,} env steps, mean of the last "
               f"{last} evaluation returns over {len(labels)} seed(s): {ci.mean:.4g} ± {ci.half_width:.3g} "
               f"(90% bootstrap CI [{ci.low:.4g}, {ci.high:.4g}])")
  else:
    summary = f"no finite evaluation return after {env_steps:,} env steps"
  if aborted:
    summary = "ABORTED (NaN evaluation return): " + summary
  if config.plot and ci is not None:
    from optim4rl_tf.utils import plots
    try:
      plots.plot_returns(returns, os.path.join(workdir, "returns.png"),
                         title=f"PPO {trainer.env.name}, {config.optimizer.name} "
                               f"lr {config.optimizer.learning_rate:g}",
                         label=config.optimizer.name)
    except ValueError as e:      # e.g. non-finite returns
      print(f"WARNING: no returns.png: {e}")
  params = [p.numpy() for p in state.params]
  if config.save_params:
    norm = {f"normalizer/{k}": v.numpy() for k, v in state.norm._asdict().items()}
    np.savez(os.path.join(workdir, "params.npz"), seeds=np.array(labels),
             **{n: p for n, p in zip(trainer.nets.param_names, params)}, **norm)
  steps_per_sec = timed_steps * per_step * len(labels) / timed_secs if timed_secs > 0 else float("nan")
  wall = time.time() - t_start
  clean = lambda v: None if v is None or not math.isfinite(v) else v
  logging_lib.write_json(os.path.join(workdir, "summary.json"), dict(
      summary=summary, env_steps=env_steps, planned_env_steps=total, seeds=labels, aborted=aborted,
      final=None if finals is None else [clean(f) for f in finals.tolist()],
      mean=None if ci is None else clean(ci.mean), ci_low=None if ci is None else clean(ci.low),
      ci_high=None if ci is None else clean(ci.high),
      half_width=None if ci is None else clean(ci.half_width),
      eval_returns={str(lab): returns[lab][1].tolist() for lab in labels},
      eval_steps=returns[labels[0]][0].tolist(), env_steps_per_sec=steps_per_sec, eval_secs=eval_secs,
      wall_secs=wall, bridge=config.env.bridge))
  if console:
    print(summary, flush=True)
  return dict(returns=returns, final=finals, ci=ci, steps_per_sec=steps_per_sec, env_steps=env_steps,
              schedule=schedule, wall_secs=wall, summary=summary, aborted=aborted, params=params,
              labels=labels, eval_secs=eval_secs)
