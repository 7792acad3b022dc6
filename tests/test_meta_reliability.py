"""Meta-training failure modes (issue 20): divergence, skipped final iterations, signals, resume logs,
workdir checks, bad flags, hostile .npz files and a full disk. Each ends with one clear line and keeps
what was computed."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.configs import meta_a2c as meta_configs
import test_meta  # noqa: E402
from optim4rl_tf.meta import pipeline
from optim4rl_tf.meta import run
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import workdir as workdir_lib
from conftest import run_command
from optim4rl_tf.meta import meta_train_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = [
    "--config.num_units=2", "--config.rollout_steps=5", "--config.inner_updates=2", "--config.reset_interval=2",
    "--config.optimizer.mlp_dims=(4,)"
]


def tiny_config(iterations=3, **overrides):
  """test_meta's tiny Catch config with 2 units (``num_units=`` overrides it)."""
  return test_meta.tiny_config(num_units=overrides.pop("num_units", 2), iterations=iterations, **overrides)


def poison_iterations(monkeypatch, bad):
  """A NaN meta-gradient at the outer iterations in ``bad``."""
  original = trainer_lib.MetaTrainer._combine

  def poisoned(self, task_grads):
    grads, norm = original(self, task_grads)
    hit = tf.reduce_any(tf.equal(self.iteration + 1, tf.constant(bad, tf.int64)))
    return [g + tf.where(hit, tf.constant(np.nan, tf.float32), 0.0) for g in grads], norm

  monkeypatch.setattr(trainer_lib.MetaTrainer, "_combine", poisoned)


def csv_iterations(workdir):
  with open(os.path.join(workdir, "meta_metrics.csv")) as f:
    return [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]


def error_lines(err):
  """stderr without TensorFlow's C++ start-up log lines (not ours to silence)."""
  return [
      line for line in err.splitlines() if line.strip() and not re.match(r"[IWE]\d{4} ", line) and
      not line.startswith("WARNING: All log messages before absl::InitializeLog()")
  ]


def launch(args, **kw):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OPTIM4RL_TF_TCMALLOC="0")
  return subprocess.Popen([sys.executable] + args,
                          cwd=ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True,
                          **kw)


# --- divergence reaches the guard --------------------------------------------------------------------


@pytest.mark.slow(7)
def test_absurd_phi_is_never_applied_and_the_run_stops_cleanly(tmp_path):
  """meta_lr=1e30: a finite phi of +-1e30 used to be applied, and the next rollouts crashed in a gather."""
  workdir = str(tmp_path / "run")
  applied = []
  with pytest.raises(trainer_lib.NonFiniteError, match="2 consecutive outer iterations.*no iteration was "
                     "applied"):
    run.meta_train(tiny_config(iterations=4, meta_lr=1e30, max_nonfinite=2),
                   workdir,
                   console=False,
                   progress_fn=lambda t, m: applied.append(m["meta/applied"]))
  assert applied == [0.0, 0.0]
  assert not os.path.exists(os.path.join(workdir, "phi.npz"))  # nothing applied, nothing saved as good


@pytest.mark.slow(20)
def test_a_finite_but_blown_up_phi_is_not_saved_and_the_error_names_meta_lr(tmp_path):
  """meta_lr=1e13: phi reaches ~1e13 after one meta-update, finite and below the agents' 1e15 limit; it used to
  be saved as phi.npz with exit status 0. Beyond meta_params.PHI_LIMIT it is skipped like NaN, and the error
  blames meta_lr (not the agents or the clip)."""
  workdir = str(tmp_path / "run")
  with pytest.raises(trainer_lib.NonFiniteError) as info:
    run.meta_train(tiny_config(iterations=3, meta_lr=1e13, max_nonfinite=2), workdir, console=False)
  message = str(info.value)
  assert "lower meta_lr (now 1e+13)" in message and "learning_rate" not in message
  assert not os.path.exists(os.path.join(workdir, "phi.npz"))


