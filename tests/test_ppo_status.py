"""PPO's summary.json has a ``status`` ("finished" | "interrupted" | "failed" | "diverged") like A2C's, and an
interrupted PPO run still writes it (with returns.csv, tb/ and params.npz of what was computed).

One compiled run (inverted_pendulum, the shapes of tests/test_train_ppo.py, so the Brax step compiles once per
process): 2 epochs, interrupted after the first; then a finished 1-epoch run."""

import json
import os

import pytest

from optim4rl_tf.agents import ppo_train

from optim4rl_tf.configs import ppo as ppo_configs  # noqa: E402
from conftest import set_fields  # noqa: E402

STEP = 16 * 4 * 10  # env steps per training step and seed (batch 16 x 4 minibatches x unroll 10)


def tiny_config(**overrides):
  c = ppo_configs.get_config("inverted_pendulum")
  set_fields(
      c, **{
          "env.episode_length": 200,
          "train_steps": STEP,
          "num_evals": 1,
          "num_seeds": 2,
          "console_every_secs": 0.0,
          "plot": False
      })
  return set_fields(c, **overrides)


@pytest.mark.slow
def test_interrupted_and_finished_runs_write_summary_status(tmp_path):

  def stop(step, info):
    del step
    if info["epoch"] == 1:
      raise KeyboardInterrupt()

  wd = tmp_path / "interrupted"
  with pytest.raises(KeyboardInterrupt):
    ppo_train.train(tiny_config(num_evals=2, train_steps=2 * STEP), str(wd), progress_fn=stop, console=False)
  summary = json.load(open(wd / "summary.json"))
  assert summary["status"] == "interrupted" and summary["error"] == "interrupted (SIGINT)"
  assert summary["env_steps"] == STEP and summary["planned_env_steps"] == 2 * STEP
  assert summary["summary"].startswith(f"INTERRUPTED at step {STEP:,} of {2 * STEP:,}")
  for name in ("returns.csv", "params.npz", "config.json"):
    assert os.path.exists(wd / name), name
  res = ppo_train.train(tiny_config(), str(tmp_path / "finished"), console=False)
  assert res["status"] == "finished"
  summary = json.load(open(tmp_path / "finished" / "summary.json"))
  assert summary["status"] == "finished" and summary["error"] is None
