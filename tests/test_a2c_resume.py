"""A2C runs resume from their workdir's checkpoint bit-identically to an unbroken run (a2c_train, checkpoint.npz):
a stop part way (a KeyboardInterrupt from ``progress_fn``, or SIGTERM) then a second call finishes with the same
parameters and the same returns.csv bytes; a finished run started again does nothing; a damaged checkpoint and a
different config are one clear error each, and nothing is deleted."""

import json
import os
import signal

import numpy as np
import pytest

from optim4rl_tf.agents import a2c_train
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import workdir as workdir_lib

from optim4rl_tf.configs import a2c as a2c_configs  # noqa: E402
from conftest import set_fields  # noqa: E402

PER_ITER = 4 * 20  # env steps per iteration and seed


def tiny_config(**overrides):
  c = a2c_configs.get_config("catch")
  c.env.num_envs = 4
  c.num_seeds = 2
  c.train_steps = PER_ITER * 8  # 8 iterations
  c.console_every_secs = 0.0
  c.iterations_per_call = 1
  c.plot = False
  return set_fields(c, **overrides)


def stop_after(iterations, how="raise"):
  """A progress_fn that interrupts the run once it has done ``iterations`` iterations."""

  def fn(step, info):
    del step
    if info["iteration"] == iterations:
      if how == "raise":
        raise KeyboardInterrupt()
      os.kill(os.getpid(), signal.SIGTERM)  # recorded by the run's handler; it stops after this call

  return fn


