"""Issues 14 and 20: every failure of launch/train.py ends with one clear line and a non-zero exit, and keeps
what was already written (diverging seeds, bad flags and configs, workdir reruns, SIGTERM).

The launcher runs as a real process where the process itself is under test (flag errors, which must come
before TensorFlow loads, and SIGTERM); the other cases run the same script in this process
(``conftest.run_command(train_command, ...)``: its flags, ``cli.call`` and ``main``), which spares a TensorFlow start-up
per case."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf import envs
from optim4rl_tf.agents import a2c
from optim4rl_tf.agents import a2c_train
from optim4rl_tf.agents import networks
from optim4rl_tf.optimizers import transforms
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from optim4rl_tf.configs import a2c as a2c_configs  # noqa: E402
from optim4rl_tf.eval import train_command  # noqa: E402
from conftest import run_command  # noqa: E402
from conftest import set_fields  # noqa: E402

TRAIN = os.path.join(ROOT, "launch", "train.py")
CATCH = "--config=" + os.path.join(ROOT, "configs", "a2c.py") + ":catch"
TINY = [
    CATCH, "--config.num_seeds=1", "--config.env.num_envs=4", "--config.train_steps=160",
    "--config.iterations_per_call=1", "--config.plot=False"
]  # 2 iterations of 4 envs x 20 steps


def launch(args, timeout=300, **kwargs):
  """launch/train.py ARGS as a process."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, TRAIN] + args,
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=ROOT,
                        timeout=timeout,
                        **kwargs)


def train_here(args):
  """launch/train.py ARGS in this process: ``.returncode`` (its exit status), ``.stdout``, ``.stderr``."""
  return run_command(train_command, *args)


def error_lines(stderr):
  """The lines a launcher printed itself (TensorFlow's C++ start-up chatter left out)."""
  return [
      line for line in stderr.splitlines()
      if line.strip() and not line.startswith(("I0000", "E0000", "W0000", "WARNING: All log messages"))
  ]


def assert_one_line(proc, code, *needles):
  lines = error_lines(proc.stderr)
  assert proc.returncode == code, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def tiny_config(**overrides):
  c = a2c_configs.get_config("catch")
  c.env.num_envs = 8
  c.num_seeds = 2
  c.train_steps = 8 * 20 * 6  # 6 iterations
  c.console_every_secs = 0.0
  c.iterations_per_call = 2
  return set_fields(c, **overrides)


def _poison(x, unit, value):
  x = x.numpy().copy()
  x[unit] = value
  return tf.constant(x)


# ---------------------------------------------------------------------------------------------------
# Diverging agents: detected in-graph, frozen per seed, reported.


def test_diverged_unit_is_frozen_in_graph_and_others_unchanged():
  """NaN parameters used to give NaN logits, out-of-range sampled actions and a GatherV2 crash (zeros on a
  GPU). Now the unit is flagged before sampling, frozen, and the other units are bit-identical."""
  env = envs.make("catch", 3 * 4)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  opt = transforms.make_agent_optimizer("adam", 1e-3)
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, 3)
  state = trainer.init(5)
  bad = state._replace(params=[_poison(state.params[0], 1, np.nan)] + list(state.params[1:]))
  clean, m_clean = trainer.run(state, tf.constant(2))
  out, m = trainer.run(bad, tf.constant(2))
  np.testing.assert_array_equal(m["healthy"].numpy(), [[1, 0, 1], [1, 0, 1]])
  np.testing.assert_array_equal(m["return_count"].numpy()[:, 1], [0, 0])
  np.testing.assert_array_equal(m["update_norm"].numpy()[:, 1], [0, 0])
  for a, b, p0 in zip(out.params, clean.params, bad.params):
    np.testing.assert_array_equal(a.numpy()[[0, 2]], b.numpy()[[0, 2]])
    np.testing.assert_array_equal(a.numpy()[1], p0.numpy()[1])  # frozen
  np.testing.assert_array_equal(m["loss"].numpy()[:, [0, 2]], m_clean["loss"].numpy()[:, [0, 2]])
  # Parameters that are finite but absurdly large count as diverged too.
  huge = state._replace(params=[_poison(state.params[0], 0, 2 * a2c.DIVERGENCE_BOUND)] + list(state.params[1:]))
  _, m_huge = trainer.run(huge, tf.constant(1))
  np.testing.assert_array_equal(m_huge["healthy"].numpy(), [[0, 1, 1]])


