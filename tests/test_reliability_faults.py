"""Faults found by a hostile tester (launch/reproduce.py, launch/main.py, meta configs), one test each.

Launchers run as processes only where the process is under test (signals, the workdir lock); everything
else calls the package's commands in this process (``optim4rl_tf.eval.reproduce`` and ``main_job``: their
functions, or ``conftest.run_command`` for their flags, one-line errors and exit status)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from optim4rl_tf.configs import a2c as a2c_configs
from optim4rl_tf.configs import meta_a2c as meta_configs
from optim4rl_tf.meta import memory_estimate
from optim4rl_tf.meta import run
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.utils import workdir as workdir_lib

from conftest import run_command  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reproduce():
  from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
  return reproduce


def tiny_meta(iterations=3, **overrides):
  c = meta_configs.get_config("catch")
  c.num_units, c.rollout_steps, c.inner_updates, c.num_iterations, c.reset_interval = 2, 5, 2, iterations, 2
  c.optimizer.mlp_dims = (4,)
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def write_json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def error_lines(stderr):
  return [
      line for line in stderr.splitlines()
      if line.strip() and not line.startswith(("I0000", "E0000", "W0000", "WARNING: All log messages"))
  ]


def launch(script, args, **kw):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OPTIM4RL_TF_TCMALLOC="0")
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", script)] + list(args),
                          cwd=ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True,
                          **kw)


def assert_one_line(proc, code, *needles, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  lines = error_lines(err)
  assert proc.returncode == code, (out[-2000:], err[-3000:])
  assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


# --- 1. reproduce.py reuses only finished runs of the requested config ----------------------------------------


def _meta_workdir(tmp_path, config, summary, phi=True):
  workdir = str(tmp_path / "meta_optim4rl_catch")
  write_json(os.path.join(workdir, "config.json"), run.resolved_config(config))
  if summary is not None:
    write_json(os.path.join(workdir, "summary.json"), summary)
  if phi:
    open(os.path.join(workdir, "phi.npz"), "w").close()
  return workdir


def test_meta_run_counts_as_finished_only_with_the_requested_iterations_and_config(tmp_path):
  reproduce = _reproduce()
  workdir = _meta_workdir(tmp_path, tiny_meta(3), {"iterations": 3, "diverged": False})
  assert reproduce.meta_status(tiny_meta(3), workdir) == "finished"
  assert reproduce.meta_status(tiny_meta(5), workdir) == "unfinished"  # a larger budget: resumed
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"workdir {workdir} holds a meta-training run of 3 outer "
                     "iterations, but 2 were requested"):
    reproduce.meta_status(tiny_meta(2), workdir)
  for overrides, diff in (({
      "seed": 1
  }, "seed 0 -> 1"), ({
      "meta_lr": 0.01
  }, "meta_lr 0.003 -> 0.01"), ({
      "num_units": 4
  }, r"tasks\[0\].num_units 2 -> 4")):
    with pytest.raises(workdir_lib.WorkdirError, match=f"workdir {workdir} was made with a different config: {diff}"):
      reproduce.meta_status(tiny_meta(3, **overrides), workdir)
  os.remove(os.path.join(workdir, "summary.json"))  # killed before its summary: resumed
  assert reproduce.meta_status(tiny_meta(3), workdir) == "unfinished"
  write_json(os.path.join(workdir, "summary.json"), {"iterations": 1, "diverged": True, "diverged_at": 2})
  assert reproduce.meta_status(tiny_meta(3), workdir) == "diverged"
  assert reproduce.meta_status(tiny_meta(3), str(tmp_path / "none")) == "new"


def _fake_a2c_train(calls, status="finished"):

  def train(config, workdir, **kw):
    del kw
    from optim4rl_tf.utils import logging as logging_lib  # pylint: disable=import-outside-toplevel
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
    write_json(os.path.join(workdir, "summary.json"), {"status": status})

  return train


def test_interrupted_test_is_rerun_and_kept_and_another_config_is_refused(tmp_path, monkeypatch, capsys):
  """The tester's case: an interrupted Adam test was reported beside a full run."""
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce()
  budget = reproduce.Budget(test_steps=1e4, num_seeds=2)
  workdir = str(tmp_path / "test_adam")
  calls = []
  monkeypatch.setattr(a2c_train, "train", _fake_a2c_train(calls, status="interrupted"))
  reproduce.test_run("catch", "adam", None, None, workdir, budget)
  assert json.load(open(os.path.join(workdir, "summary.json")))["status"] == "interrupted"
  monkeypatch.setattr(a2c_train, "train", _fake_a2c_train(calls))
  reproduce.test_run("catch", "adam", None, None, workdir, budget)  # unfinished: moved aside, run again
  assert calls == [workdir, workdir]
  assert json.load(open(os.path.join(workdir + ".stale-1", "summary.json")))["status"] == "interrupted"
  assert "moved it to" in capsys.readouterr().out
  reproduce.test_run("catch", "adam", None, None, workdir, budget)  # finished, same config: kept
  assert len(calls) == 2
  for other, diff in ((reproduce.Budget(test_steps=1e4, num_seeds=2, seed=1), "seed 1000 -> 1001"),
                      (reproduce.Budget(test_steps=2e4, num_seeds=2), "train_steps 10000.0 -> 20000.0"),
                      (reproduce.Budget(test_steps=1e4, num_seeds=3), "num_seeds 2 -> 3")):
    with pytest.raises(workdir_lib.WorkdirError, match=f"workdir {workdir} was made with a different config: {diff}"):
      reproduce.test_run("catch", "adam", None, None, workdir, other)
  assert len(calls) == 2 and not os.path.exists(workdir + ".stale-2")  # refused: nothing moved or rerun


