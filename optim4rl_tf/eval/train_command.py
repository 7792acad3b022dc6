"""The training command (``optim4rl-train``, launch/train.py): agents (all seeds in one vectorised graph),
their logs, returns.csv and returns.png.

  optim4rl-train --config=configs/a2c.py:catch --workdir=runs/a2c_catch      # installed
  python launch/train.py --config=configs/a2c.py:catch --config.optimizer.name=adam \
      --config.num_seeds=10 --config.train_steps=300000 --workdir=/tmp/a2c_catch
  python launch/train.py --config=configs/ppo.py:ant_cpu --workdir=/tmp/ppo_ant

The config's ``agent`` field picks the trainer: 'a2c' (the default when absent; configs/a2c.py, outputs in
optim4rl_tf.agents.a2c_train) or 'ppo' (PPO on Brax; configs/ppo.py, optim4rl_tf.agents.ppo_train).
Meta-training configs (configs/meta_a2c.py, configs/ppo.py:meta_*) are refused: launch/meta_train.py is the
one meta-training launcher.

A2C runs resume: the same command on the same ``--workdir`` continues from ``checkpoint.npz`` (written every
``checkpoint_every_secs`` seconds, at the end and on SIGINT/SIGTERM), bit-identically to an unbroken run; a
finished run does nothing. PPO runs cannot resume yet.
"""
import functools
import json
import os
import shutil

from absl import flags
from absl import logging as absl_logging

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime
from optim4rl_tf.utils import workdir as workdir_lib