def test_the_divergence_advice_names_the_knob_of_the_failed_check():
  config = tiny_config()
  agents = trainer_lib.divergence_advice(config, [1, 1, 0])
  assert "learning_rate or agent_grad_clip" in agents and "meta_lr" not in agents
  grads = trainer_lib.divergence_advice(config, [0, 1, 1])
  assert "meta_grad_norm=0.5" in grads and "set meta_grad_clip or meta_grad_norm" in grads
  phi = trainer_lib.divergence_advice(config, [1, 0, 1])
  assert "lower meta_lr" in phi and "agent" not in phi


def test_diverged_agent_parameters_never_reach_the_sampler():
  trainer = trainer_lib.MetaTrainer(tiny_config())
  task, core = trainer.tasks[0], trainer.core
  units = trainer.units[0].read()
  phi = {k: v.read_value() for k, v in zip(trainer.keys, trainer.phi)}
  _, _, _, metrics, _ = test_meta.inner_loop(trainer, phi, units, tf.constant([1, 2]))
  assert float(metrics["params_ok"]) == 1.0
  # A unit whose weights are NaN/absurd (as after a blown-up inner update): the rollouts must not sample
  # from NaN logits (an out-of-range action made the next gather fail); the iteration is flagged instead.
  bad = units._replace(params=[p * np.float32(1e30) + (np.nan if i == 0 else 0.0) for i, p in enumerate(units.params)])
  _, _, _, metrics, traj = test_meta.inner_loop(trainer, phi, bad, tf.constant([1, 2]))
  assert float(metrics["params_ok"]) == 0.0
  assert np.all((traj.actions.numpy() >= 0) & (traj.actions.numpy() < task.env.num_actions))
  assert bool(pipeline.all_sane([tf.constant([1e14, -3.0])]))
  assert not bool(pipeline.all_sane([tf.constant([1e16])]))
  assert not bool(pipeline.all_sane([tf.constant([np.nan])]))


# --- the final applied state is always saved -----------------------------------------------------------


@pytest.mark.parametrize("iterations,every,bad", [(4, 2, [4]), (2, 10, [2])])
@pytest.mark.slow(6)
def test_skipped_final_iteration_still_saves_the_applied_state(tmp_path, monkeypatch, iterations, every, bad):
  poison_iterations(monkeypatch, bad)
  workdir = str(tmp_path / "run")
  trainer = trainer_lib.MetaTrainer(tiny_config(iterations=iterations, checkpoint_every=every), workdir)
  phis = {}
  trainer.train(lambda t, m: phis.update({t: trainer.meta_params()}))
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith(f"ckpt-{iterations}")
  _, saved = meta_params_lib.load(os.path.join(workdir, "phi.npz"))
  last_applied = phis[iterations - 1]
  for k in saved:
    np.testing.assert_array_equal(saved[k], last_applied[k])
  if iterations > 2:  # not the phi of the last periodic checkpoint (ckpt-2)
    assert any(not np.array_equal(saved[k], phis[2][k]) for k in saved)


# --- signals --------------------------------------------------------------------------------------------


def _wait_for_rows(workdir, n, proc, timeout=240):
  deadline = time.time() + timeout
  path = os.path.join(workdir, "meta_metrics.csv")
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and len(csv_iterations(workdir)) >= n:
      return
    time.sleep(0.1)
  raise AssertionError(f"the run never logged {n} iterations")


@pytest.mark.slow(33)
def test_sigterm_and_sigint_save_the_last_completed_iteration(tmp_path, monkeypatch):
  """SIGTERM to a real launch/meta_train.py process once it logged 2 iterations; then the resumed run
  (the same command in this process, conftest.run_command) gets SIGINT, from this process to itself,
  during its first new outer iteration."""
  workdir = str(tmp_path / "run")
  args = [
      "launch/meta_train.py", f"--config={ROOT}/configs/meta_a2c.py:catch", f"--workdir={workdir}",
      "--config.num_iterations=500", "--config.checkpoint_every=1000"
  ] + TINY_FLAGS
  step = trainer_lib.MetaTrainer._step

  def step_then_sigint(self, *a, **kw):
    out = step(self, *a, **kw)
    os.kill(os.getpid(), signal.SIGINT)  # arrives before the iteration is logged and saved
    return out

  for signum, code, rows in ((signal.SIGTERM, 143, 2), (signal.SIGINT, 130, None)):
    if signum == signal.SIGTERM:
      proc = launch(args)
      _wait_for_rows(workdir, rows, proc)
      proc.send_signal(signum)
      out, err = proc.communicate(timeout=120)
    else:
      before = len(csv_iterations(workdir))
      monkeypatch.setattr(trainer_lib.MetaTrainer, "_step", step_then_sigint)
      proc = run_command(meta_train_command, *args[1:])
      out, err = proc.stdout, proc.stderr
      assert len(csv_iterations(workdir)) == before + 1
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    lines = error_lines(err)
    assert len(lines) == 1 and f"interrupted by {signal.Signals(signum).name} after outer iteration" in \
        lines[0], err
    done = csv_iterations(workdir)
    assert done == list(range(1, len(done) + 1))  # each iteration once, also across the resume
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert latest.endswith(f"ckpt-{done[-1]}"), (latest, done)  # nothing computed was lost
    assert os.path.exists(os.path.join(workdir, "phi.npz"))
  assert "resuming" in out