def test_test_of_an_earlier_phi_is_redone(tmp_path, monkeypatch):
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce()
  core = cores.make_core("optim4rl", ())
  phi = str(tmp_path / "phi.npz")
  meta_params_lib.save(phi, core, core.init_meta_params(0))
  budget, workdir, calls = reproduce.Budget(test_steps=1e4, num_seeds=1), str(tmp_path / "test"), []
  monkeypatch.setattr(a2c_train, "train", _fake_a2c_train(calls))
  reproduce.test_run("catch", "optim4rl", phi, 1e-3, workdir, budget)
  reproduce.test_run("catch", "optim4rl", phi, 1e-3, workdir, budget)
  assert len(calls) == 1
  meta_params_lib.save(phi, core, core.init_meta_params(1))  # the meta-training went on
  reproduce.test_run("catch", "optim4rl", phi, 1e-3, workdir, budget)
  assert len(calls) == 2 and os.path.isdir(workdir + ".stale-1")


# --- 2. reproduce.py / main.py: one line and an exit status ------------------------------------------------------


def command_line(proc, code, *needles):
  """The one ``error:`` line of a command run by ``conftest.run_command`` (exit status ``code``)."""
  lines = error_lines(proc.stderr)
  assert proc.returncode == code, (proc.stdout[-2000:], proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def test_reproduce_and_main_flag_and_workdir_errors_are_one_line(tmp_path):
  """(All refused before any work starts.)"""
  from optim4rl_tf.eval import main_job  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce()
  afile = tmp_path / "afile"
  afile.write_text("x")
  wd = f"--workdir={tmp_path / 'w'}"
  command_line(run_command(reproduce, wd, "--num_seeds=0"), 2, "--num_seeds must be an integer >= 1, got 0")
  command_line(run_command(reproduce, wd, "--test_steps=nan"), 2, "--test_steps", "nan")
  command_line(run_command(reproduce, wd, "--seed=3000000000"), 2, "--seed must be an integer in [0, ")
  command_line(run_command(reproduce, wd, "--only=Adma"), 2, "'Adma' is not a label of figure3_catch")
  command_line(run_command(reproduce, wd, "--num_seeds=abc"), 2, "--num_seeds")
  command_line(run_command(reproduce, wd, "--experiment=figure9"), 2, "--experiment")
  command_line(run_command(reproduce, wd, "extra"), 2, "Unexpected arguments: extra")
  command_line(run_command(reproduce), 2, "--workdir is required")
  command_line(run_command(reproduce, f"--workdir={afile}"), 2, "exists and is not a directory")
  command_line(run_command(main_job, f"--workdir={afile}"), 2, "--workdir", "exists and is not a directory")
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow(5)
def test_reproduce_signals_exit_with_one_line(tmp_path, signum, code):
  root = tmp_path / "r"
  proc = launch("reproduce.py", [f"--workdir={root}", "--only=Adam", "--num_seeds=1", "--test_steps=1e9"])
  deadline = time.time() + 240
  while not os.path.exists(root / workdir_lib.LOCK_NAME) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signum)
  line = assert_one_line(proc, code, f"interrupted by {signal.Signals(signum).name}")
  assert "KeyboardInterrupt" not in line