AGENTS = ("a2c", "ppo", "meta_ppo")


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv``: where ml_collections reads ``--config.*``
  overrides; None: ``sys.argv``)."""
  cli.define_config_flag(flag_values, argv, "configs/a2c.py:catch")
  flags.DEFINE_string("workdir",
                      None,
                      "Directory for TensorBoard logs, returns.csv and plots.",
                      flag_values=flag_values)
  flags.DEFINE_bool(
      "overwrite",
      False, "Delete the outputs of an earlier run of the SAME config in --workdir (finished or "
      "not) and start again. Without it an A2C workdir with a checkpoint of the same config resumes (or says it "
      "is finished), other such workdirs are refused (PPO runs cannot resume yet); a workdir holding a run of "
      "another config is always refused.",
      flag_values=flag_values)


# Exit codes (optim4rl_tf.utils.cli): 0 done; 2 bad flags, config or workdir (one line, nothing written);
# 3 some seed diverged (the healthy seeds finished; everything is written); 130/143 SIGINT/SIGTERM (what
# was computed is written, summary.json status "interrupted"). MetaPPO configs: those of
# launch/meta_train.py (optim4rl_tf.meta.run.cli_call; 1 when meta-training diverged or could not write).

# Config fields that may differ between the runs of one workdir (they change no result and no output).
RERUN_IGNORE = ("console_every_secs", "chunk_secs", "iterations_per_call")
# What a2c/ppo runs write (plus config.collect.subdir when gradient collection is on).
OUTPUTS = ("config.json", "returns.csv", "returns.png", "summary.json", "params.npz", "tb", "checkpoint.npz")
FINISHED = ("finished", "diverged")


def _read_json(path):
  try:
    with open(path) as f:
      value = json.load(f)
    return value if isinstance(value, dict) else {}
  except (OSError, ValueError):
    return {}


def _clear_outputs(workdir, old_config):
  collect = old_config.get("collect")
  names = list(OUTPUTS)
  if isinstance(collect, dict) and collect.get("enabled"):
    names.append(str(collect.get("subdir") or "grads"))
  for name in names:
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)


def prepare_workdir(workdir, config, overwrite):
  """Under the workdir lock: refuses a workdir holding another run, or clears it (``overwrite``). An A2C or PPO
  workdir with a checkpoint of this config (A2C: budget fields may differ) is left to the run, which resumes it
  (or says it is finished)."""
  old_config = _read_json(os.path.join(workdir, "config.json"))
  present = [n for n in OUTPUTS if os.path.lexists(os.path.join(workdir, n))]
  if not present:
    return
  agent = config.get("agent", "a2c")
  if not overwrite and agent in ("a2c", "ppo") and "config.json" in present and "checkpoint.npz" in present:
    if agent == "ppo":
      from optim4rl_tf.agents import ppo_train as train_lib
    else:
      from optim4rl_tf.agents import a2c_train as train_lib
    workdir_lib.check_config(workdir, config, ignore=train_lib.RESUMABLE_FIELDS)
    return
  if "config.json" in present:
    workdir_lib.check_config(workdir, config, ignore=RERUN_IGNORE)  # another config: always refused
  if not overwrite:
    summary = _read_json(os.path.join(workdir, "summary.json"))
    status = summary.get("status", "finished" if summary else None)  # (older runs had no status)
    if "config.json" not in present:
      what = f"outputs of an unknown run ({', '.join(present)})"
    elif status in FINISHED:
      what = f"a finished run of this config (status {status})"
    else:
      done = summary.get("env_steps")
      what = (f"an unfinished run of this config (status {status or 'incomplete'}" +
              (f", env step {done:,})" if isinstance(done, int) else ")") + " and no checkpoint to resume from")
    raise workdir_lib.WorkdirError(f"workdir {workdir} already holds {what}; pass --overwrite to delete it "
                                   "and start again, or use a new --workdir")
  _clear_outputs(workdir, old_config)


def _validate(agent, config):
  if agent == "a2c":
    from optim4rl_tf.agents import a2c_train
    a2c_train.validate_config(config)
  elif agent == "ppo":
    from optim4rl_tf.agents import ppo_train
    ppo_train.validate_config(config)


def _interrupted_line(e, workdir):
  summary = _read_json(os.path.join(workdir, "summary.json"))
  if summary.get("status") == "interrupted":
    return (f"{e.reason if hasattr(e, 'reason') else 'interrupted by SIGINT'} at env step "
            f"{summary.get('env_steps', 0):,} of {summary.get('planned_env_steps', 0):,}; returns.csv, tb/, "
            f"params.npz and summary.json (status 'interrupted') in {workdir} hold the results so far")
  return f"{getattr(e, 'reason', 'interrupted by SIGINT')}; the results so far are in {workdir}"


def main(argv, flag_values):
  """The command: the parsed config -> its agent's run function on --workdir (under the workdir lock)."""
  cli.check_config_and_workdir(argv, flag_values, "configs/a2c.py:catch")
  config, wd = flag_values.config, flag_values.workdir
  agent = config.get("agent", "a2c")
  if not isinstance(agent, str) or agent not in AGENTS:
    cli.fail(f"unknown config.agent {agent!r}; valid: {', '.join(AGENTS)}")
  if agent == "meta_ppo":
    cli.fail("config.agent 'meta_ppo' is a meta-training config: run it with launch/meta_train.py")
  if agent == "ppo":
    # JAX / MuJoCo / TF checkpointing log at INFO through the root logger, which absl prints: keep the
    # console to the run's own progress lines.
    absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    if agent == "ppo":
      from optim4rl_tf.agents import ppo_train
      run = ppo_train.train
    else:
      from optim4rl_tf.agents import a2c_train
      from optim4rl_tf.analysis import collect  # config.collect: gradients recorded by the caller's probe
      run = functools.partial(a2c_train.train, gradient_probe=collect.gradient_probe_for(config))
    _validate(agent, config)  # config errors first, before the workdir is looked at
    with workdir_lib.lock(wd):
      prepare_workdir(wd, config.to_dict(), flag_values.overwrite)
      result = run(config, wd)
  except ValueError as e:  # bad config or workdir (WorkdirError is a ValueError)
    cli.fail(e)
  except KeyboardInterrupt as e:  # SIGINT, or SIGTERM via cli.run: the trainer wrote what it had
    cli.fail(_interrupted_line(e, wd), code=cli.exit_code(e))
  except (MemoryError, OSError) as e:
    cli.fail(f"{type(e).__name__}: {e}" + ("" if isinstance(e, OSError) else "; lower env.num_envs or num_seeds"))
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ != "ResourceExhaustedError":  # TF out of memory: one line; others: trace
      raise
    first = (str(e).strip().splitlines() or [""])[0]
    cli.fail(f"out of memory ({first[:200]}); lower env.num_envs or num_seeds; the results so far are in {wd}")
  if agent == "a2c" and result.get("diverged"):
    from optim4rl_tf.agents import a2c_train
    cli.fail(a2c_train.divergence_message(config, wd, result["diverged"], result["labels"]), code=cli.EXIT_DIVERGED)
  if agent == "ppo" and result.get("aborted"):
    cli.fail(
        f"a NaN evaluation return stopped the run (the policy diverged): lower "
        f"optimizer.learning_rate (now {float(config.optimizer.learning_rate):g}); the results so far "
        f"are in {wd}",
        code=cli.EXIT_DIVERGED)


def console():
  """The ``optim4rl-train`` console script (and launch/train.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