# --- resume: each iteration logged once --------------------------------------------------------------------


@pytest.mark.slow(8)
def test_resume_logs_each_iteration_once_and_records_the_units_used(tmp_path):
  workdir = str(tmp_path / "run")

  def crash_at_3(t, values):  # as a SIGKILL after iteration 3 was logged but before it was saved
    if t == 3:
      raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    run.meta_train(tiny_config(iterations=4, checkpoint_every=2), workdir, console=False, progress_fn=crash_at_3)
  assert csv_iterations(workdir) == [1, 2, 3]
  # A larger budget may resume the workdir; iteration 3 is redone and must replace the first attempt.
  run.meta_train(tiny_config(iterations=5, checkpoint_every=2), workdir, console=False)
  assert csv_iterations(workdir) == [1, 2, 3, 4, 5]
  steps = []
  for path in tf.io.gfile.glob(os.path.join(workdir, "tb", "*tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      steps += [event.step for v in event.summary.value if v.tag == "meta/grad_norm"]
  assert sorted(steps) == [1, 2, 3, 4, 5]
  recorded = json.load(open(os.path.join(workdir, "config.json")))
  assert recorded["tasks"][0]["num_units"] == 2  # the number of units used, not the task's default 64


def test_negative_num_units_is_rejected():
  with pytest.raises(ValueError, match="num_units must be a non-negative integer.*got -5"):
    config = tiny_config()
    config.num_units = -5  # the config-wide units per task (tasks[i].num_units 0 follow it)
    run.validate_config(config)


# --- workdirs -----------------------------------------------------------------------------------------------


def _old_style_workdir(tmp_path, config):
  """A workdir as earlier versions left it (config.json with tasks as YAML strings)."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  logging_lib.write_json(os.path.join(workdir, "config.json"), logging_lib.config_to_dict(config))
  return workdir


def test_workdir_made_with_another_config_is_refused(tmp_path):
  workdir = _old_style_workdir(tmp_path, tiny_config())
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"different config: meta_lr 0.003 -> 0.01, seed 0 -> 1; use a new --workdir"):
    run.meta_train(tiny_config(meta_lr=0.01, seed=1), workdir, console=False)
  wider = tiny_config()
  wider.optimizer.mlp_dims = (8,)
  with pytest.raises(workdir_lib.WorkdirError, match=r"optimizer.mlp_dims \[4\] -> \[8\]"):
    run.meta_train(wider, workdir, console=False)
  with pytest.raises(workdir_lib.WorkdirError, match=r"tasks\[0\].num_units 2 -> 4"):
    run.meta_train(tiny_config(num_units=4), workdir, console=False)
  assert open(os.path.join(workdir, "config.json")).read() == before
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow(25)
def test_config_json_keeps_describing_the_phi_beside_it(tmp_path, monkeypatch):
  """config.json must describe phi.npz: a rerun with fewer iterations, checkpoints whose config.json was
  deleted, and a start refused while building are each refused without writing config.json."""
  workdir = str(tmp_path / "run")
  run.meta_train(tiny_config(iterations=3), workdir, console=False)
  recorded = open(os.path.join(workdir, "config.json")).read()
  phi = dict(np.load(os.path.join(workdir, "phi.npz")))
  with pytest.raises(workdir_lib.WorkdirError, match="already holds 3 outer iterations, more than num_iterations=2"):
    run.meta_train(tiny_config(iterations=2), workdir, console=False)
  assert open(os.path.join(workdir, "config.json")).read() == recorded
  assert all(np.array_equal(v, np.load(os.path.join(workdir, "phi.npz"))[k]) for k, v in phi.items())

  os.remove(os.path.join(workdir, "config.json"))  # now a resume with another seed must not be accepted
  with pytest.raises(workdir_lib.WorkdirError, match="holds checkpoints but no config.json"):
    run.meta_train(tiny_config(iterations=4, seed=7), workdir, console=False)
  assert not os.path.exists(os.path.join(workdir, "config.json"))

  def refuse(*args, **kwargs):
    raise ValueError("refused while building")

  fresh = str(tmp_path / "fresh")
  monkeypatch.setattr(trainer_lib, "MetaTrainer", refuse)
  with pytest.raises(ValueError, match="refused while building"):
    run.meta_train(tiny_config(), fresh, console=False)
  assert not os.path.exists(os.path.join(fresh, "config.json"))  # the corrected command is not blocked


def test_a_workdir_in_use_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
      run.meta_train(tiny_config(), workdir, console=False)
  assert not os.path.exists(os.path.join(workdir, "config.json"))


# --- launch/main.py ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag,message", [
    ("--meta_units=0", "--meta_units must be an integer >= 1, got 0"),
    ("--mlp_dims=abc", "--mlp_dims must be comma-separated positive integers (or empty), got 'abc'"),
    ("--num_seeds=0", "--num_seeds must be an integer >= 1, got 0"),
])
def test_main_rejects_bad_flags_before_any_work(tmp_path, flag, message):
  """The main job's command in this process (its process wiring: test_main_refuses_another_seed_in_the_same_workdir)."""
  from optim4rl_tf.eval import main_job  # pylint: disable=import-outside-toplevel
  proc = run_command(main_job, f"--workdir={tmp_path / 'main'}", flag)
  out, err = proc.stdout, proc.stderr
  assert proc.returncode == 2, err[-2000:]
  assert error_lines(err) == [f"error: {message}"], err[-2000:]
  assert "== 1/3" not in out


@pytest.mark.slow(5)
def test_main_refuses_another_seed_in_the_same_workdir(tmp_path):
  root = tmp_path / "main"
  config = meta_configs.get_config("catch")
  config.tasks[0].num_units = 2
  config.num_iterations = 1
  config.optimizer.mlp_dims = ()
  os.makedirs(root)
  _old_style_workdir(root, config)  # root/run: rename to the meta-training folder main.py uses
  os.rename(root / "run", root / "meta_optim4rl_catch")
  proc = launch([
      "launch/main.py", f"--workdir={root}", "--seed=9", "--meta_units=2", "--meta_iterations=1", "--num_seeds=1",
      "--test_steps=2000"
  ])
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 2, err[-2000:]
  lines = error_lines(err)
  assert len(lines) == 1 and "seed 0 -> 9; use a new --workdir" in lines[0], err[-2000:]


def test_main_retests_when_phi_or_budget_changed(tmp_path, monkeypatch, capsys):
  """A finished test is kept only for the same phi and budget; otherwise it is moved aside and redone."""
  from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import main_job  # pylint: disable=import-outside-toplevel
  core = cores.make_core("optim4rl", ())
  phi1 = meta_params_lib.save(str(tmp_path / "phi1.npz"), core, core.init_meta_params(0))
  phi1_again = meta_params_lib.save(str(tmp_path / "phi1b.npz"), core, core.init_meta_params(0))
  phi2 = meta_params_lib.save(str(tmp_path / "phi2.npz"), core, core.init_meta_params(1))
  d = str(tmp_path / "test_optim4rl")
  calls = []

  def fake_train(config, workdir, **kw):
    del kw
    os.makedirs(workdir, exist_ok=True)
    calls.append([os.path.basename(config.optimizer.meta_params), float(config.train_steps)])
    json.dump(logging_lib.config_to_dict(config), open(os.path.join(workdir, "config.json"), "w"))
    json.dump({"status": "finished"}, open(os.path.join(workdir, "summary.json"), "w"))

  monkeypatch.setattr(a2c_train, "train", fake_train)
  job = main_job.MainJob(num_seeds=1, test_steps=100000)
  for phi in (phi1, phi1_again, phi2):
    job.test_optimizer("optim4rl", d, phi)
  job.test_steps = 200000
  job.test_optimizer("optim4rl", d, phi2)
  out = capsys.readouterr().out
  assert calls == [["phi1.npz", 1e5], ["phi2.npz", 1e5], ["phi2.npz", 2e5]], out
  assert "already tested with this phi and budget" in out
  assert sorted(os.listdir(tmp_path)) == [
      "phi1.npz", "phi1b.npz", "phi2.npz", "test_optim4rl", "test_optim4rl.stale-1", "test_optim4rl.stale-2"
  ]


# --- hostile .npz files --------------------------------------------------------------------------------------


def _npy_member(zf, name, shape, payload_bytes, dtype="<f4"):
  header = {"descr": dtype, "fortran_order": False, "shape": shape}
  with zf.open(name, "w", force_zip64=True) as f:
    np.lib.format.write_array_header_1_0(f, header)
    chunk = b"\0" * (1 << 20)
    left = payload_bytes
    while left > 0:
      f.write(chunk[:left])
      left -= len(chunk)


def _hostile(path, core, tweak):
  phi = core.init_meta_params(0)
  meta = json.dumps({"optimizer": core.name, "mlp_dims": list(core.mlp_dims), "hidden_size": 8})
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    with zf.open("__meta__.npy", "w") as f:
      np.lib.format.write_array(f, np.array(meta))
    for key, value in phi.items():
      if key not in tweak:
        with zf.open(key + ".npy", "w") as f:
          np.lib.format.write_array(f, np.asarray(value, np.float32))
    for key, (shape, payload) in tweak.items():
      _npy_member(zf, key + ".npy", shape, payload)
  return path


@pytest.mark.parametrize("tweak,message", [
    ({
        "rnn1/kernel": ((1 << 40,), 1 << 16)
    }, r"'rnn1/kernel' has shape \(1099511627776,\), expected \(1, 24\)"),
    ({
        "junk": ((1 << 40,), 1 << 16)
    }, r"unexpected keys \['junk'\]"),
    ({
        "rnn1/kernel": ((1, 24), 64 << 20)
    }, r"'rnn1/kernel' declares \d+ bytes, but its header says \d+ "),
])
def test_npz_loader_checks_headers_before_reading(tmp_path, tweak, message):
  path = _hostile(str(tmp_path / "bad.npz"), cores.make_core("optim4rl", ()), tweak)
  assert os.path.getsize(path) < 1 << 20  # a small file ...
  t0 = time.time()
  with pytest.raises(ValueError, match=message):  # ... rejected from its headers, without inflating it
    meta_params_lib.load(path)
  assert time.time() - t0 < 2.0


# --- a full disk --------------------------------------------------------------------------------------------


def test_disk_full_keeps_the_last_checkpoint_and_exits_with_one_line(tmp_path, monkeypatch, capsys):
  workdir = str(tmp_path / "run")
  real_save = tf.train.CheckpointManager.save

  def save(self, checkpoint_number=None, **kw):
    if checkpoint_number == 2:  # the writer fails half-way, as TensorFlow does when the disk fills up
      os.makedirs(os.path.join(self.directory, "ckpt-2_temp"))
      open(os.path.join(self.directory, "ckpt-2_temp", "part-00000-of-00001.data-00000-of-00001"), "w").close()
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, checkpoint_number=checkpoint_number, **kw)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
  with pytest.raises(SystemExit) as e:
    run.cli_call(run.meta_train, tiny_config(iterations=3), workdir, console=False)
  assert e.value.code == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: could not save outer iteration 2") and "No space left on device" in err
  assert "ckpt-1 is intact" in err and len(err.splitlines()) == 1
  folder = os.path.join(workdir, "checkpoints")
  assert not [n for n in os.listdir(folder) if "_temp" in n]
  assert tf.train.latest_checkpoint(folder).endswith("ckpt-1")