# --- 3. main.py holds the workdir lock -------------------------------------------------------------------------


@pytest.mark.slow(5)
def test_second_main_on_a_workdir_in_use_is_refused_naming_the_holder(tmp_path):
  root = tmp_path / "main"
  with workdir_lib.lock(str(root)):
    proc = launch("main.py", [f"--workdir={root}", "--meta_units=2", "--num_seeds=1", "--test_steps=2000"])
    assert_one_line(proc, 2, f"workdir {root} is in use by another process (pid {os.getpid()})")
  assert sorted(os.listdir(root)) == [workdir_lib.LOCK_NAME]  # nothing moved aside or written


# --- 4. meta configs: bad values refused up front ----------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("num_iterations", -3, "num_iterations must be a non-negative integer, got -3"),
    ("meta_grad_clip", math.nan, "meta_grad_clip must be a finite number, got nan"),
    ("meta_grad_norm", math.nan, "meta_grad_norm must be a finite number, got nan"),
    ("max_norm", math.nan, "max_norm must be a finite number, got nan"),
    ("agent_grad_clip", math.inf, "agent_grad_clip must be a finite number, got inf"),
    ("critic_weight", math.nan, "critic_weight must be a non-negative finite number, got nan"),
    ("entropy_weight", math.nan, "entropy_weight must be a non-negative finite number, got nan"),
    ("seed", 3_000_000_000, r"seed must be an integer in \[0, 2,147,483,647\].*got 3000000000"),
    ("seed", -1, r"seed must be an integer in \[0, 2,147,483,647\].*got -1"),
])
def test_bad_meta_config_values_are_refused(field, value, message):
  with pytest.raises(ValueError, match=message):
    run.validate_config(tiny_meta(**{field: value}))


def test_bad_optimizer_sizes_are_refused():
  c = tiny_meta()
  c.optimizer.hidden_size = 0
  with pytest.raises(ValueError, match="optimizer.hidden_size must be a positive integer, got 0"):
    run.validate_config(c)
  c = tiny_meta()
  c.optimizer.mlp_dims = (4, -1)
  with pytest.raises(ValueError, match=r"optimizer.mlp_dims \(4, -1\)"):
    run.validate_config(c)


# --- 5. memory estimate before building ---------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("num_units", 10**9), ("rollout_steps", 10**8), ("hidden_size", 10**6),
                                         ("mlp_dims", (10**5, 10**5))])
def test_configs_too_big_for_this_machine_are_refused_before_building(field, value):
  c = tiny_meta()
  if field in ("hidden_size", "mlp_dims"):
    setattr(c.optimizer, field, value)
  else:
    setattr(c, field, value)
  with pytest.raises(ValueError,
                     match=r"needs about [\d.,]+ [MGT]iB of memory \(estimate, .*\), but this machine "
                     r"has [\d.,]+ [MGT]iB; lower num_units"):
    run.validate_config(c)


