"""Reduced end-to-end reproductions: the Figure 3 Catch panel (meta-train Optim4RL and L2LGD² for a few outer
iterations, test each and Adam, write the panel and its table), and the Brax path of Table 1 picking up a MetaPPO
run of launch/meta_train.py."""

import functools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def _reproduce_module():
  """optim4rl_tf.eval.reproduce (imported on first use: collecting this file loads no TensorFlow)."""
  from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
  return reproduce


@pytest.mark.slow(25)
def test_reduced_catch_reproduction_writes_the_figure3_panel(tmp_path, monkeypatch):
  """The wiring at the smallest size: one outer iteration of 2 units with M = 2 inner updates of 5-step
  rollouts (the meta-training graph is built once per optimizer, whatever its size), 2 test seeds."""
  from optim4rl_tf.configs import meta_a2c  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce_module()
  get_config = meta_a2c.get_config

  def small_meta_config(variant):
    config = get_config(variant)
    config.rollout_steps, config.inner_updates = 5, 2
    return config

  monkeypatch.setattr(meta_a2c, "get_config", small_meta_config)
  budget = reproduce.Budget(meta_iterations=1,
                            meta_units=2,
                            test_steps=1e4,
                            num_seeds=2,
                            only=("Optim4RL", "L2LGD²", "Adam"))
  path = reproduce.reproduce("figure3_catch", str(tmp_path), budget)
  text = open(path).read()
  for label in ("Optim4RL", "L2LGD²", "Adam"):
    assert label in text
  assert os.path.exists(os.path.join(str(tmp_path), "report", "figure3_catch.png"))
  for name in ("meta_optim4rl_catch", "meta_l2lgd2_catch"):
    assert os.path.exists(os.path.join(str(tmp_path), name, "phi.npz"))
  # Re-running skips every finished run and rewrites the same report.
  assert reproduce.reproduce("figure3_catch", str(tmp_path), budget) == path


TINY_META_PPO = {  # MetaPPO on a tiny graph (the wiring is under test, not the numbers)
    "env.num_envs": 4,
    "env.episode_length": 5,
    "batch_size": 2,
    "num_minibatches": 2,
    "unroll_length": 3,
    "network.policy_hidden": (8,),
    "network.value_hidden": (8, 8),
    "optimizer.hidden_size": 3
}


@pytest.mark.slow(125)
def test_meta_ppo_from_the_launcher_resumes_and_the_brax_reproduction_tests_its_phi_and_writes_table1(
    tmp_path, monkeypatch):
  """A real MetaPPO run from launch/meta_train.py (1 outer iteration), resumed to 2 iterations by the same
  launcher, every iteration applied with a finite meta-loss and phi moving; launch/train.py refuses the config
  in one line pointing to launch/meta_train.py. Then the Brax experiments' code path (MetaPPO -> PPO test ->
  Table 1) on the cheap inverted pendulum finds that run finished (the same config in its workdir), trains a
  fresh PPO agent with its phi, fixed (the §10 test flow), and writes the table and its panel."""
  import csv  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  import math  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.configs import ppo as ppo_configs  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import train_command  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.meta import meta_train_command  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.optimizers import meta_params  # pylint: disable=import-outside-toplevel
  from conftest import run_command  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce_module()
  workdir = str(tmp_path / "meta_optim4rl_meta_inverted_pendulum")  # where the reproduction looks for it
  config = [f"--config={ROOT}/configs/ppo.py:meta_inverted_pendulum", f"--workdir={workdir}"]
  tiny = [f"--config.{k}={v}" for k, v in TINY_META_PPO.items()] + ["--config.nonfinite=stop"]  # as reproduce
  proc = run_command(meta_train_command, *config, "--config.num_iterations=1", *tiny)
  assert proc.returncode == 0, proc.stderr
  assert json.load(open(os.path.join(workdir, "summary.json")))["iterations"] == 1
  _, phi1 = meta_params.load(os.path.join(workdir, "phi.npz"))
  proc = run_command(train_command, *config, "--config.num_iterations=2")
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2 and errors == [
      "error: config.agent 'meta_ppo' is a meta-training config: run it with launch/meta_train.py"
  ], proc.stderr
  proc = run_command(meta_train_command, *config, "--config.num_iterations=2", *tiny)
  assert proc.returncode == 0, proc.stderr
  assert "resuming" in proc.stdout and "at outer iteration 1/2" in proc.stdout
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["iterations"] == 2 and summary["skipped"] == 0
  with open(os.path.join(workdir, "meta_metrics.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 and all(
      float(r["meta/applied"]) == 1.0 and math.isfinite(float(r["inverted_pendulum/meta_loss"])) and
      float(r["meta/grad_norm"]) > 0 for r in rows), rows
  _, phi2 = meta_params.load(os.path.join(workdir, "phi.npz"))
  assert any(not np.allclose(phi2[k], phi1[k]) for k in phi1)  # the second iteration moved phi
  finished_at = os.path.getmtime(os.path.join(workdir, "summary.json"))

  get_config = ppo_configs.get_config

  def small_meta_config(variant):
    config = get_config(variant)
    if variant.startswith("meta_"):
      for key, value in TINY_META_PPO.items():
        node, leaf = (config.env, key[4:]) if key.startswith("env.") else (
            config.network,
            key[8:]) if key.startswith("network.") else (config.optimizer,
                                                         key[10:]) if key.startswith("optimizer.") else (config, key)
        setattr(node, leaf, value)
    return config

  monkeypatch.setattr(ppo_configs, "get_config", small_meta_config)
  monkeypatch.setitem(
      reproduce.PPO_EXPERIMENTS, "table1_tiny",
      ("inverted_pendulum", [("with", "optim4rl", "meta_inverted_pendulum", True),
                             ("without", "optim4rl", "meta_inverted_pendulum", False)], False, "table1"))
  budget = reproduce.Budget(meta_iterations=2, test_steps=5 * 640, num_seeds=2, only=("with",))
  path = reproduce.reproduce("table1_tiny", str(tmp_path), budget)
  assert os.path.getmtime(os.path.join(workdir, "summary.json")) == finished_at  # found finished, not rerun
  test_summary = json.load(open(os.path.join(str(tmp_path), "test_optim4rl_meta_inverted_pendulum", "summary.json")))
  assert test_summary["status"] == "finished", test_summary
  assert not os.path.exists(os.path.join(str(tmp_path), "meta_optim4rl_meta_inverted_pendulum_nopipe"))
  assert "With pipeline training" in open(path).read()
  assert "![Table 1 — " in open(path).read()  # the rows' learning curves, as a panel
  assert os.path.exists(os.path.join(str(tmp_path), "report", "table1_inverted_pendulum.png"))
  with pytest.raises(KeyError):
    reproduce.reproduce("no_such_experiment", str(tmp_path), budget)