def test_nan_grad_clip_diverges_every_unit_without_crashing():
  """The issue's --config.optimizer.grad_clip=nan, past validation: NaN updates are caught in-graph."""
  env = envs.make("catch", 2 * 4)
  net = networks.make_network("catch", env.obs_shape, env.num_actions)
  opt = transforms.make_agent_optimizer("adam", 1e-3, grad_clip=float("nan"))
  trainer = a2c.make_trainer(net, env, opt, a2c.A2CHParams(), 20, 2)
  state = trainer.init(0)
  out, m = trainer.run(state, tf.constant(3))
  np.testing.assert_array_equal(m["healthy"].numpy(), np.zeros([3, 2]))
  assert np.all(m["return_count"].numpy()[1:] == 0) and np.all(m["return_count"].numpy()[0] > 0)
  for a, b in zip(out.params, state.params):
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # frozen at the initial parameters


def test_one_diverged_seed_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
  clean = a2c_train.train(tiny_config(), str(tmp_path / "clean"), console=False)
  init_state = a2c_train.init_state

  def poisoned(trainer, config):  # seed label 1 (unit 1) starts with a NaN weight
    state, labels = init_state(trainer, config)
    return state._replace(params=[_poison(state.params[0], 1, np.nan)] + list(state.params[1:])), labels

  monkeypatch.setattr(a2c_train, "init_state", poisoned)
  wd = tmp_path / "run"
  res = a2c_train.train(tiny_config(), str(wd))
  assert res["status"] == "diverged" and res["diverged"] == {1: 160}
  assert len(res["returns"][0][1]) == 6 and len(res["returns"][1][1]) == 0
  for a, b in zip(res["params"], clean["params"]):
    np.testing.assert_array_equal(a[0], b[0])  # the healthy seed is untouched
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "diverged" and summary["diverged"] == {"1": 160}
  assert summary["final"][1] is None and summary["final"][0] is not None and summary["iterations"] == 6
  assert "the 1 of 2 seeds that did not diverge" in summary["summary"]
  for name in ("returns.csv", "returns.png", "params.npz", "tb"):
    assert os.path.exists(wd / name), name
  out = capsys.readouterr().out
  assert "seed(s) 1 (by env step 160) diverged" in out and "the other 1 seed(s) continue" in out
  msg = a2c_train.divergence_message(tiny_config(), str(wd), res["diverged"], res["labels"])
  assert "1 of 2 seeds diverged" in msg and "optimizer.learning_rate" in msg


def test_launcher_all_seeds_diverge_exit_3(tmp_path):
  wd = tmp_path / "div"
  proc = train_here(TINY[:1] + [
      "--config.num_seeds=2", "--config.env.num_envs=4", "--config.train_steps=800", "--config.iterations_per_call=1",
      "--config.optimizer.learning_rate=1e30", f"--workdir={wd}"
  ])
  line = assert_one_line(proc, 3, "all seeds diverged", "seeds 0 (by env step", "optimizer.learning_rate", "grad_clip")
  assert str(wd) in line
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "diverged" and set(summary["diverged"]) == {"0", "1"}
  assert summary["iterations"] < 10  # stopped early
  rows = list(csv.DictReader(open(wd / "returns.csv")))
  assert rows and {r["seed"] for r in rows} == {"0", "1"}  # returns before divergence kept
  assert os.listdir(wd / "tb")


# ---------------------------------------------------------------------------------------------------
# Bad configs: one line, exit 2.


def _huge_meta_params(path):
  """An .npz whose header declares a 4 TB array (the data is not there): np.load would try to allocate it."""
  with zipfile.ZipFile(path, "w") as zf:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    zf.writestr("rnn1/kernel.npy", buf.getvalue())
    meta = io.BytesIO()
    np.save(meta, np.array(json.dumps({"optimizer": "optim4rl", "mlp_dims": [16, 16], "hidden_size": 8})))
    zf.writestr("__meta__.npy", meta.getvalue())
  return str(path)