def test_estimate_is_within_2x_of_measured_peak_rss():
  assert memory_estimate.CALIBRATION
  for task, units, hidden, mlp_dims, measured_gb in memory_estimate.CALIBRATION:
    c = meta_configs.get_config(task)
    c.num_units, c.optimizer.hidden_size, c.optimizer.mlp_dims = units, hidden, mlp_dims
    ratio = memory_estimate.estimate(c)[0] / 1e9 / measured_gb
    assert 0.5 <= ratio <= 2.0, (task, units, hidden, mlp_dims, ratio)
  for tasks, units, measured_gb in memory_estimate.MULTI_TASK_CALIBRATION:
    c = meta_configs.get_config("grid6")
    c.num_units = units
    c.tasks = [t for t in c.tasks if tasks is None or t.env_name in tasks]
    ratio = memory_estimate.estimate(c)[0] / 1e9 / measured_gb
    assert 0.8 <= ratio <= 1.3, (tasks, units, ratio)
  c = meta_configs.get_config("catch")
  assert memory_estimate.check(c, limit_bytes=64 << 30) < 4e9  # the main job fits
  with pytest.raises(ValueError, match=r"but this machine has 1.0 GiB; lower"):
    memory_estimate.check(c, limit_bytes=1 << 30)


# --- 6. main.py names its own flags ---------------------------------------------------------------------------------


def test_the_grid6_recipe_at_512_units_passes_on_a_24_gb_machine_and_1024_units_are_refused():
  """The paper's recipe peaks at 16.9 GB here (memory_estimate.MULTI_TASK_CALIBRATION): the check lets it run on
  24 GB; twice its units are refused with one line."""
  c = meta_configs.get_config("grid6")
  c.num_units = 512
  assert 16.9e9 <= memory_estimate.check(c, limit_bytes=24 << 30) < 24 * 2**30
  c.num_units = 1024
  with pytest.raises(ValueError, match=r"needs about .* but this machine has 24.0 GiB; lower num_units"):
    memory_estimate.check(c, limit_bytes=24 << 30)


def test_main_too_many_units_names_meta_units(tmp_path):
  from optim4rl_tf.eval import main_job  # pylint: disable=import-outside-toplevel
  proc = run_command(main_job, f"--workdir={tmp_path / 'm'}", "--meta_units=100000000")
  line = command_line(proc, 2, "needs about", "lower --meta_units or --mlp_dims")
  assert "lower num_units" not in line
  assert not os.path.exists(tmp_path / "m" / "meta_optim4rl_catch")


def test_a2c_test_config_of_reproduce_is_valid():
  """(sanity: the test configs reproduce.py builds pass the A2C checks)"""
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce()
  config = reproduce._test_budget(  # pylint: disable=protected-access
      a2c_configs.get_config("catch"), "adam", None, None, reproduce.Budget(test_steps=1e4, num_seeds=2))
  assert a2c_train.validate_config(config) > 0
  assert np.isfinite(config.train_steps)


@pytest.mark.parametrize("field", ["chunk_secs", "console_every_secs"])
def test_a2c_config_refuses_a_nan_time_field_naming_it(field):
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.configs import a2c as a2c_configs
  config = a2c_configs.get_config("catch")
  config[field] = float("nan")
  with pytest.raises(ValueError, match=field):
    a2c_train.validate_config(config)


def test_a_meta_params_link_to_a_device_is_refused_without_reading_it(tmp_path):
  from optim4rl_tf.optimizers import meta_params
  from optim4rl_tf.utils import config_checks
  link = tmp_path / "phi.npz"
  os.symlink("/dev/zero", link)
  with pytest.raises(ValueError, match="not a regular file"):
    meta_params.load(str(link))
  with pytest.raises(ValueError, match="not a regular file"):
    config_checks.npz_array_shapes("optimizer.meta_params", str(link))


