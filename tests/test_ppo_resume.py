"""PPO runs resume from their workdir's checkpoint bit-identically to an unbroken run (ppo_train,
checkpoint.npz, :class:`optim4rl_tf.utils.run_lifecycle.StateCheckpoint`): a SIGTERM after the first epoch, then a
second call on the same workdir finishes with the same parameters, returns.csv and params.npz bytes; a finished run
started again does nothing; another config is one clear error.

Compiled runs use the shapes of tests/test_train_ppo.py (inverted_pendulum, 2 seeds x 16 envs), so the Brax step
compiles once per process: 3 epochs of 1 training step."""

import json
import os
import signal

import numpy as np
import pytest

from optim4rl_tf.agents import ppo_train
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import run_lifecycle
from optim4rl_tf.utils import workdir as workdir_lib

from optim4rl_tf.configs import ppo as ppo_configs  # noqa: E402
from conftest import set_fields  # noqa: E402

STEP = 16 * 4 * 10  # env steps per training step and seed (batch 16 x 4 minibatches x unroll 10)


def tiny_config(**overrides):
  c = ppo_configs.get_config("inverted_pendulum")
  set_fields(
      c, **{
          "env.episode_length": 200,
          "train_steps": 3 * STEP,
          "num_evals": 3,
          "num_seeds": 2,
          "console_every_secs": 0.0,
          "plot": False
      })
  return set_fields(c, **overrides)


def read(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.slow(40)
def test_sigterm_then_resume_is_bit_identical(tmp_path, capsys):
  ref_wd = tmp_path / "unbroken"
  ref = ppo_train.train(tiny_config(), str(ref_wd), console=False)
  assert ref["status"] == "finished" and ref["resumed_from"] == 0

  def sigterm_after_first_epoch(step, info):
    del step
    if info["epoch"] == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # recorded by the run's handler: it stops after this call

  wd = tmp_path / "run"
  with pytest.raises(cli.Interrupted):
    ppo_train.train(tiny_config(), str(wd), progress_fn=sigterm_after_first_epoch, console=False)
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"
  assert summary["env_steps"] == STEP and summary["planned_env_steps"] == 3 * STEP
  assert os.path.exists(wd / run_lifecycle.CHECKPOINT_NAME)

  # Bookkeeping fields may change on resume; the result does not.
  res = ppo_train.train(tiny_config(chunk_secs=1.0), str(wd), console=True)
  assert "resuming" in capsys.readouterr().out
  assert res["status"] == "finished" and res["resumed_from"] == 1
  for a, b in zip(res["params"], ref["params"]):
    np.testing.assert_array_equal(a, b)
  assert read(wd / "returns.csv") == read(ref_wd / "returns.csv")
  assert read(wd / "params.npz") == read(ref_wd / "params.npz")
  summary, ref_summary = json.load(open(wd / "summary.json")), json.load(open(ref_wd / "summary.json"))
  for key in ("status", "env_steps", "final", "mean", "eval_returns", "eval_steps", "aborted"):
    assert summary[key] == ref_summary[key], key

  # Finished: started again it does nothing (nothing rewritten).
  before = {n: read(wd / n) for n in ("returns.csv", "summary.json", "params.npz", run_lifecycle.CHECKPOINT_NAME)}
  again = ppo_train.train(tiny_config(), str(wd), console=True)
  assert "nothing to do" in capsys.readouterr().out and again["status"] == "finished"
  for a, b in zip(again["params"], ref["params"]):
    np.testing.assert_array_equal(a, b)
  assert {n: read(wd / n) for n in before} == before

  # Another config (a result-changing field) is one clear error; nothing is changed.
  with pytest.raises(workdir_lib.WorkdirError, match="different config.*entropy_cost"):
    ppo_train.train(tiny_config(entropy_cost=0.5), str(wd), console=False)
  assert {n: read(wd / n) for n in before} == before