def read(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
  wd = tmp_path_factory.mktemp("unbroken")
  res = a2c_train.train(tiny_config(), str(wd), console=False)
  return wd, res


def assert_same_run(wd, res, ref_wd, ref_res):
  for a, b in zip(res["params"], ref_res["params"]):
    np.testing.assert_array_equal(a, b)
  assert read(wd / "returns.csv") == read(ref_wd / "returns.csv")
  assert read(wd / "params.npz") == read(ref_wd / "params.npz")
  summary, ref = json.load(open(wd / "summary.json")), json.load(open(ref_wd / "summary.json"))
  for key in ("status", "env_steps", "iterations", "final", "mean", "ci_low", "ci_high", "diverged"):
    assert summary[key] == ref[key], key


@pytest.mark.parametrize("how", ["raise", "sigterm"])
def test_stop_and_resume_is_bit_identical(tmp_path, unbroken, how, capsys):
  ref_wd, ref_res = unbroken
  wd = tmp_path / "run"
  expected = KeyboardInterrupt if how == "raise" else cli.Interrupted
  with pytest.raises(expected):
    a2c_train.train(tiny_config(), str(wd), progress_fn=stop_after(3, how))
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "interrupted" and summary["iterations"] == 3
  assert os.path.exists(wd / run_lifecycle.CHECKPOINT_NAME)
  # A kill after the checkpoint leaves rows and TensorBoard steps of later iterations: the resume drops them.
  with open(wd / "returns.csv", "a") as f:
    f.write(f"{5 * PER_ITER},0,0.5\r\n{5 * PER_ITER},1,-0.")  # and a row cut short
  capsys.readouterr()
  res = a2c_train.train(tiny_config(iterations_per_call=0), str(wd))  # other chunking: same numbers
  assert "resuming" in capsys.readouterr().out and res["resumed_from"] == 3
  assert_same_run(wd, res, ref_wd, ref_res)
  for run in ("tb", "tb/seed_0", "tb/seed_1"):  # the seed mean and every seed's run
    steps = _tensorboard_steps(wd / run, "episode/return")
    assert steps == sorted(set(steps)) == [i * PER_ITER for i in range(8)], run  # each once


def _tensorboard_steps(tb_dir, tag):
  from tensorboard.backend.event_processing import event_multiplexer
  mux = event_multiplexer.EventMultiplexer({"run": str(tb_dir)}, size_guidance={"tensors": 0})
  mux.Reload()
  return sorted(e.step for e in mux.Tensors("run", tag))


def test_periodic_checkpoint_then_kill(tmp_path, unbroken):
  """A process killed at once (no save on the way out) resumes from the last periodic checkpoint."""
  ref_wd, ref_res = unbroken
  wd = tmp_path / "run"
  saved = {}

  def fn(step, info):
    del step
    if info["iteration"] == 5:  # the checkpoint of iteration 4 is on disk: a SIGKILL now loses iteration 5
      saved["ckpt"] = read(wd / run_lifecycle.CHECKPOINT_NAME)
      saved["csv"] = read(wd / "returns.csv")

  a2c_train.train(tiny_config(checkpoint_every=2, checkpoint_every_secs=0.0), str(wd), console=False, progress_fn=fn)
  # Simulate the SIGKILL: the workdir as it was at iteration 5 (checkpoint of 4), no summary.json yet.
  (wd / run_lifecycle.CHECKPOINT_NAME).write_bytes(saved["ckpt"])
  (wd / "returns.csv").write_bytes(saved["csv"])
  os.remove(wd / "summary.json")
  res = a2c_train.train(tiny_config(checkpoint_every=2, checkpoint_every_secs=0.0), str(wd), console=False)
  assert res["resumed_from"] == 4
  assert_same_run(wd, res, ref_wd, ref_res)


def test_finished_run_does_nothing_and_budget_may_grow(tmp_path, capsys):
  wd = tmp_path / "run"
  a2c_train.train(tiny_config(train_steps=PER_ITER * 4), str(wd), console=False)
  before = {n: read(wd / n) for n in ("returns.csv", "summary.json", "params.npz", run_lifecycle.CHECKPOINT_NAME)}
  res = a2c_train.train(tiny_config(train_steps=PER_ITER * 4), str(wd))
  assert "already holds a finished run of this config" in capsys.readouterr().out
  assert res["status"] == "finished" and res["env_steps"] == 4 * PER_ITER
  assert {n: read(wd / n) for n in before} == before  # nothing written
  # A larger train_steps continues the run: the same as an unbroken run of the larger budget.
  grown = a2c_train.train(tiny_config(train_steps=PER_ITER * 6), str(wd), console=False)
  ref = a2c_train.train(tiny_config(train_steps=PER_ITER * 6), str(tmp_path / "ref"), console=False)
  assert grown["resumed_from"] == 4
  assert_same_run(wd, grown, tmp_path / "ref", ref)
  with pytest.raises(workdir_lib.WorkdirError, match="beyond train_steps"):
    a2c_train.train(tiny_config(train_steps=PER_ITER * 2), str(wd), console=False)


def test_config_mismatch_and_damaged_checkpoint_are_clear_errors(tmp_path):
  wd = tmp_path / "run"
  with pytest.raises(KeyboardInterrupt):
    a2c_train.train(tiny_config(), str(wd), console=False, progress_fn=stop_after(2))
  names = sorted(os.listdir(wd))
  ckpt = wd / run_lifecycle.CHECKPOINT_NAME
  good = read(ckpt)
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"different config: optimizer.learning_rate 0.001 -> 0.01; use a new --workdir"):
    a2c_train.train(tiny_config(**{"optimizer.learning_rate": 0.01}), str(wd), console=False)
  for damaged in (good[:len(good) // 2], b"", good[:-40] + bytes(40)):
    ckpt.write_bytes(damaged)
    with pytest.raises(workdir_lib.WorkdirError, match=f"checkpoint {ckpt} is damaged or truncated") as e:
      a2c_train.train(tiny_config(), str(wd), console=False)
    assert "\n" not in str(e.value)
    assert read(ckpt) == damaged and sorted(os.listdir(wd)) == names  # nothing deleted or changed
  ckpt.write_bytes(good)
  res = a2c_train.train(tiny_config(), str(wd), console=False)  # the intact one resumes
  assert res["resumed_from"] == 2 and res["status"] == "finished"