def test_a_killed_writers_temp_files_are_removed_when_the_workdir_is_taken(tmp_path):
  from optim4rl_tf.utils import workdir as workdir_lib
  (tmp_path / "phi.npz.k3j2x9.tmp").write_bytes(b"half")
  (tmp_path / "phi.npz").write_bytes(b"whole")
  (tmp_path / "notes.tmp").write_bytes(b"a user's")  # not an atomic_write temp name: kept
  assert workdir_lib.remove_stale_temps(str(tmp_path)) == ["phi.npz.k3j2x9.tmp"]
  assert sorted(os.listdir(tmp_path)) == ["notes.tmp", "phi.npz"]


@pytest.fixture(scope="module")
def four_iterations(tmp_path_factory):
  """A tiny MetaA2C run with checkpoints at outer iterations 2 and 4; returns (config, workdir)."""
  from optim4rl_tf.meta import run
  config = tiny_meta(iterations=4, checkpoint_every=2)
  workdir = str(tmp_path_factory.mktemp("meta") / "run")
  run.meta_train(config, workdir, console=False)
  return config, workdir


def _copy_run(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return str(dst)


def _resumed_iteration(config, workdir):
  from optim4rl_tf.meta import trainer as trainer_lib
  return int(trainer_lib.MetaTrainer(config, workdir).iteration.numpy())


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_lost_or_damaged_checkpoint_list_is_rebuilt_not_restarted_or_deleted(four_iterations, tmp_path, damage,
                                                                               capsys):
  config, src = four_iterations
  wd = _copy_run(src, tmp_path / "run")
  state = os.path.join(wd, "checkpoints", "checkpoint")
  before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  if damage == "missing":
    os.remove(state)
  else:
    with open(state, "w") as f:
      f.write("\x00\x01 not a checkpoint list {{{")
  assert _resumed_iteration(config, wd) == 4
  assert "rebuilt" in capsys.readouterr().out
  after = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  assert set(before) - {"checkpoint"} <= set(after)  # no checkpoint file was deleted


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(four_iterations, tmp_path, capsys):
  import glob
  config, src = four_iterations
  wd = _copy_run(src, tmp_path / "run")
  for path in glob.glob(os.path.join(wd, "checkpoints", "ckpt-4.data-*")):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 3)
  assert _resumed_iteration(config, wd) == 2
  assert "damaged checkpoint(s) skipped" in capsys.readouterr().out
  for path in glob.glob(os.path.join(wd, "checkpoints", "ckpt-2.data-*")):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 3)
  with pytest.raises(ValueError, match="every checkpoint in .* is damaged"):
    _resumed_iteration(config, wd)
  assert glob.glob(os.path.join(wd, "checkpoints", "ckpt-4.*"))  # nothing deleted


def test_a_phi_meta_training_would_call_diverged_is_refused_by_the_loaders(tmp_path):
  import optim4rl_tf
  from optim4rl_tf.optimizers import meta_params
  core, phi = meta_params.resolve("optim4rl", None, mlp_dims=(), seed=0)
  key = sorted(phi)[0]
  good = str(tmp_path / "good.npz")
  meta_params.save(good, core, phi)  # (save refuses the absurd phi itself, so the file is made by hand)
  path = str(tmp_path / "phi.npz")
  np.savez(path, **dict(phi, **{key: np.full_like(phi[key], 1e30)}), __meta__=np.load(good)["__meta__"])
  with pytest.raises(ValueError, match="beyond"):
    meta_params.load(path)
  with pytest.raises(ValueError, match="beyond"):
    optim4rl_tf.Optim4RL(meta_params=path)


def test_the_meta_training_summary_says_which_iteration_phi_is_from(four_iterations):
  _, workdir = four_iterations
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["phi_iteration"] == 4