@pytest.mark.parametrize("overrides,match", [
    ({
        "optimizer.grad_clip": float("nan")
    }, "optimizer.grad_clip must be a finite number"),
    ({
        "optimizer.grad_clip": float("inf")
    }, "optimizer.grad_clip must be a finite number"),
    ({
        "optimizer.learning_rate": float("nan")
    }, "learning_rate must be a positive finite number"),
    ({
        "seed": 3000000000
    }, r"seed must be an integer in \[0, 2,147,483,646\]"),
    ({
        "seed": -1
    }, r"seed must be an integer in \[0, "),
    ({
        "env.num_envs": 200000000,
        "train_steps": 1e12
    }, "needs at least .* TiB of memory, but this machine has"),
])
def test_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    a2c_train.validate_config(tiny_config(**overrides))


def test_seed_range_edges():
  assert a2c_train.validate_config(tiny_config(seed=2**31 - 2)) == 6  # labels 2**31-2, 2**31-1
  with pytest.raises(ValueError, match="int32"):
    a2c_train.validate_config(tiny_config(seed=2**31 - 1))


def test_huge_meta_params_refused_before_loading(tmp_path):
  path = _huge_meta_params(tmp_path / "huge.npz")
  with pytest.raises(ValueError, match=r"'rnn1/kernel' with shape \(1000000, 1000000\)"):
    a2c_train.validate_config(tiny_config(**{"optimizer.name": "optim4rl", "optimizer.meta_params": path}))


def test_launcher_flag_errors_are_one_line(tmp_path):
  wd = f"--workdir={tmp_path / 'w'}"
  proc = launch([CATCH, "--config.trian_steps=5", wd])
  assert_one_line(proc, 2, "--config.trian_steps", "no field 'trian_steps'",
                  'Did you mean "train_steps" instead of "trian_steps"?')
  proc = launch(["--config=" + os.path.join(ROOT, "configs", "missing.py") + ":catch", wd])
  assert_one_line(proc, 2, "missing.py", "No such file or directory")
  proc = launch([CATCH, "--config.agent=dqn", wd])
  assert_one_line(proc, 2, "unknown config.agent 'dqn'", "a2c, ppo, meta_ppo")
  assert not os.path.exists(tmp_path / "w")


def test_launcher_config_errors_are_one_line(tmp_path):
  wd = tmp_path / "w"  # (seed and grad_clip errors take the same path: test_config_errors)
  proc = train_here([CATCH, "--config.env.num_envs=200000000", "--config.train_steps=1e12", f"--workdir={wd}"])
  assert_one_line(proc, 2, "needs at least", "of memory", "lower env.num_envs")
  path = _huge_meta_params(tmp_path / "huge.npz")
  proc = train_here(
      [CATCH, "--config.optimizer.name=optim4rl", f"--config.optimizer.meta_params={path}", f"--workdir={wd}"])
  assert_one_line(proc, 2, "optimizer.meta_params", "huge.npz")
  assert not os.path.exists(wd)  # nothing written for a config error


# ---------------------------------------------------------------------------------------------------
# Workdirs: lock, refuse or --overwrite; SIGTERM keeps what was computed.


def test_workdir_rerun_policy(tmp_path):
  wd = tmp_path / "run"
  args = TINY + [f"--workdir={wd}"]
  first = train_here(args)
  assert first.returncode == 0, first.stderr[-3000:]
  before = {n: open(wd / n, "rb").read() for n in ("returns.csv", "summary.json", "params.npz")}
  assert json.load(open(wd / "summary.json"))["status"] == "finished"
  rerun = train_here(args)  # a finished run started again resumes nothing and changes nothing
  assert rerun.returncode == 0 and "nothing to do" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]
  assert_one_line(train_here(args + ["--config.optimizer.learning_rate=0.01"]), 2, "different config",
                  "optimizer.learning_rate 0.001 -> 0.01")
  with workdir_lib.lock(str(wd)):
    assert_one_line(train_here(args), 2, "in use by another process")
  assert {n: open(wd / n, "rb").read() for n in before} == before  # refusals touched nothing
  again = train_here(args + ["--overwrite"])
  assert again.returncode == 0, again.stderr[-3000:]
  names = sorted(os.listdir(wd / "tb"))  # old TensorBoard events cleared: one file in tb/ and in the seed's run
  assert len(names) == 2 and names[0].startswith("events") and names[1] == "seed_0", names
  assert len(os.listdir(wd / "tb" / "seed_0")) == 1


@pytest.mark.slow(10)
def test_sigterm_writes_partial_results(tmp_path):
  wd = tmp_path / "run"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen([
      sys.executable, TRAIN, CATCH, "--config.num_seeds=1", "--config.env.num_envs=4", "--config.train_steps=1e8",
      "--config.iterations_per_call=2", f"--workdir={wd}"
  ],
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True,
                          env=env,
                          cwd=ROOT)
  try:
    deadline = time.time() + 240
    rows = 0
    while rows < 4 and time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
      if os.path.exists(wd / "returns.csv"):
        rows = len(open(wd / "returns.csv").read().splitlines()) - 1
    assert rows >= 4, "no returns.csv rows before the deadline"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  lines = error_lines(stderr)
  assert proc.returncode == 143, stderr[-3000:]
  assert "Traceback" not in stderr and len(lines) == 1, lines
  assert lines[0].startswith("error: interrupted by SIGTERM at env step")
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "interrupted" and summary["env_steps"] > 0
  kept = list(csv.DictReader(open(wd / "returns.csv")))
  assert len(kept) >= rows and int(kept[-1]["step"]) < summary["env_steps"]
  assert os.path.exists(wd / "params.npz") and os.listdir(wd / "tb")
  # The interrupted run left its checkpoint: the same command resumes it (tests/test_a2c_resume.py checks
  # that the resumed run equals an unbroken one).
  assert os.path.exists(wd / "checkpoint.npz")


def test_cli_exit_codes_and_messages():
  assert cli.exit_code(cli.Interrupted(signal.SIGTERM)) == 143
  assert cli.exit_code(KeyboardInterrupt()) == 130
  err = AttributeError(KeyError("'trian_steps'\nDid you mean \"train_steps\" instead of \"trian_steps\"?"))
  msg = cli.flag_error_message(err, ["x", "--config.trian_steps=5"])
  assert msg == ("--config.trian_steps: the config has no field 'trian_steps'; "
                 "Did you mean \"train_steps\" instead of \"trian_steps\"?")


def test_a_signal_turned_into_another_error_by_the_code_it_interrupted_is_still_one_interrupted_line(tmp_path):
  """Seen in CI: SIGINT arrived while TensorFlow traced a tf.map_fn, whose clean-up turned the interrupt
  into an AssertionError; the launcher printed a traceback and exited 1 instead of 130."""
  script = tmp_path / "interrupted_main.py"
  script.write_text("""
import os, signal
from optim4rl_tf.utils import cli

def main(argv):
  try:
    os.kill(os.getpid(), signal.SIGINT)  # delivered here: cli's handler raises Interrupted
  except KeyboardInterrupt:
    assert False, "library clean-up that fails"
  return 0

cli.run(main)
""")
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 130, proc.stderr
  assert proc.stderr.strip().splitlines() == ["error: interrupted by SIGINT"], proc.stderr
  ok = tmp_path / "failing_main.py"  # without a signal, an error is the error it is
  ok.write_text("from optim4rl_tf.utils import cli\n\ndef main(argv):\n  assert False, 'plain'\n\ncli.run(main)\n")
  proc = subprocess.run([sys.executable, str(ok)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "AssertionError: plain" in proc.stderr


def test_a_signal_turned_into_a_bad_input_error_is_still_one_interrupted_line(tmp_path):
  """Seen in CI: SIGINT during reproduce.py's set-up came out of TensorFlow as a ValueError, which the command
  reports as bad input (cli.fail, exit 2); after a signal, fail reports the interruption (130)."""
  script = tmp_path / "interrupted_fail.py"
  script.write_text("""
import os, signal
from optim4rl_tf.utils import cli

def main(argv):
  try:
    try:
      os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
      raise ValueError("a list of tensors the interrupt left behind")
  except ValueError as e:
    cli.fail(e)
  return 0

cli.run(main)
""")
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 130, proc.stderr
  assert proc.stderr.strip().splitlines() == ["error: interrupted by SIGINT"], proc.stderr
  ok = tmp_path / "bad_input.py"  # without a signal, a bad input is one usage line, exit 2
  ok.write_text("from optim4rl_tf.utils import cli\n\ndef main(argv):\n  cli.fail('bad --x')\n\ncli.run(main)\n")
  proc = subprocess.run([sys.executable, str(ok)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ["error: bad --x"], proc.stderr
