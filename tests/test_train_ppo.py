"""The PPO run (library + launcher): §7.2 configs, bad-input errors, files written, both bridges train
identically, learned optimizers plug in, and learning on a cheap Brax task.

Compiled runs use inverted_pendulum with 2 seeds x 16 envs (and 2 x 16 eval envs) and episode_length 200:
a Brax batch of 32 envs, the shapes of test_brax_bridge.py, so one pytest process compiles the Brax step
once.
"""

import csv
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.agents import ppo_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from optim4rl_tf.configs import ppo as ppo_configs  # noqa: E402
from conftest import set_fields  # noqa: E402

STEP = 16 * 4 * 10  # env steps per training step and seed (batch 16 x 4 minibatches x unroll 10)


def tiny_config(**overrides):
  """inverted_pendulum, 2 seeds x 16 envs, episode_length 200; 1 epoch of 1 training step."""
  c = ppo_configs.get_config("inverted_pendulum")
  assert (c.env.num_envs, c.batch_size, c.num_minibatches, c.unroll_length, c.num_eval_envs) == \
      (16, 16, 4, 10, 16)
  set_fields(
      c, **{
          "env.episode_length": 200,
          "train_steps": STEP,
          "num_evals": 1,
          "num_seeds": 2,
          "console_every_secs": 0.0
      })
  return set_fields(c, **overrides)


# ------------------------------------------------------------------------------------------------
# Configs (no Brax needed)

TABLE = {  # docs/fidelity.md §7.2: train_steps, reward_scaling, num_envs, batch, unroll, epochs, entropy, discount, lr,
           # num_evals; env steps per training step, training steps per epoch, total env steps
    "ant": (1e8, 10, 4096, 2048, 5, 4, 1e-2, 0.97, 3e-4, 10, 327_680, 30, 98_304_000),
    "humanoid": (1e8, 0.1, 2048, 1024, 10, 8, 1e-3, 0.97, 3e-4, 10, 327_680, 30, 98_304_000),
    "inverted_double_pendulum": (2e7, 10, 2048, 1024, 5, 4, 1e-2, 0.97, 3e-4, 20, 163_840, 6, 19_660_800),
    "walker2d": (5e7, 5, 2048, 512, 20, 8, 1e-3, 0.997, 3e-5, 20, 327_680, 7, 45_875_200),
}


@pytest.mark.parametrize("variant", ppo_configs.FULL)
def test_full_variants_have_every_number_of_the_notes(variant):
  c = ppo_configs.get_config(variant)
  (steps, scale, envs, batch, unroll, epochs, ent, disc, lr, evals, per_step, per_epoch, total) = TABLE[variant]
  assert (c.agent, c.env.name, c.env.backend, c.env.episode_length, c.env.action_repeat) == \
      ("ppo", variant, "spring", 1000, 1)
  assert (c.train_steps, c.reward_scaling, c.env.num_envs, c.batch_size, c.num_minibatches) == \
      (steps, scale, envs, batch, 32)
  assert (c.unroll_length, c.update_epochs, c.clipping_epsilon, c.entropy_cost, c.discount, c.gae_lambda) \
      == (unroll, epochs, 0.3, ent, disc, 0.95)
  assert (c.normalize_observations, c.normalize_advantage, c.num_evals, c.num_eval_envs) == \
      (True, True, evals, 128)
  assert (c.optimizer.learning_rate, c.optimizer.grad_clip) == (lr, 1.0)
  assert tuple(c.network.policy_hidden) == (32,) * 4 and tuple(c.network.value_hidden) == (256,) * 5
  s = ppo_train.validate_config(c)
  assert (s.env_steps_per_train_step, s.train_steps_per_epoch, s.total_env_steps) == (per_step, per_epoch, total)
  assert s.unrolls == batch * 32 // envs


@pytest.mark.parametrize("variant", ppo_configs.CPU + ("inverted_pendulum",))
def test_small_variants_validate(variant):
  c = ppo_configs.get_config(variant)
  s = ppo_train.validate_config(c)
  assert s.total_env_steps <= 3e6 and c.env.num_envs <= 256
  if variant != "inverted_pendulum":
    full = ppo_configs.get_config(variant[:-4])
    for k in ("reward_scaling", "unroll_length", "update_epochs", "entropy_cost", "discount"):
      assert c[k] == full[k], k


BAD = [
    ({
        "env.name": "cartpole"
    }, "Unknown task \\(env.name\\) 'cartpole'"),
    ({
        "env.bridge": "torch"
    }, "Unknown env.bridge 'torch'"),
    ({
        "env.backend": "mjx2"
    }, "Unknown env.backend"),
    ({
        "optimizer.name": "sgd"
    }, "Unknown optimizer.name 'sgd'"),
    ({
        "env.num_envs": 0
    }, "env.num_envs must be a positive integer"),
    ({
        "batch_size": 15
    }, "must be a multiple of env.num_envs"),
    ({
        "train_steps": 600
    }, "less than num_evals=1 training steps"),
    ({
        "optimizer.learning_rate": -1e-3
    }, "optimizer.learning_rate must be a positive"),
    ({
        "discount": 1.5
    }, "discount must be in \\[0, 1\\]"),
    ({
        "update_epochs": 0
    }, "update_epochs must be a positive integer"),
    ({
        "network.value_hidden": (64, 0)
    }, "network.value_hidden must be a sequence of positive integers"),
    ({
        "optimizer.meta_params": "x.npz"
    }, "not a learned optimizer"),
    ({
        "optimizer.name": "optim4rl",
        "optimizer.meta_params": "/nonexistent/phi.npz"
    }, "file not found"),
]


@pytest.mark.parametrize("overrides,match", BAD)
def test_bad_config_errors(overrides, match, tmp_path):
  c = tiny_config(**overrides)
  with pytest.raises(ValueError, match=match):
    ppo_train.train(c, str(tmp_path), console=False)
  assert not os.path.exists(tmp_path / "returns.csv")  # fails before doing anything


def test_launcher_errors_and_dispatch(tmp_path):
  """The train command in this process (conftest.run_command; its process: tests/test_launch_errors.py)."""
  from conftest import run_command  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import train_command  # pylint: disable=import-outside-toplevel
  config = f"--config={ROOT}/configs/ppo.py"
  out = run_command(train_command, f"--workdir={tmp_path}", f"{config}:inverted_pendulum", "--config.env.name=antt")
  assert out.returncode == 2 and "error: Unknown task (env.name) 'antt'" in out.stderr, out.stderr[-2000:]
  out = run_command(train_command, f"--workdir={tmp_path}", f"{config}:inverted_pendulum", "--config.agent=dqn")
  assert out.returncode == 2 and "unknown config.agent 'dqn'" in out.stderr, out.stderr[-2000:]
  out = run_command(train_command, f"--workdir={tmp_path}", f"{config}:ant_gpu")
  assert out.returncode == 2 and "Unknown ppo variant 'ant_gpu'" in out.stderr, out.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# Runs (compile Brax's inverted_pendulum: 32 envs, episode_length 200)


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.mark.slow(20)
def test_train_writes_all_files(tmp_path, capsys):
  calls = []
  c = tiny_config(num_evals=2, train_steps=2 * STEP)
  res = ppo_train.train(c, str(tmp_path), progress_fn=lambda step, info: calls.append((step, info)))
  for name in ("config.json", "returns.csv", "returns.png", "summary.json", "params.npz"):
    assert os.path.exists(tmp_path / name), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
  rows = _read_csv(tmp_path / "returns.csv")
  assert [(int(r["step"]), int(r["seed"])) for r in rows] == [(0, 0), (0, 1), (STEP, 0), (STEP, 1), (2 * STEP, 0),
                                                              (2 * STEP, 1)]
  assert all(1.0 <= float(r["return"]) <= 200.0 for r in rows)  # reward 1 per step, at most 200 steps
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["env_steps"] == 2 * STEP and len(summary["final"]) == 2 and not summary["aborted"]
  # final = mean of the last 2 evaluation returns per seed
  for s in (0, 1):
    want = np.mean([float(r["return"]) for r in rows if int(r["seed"]) == s][-2:])
    assert abs(summary["final"][s] - want) < 1e-9
  assert res["ci"].low <= res["ci"].mean <= res["ci"].high
  assert json.load(open(tmp_path / "config.json"))["agent"] == "ppo"
  params = np.load(tmp_path / "params.npz")
  assert params["policy/hidden_0/kernel"].shape == (2, 4, 32)
  assert params["value/hidden_2/kernel"].shape == (2, 64, 1)
  assert params["normalizer/count"].tolist() == [2 * STEP, 2 * STEP]
  assert [step for step, _ in calls] == [STEP, 2 * STEP]
  out = capsys.readouterr().out
  assert "final return of inverted_pendulum with PPO + adam" in out and "env steps/s" in out


@pytest.mark.slow(10)
def test_numpy_and_graph_bridges_train_identically():
  out = {}
  for bridge in ("numpy", "graph"):
    c = tiny_config(**{"env.bridge": bridge})
    trainer = ppo_train.build(c)
    state = trainer.init()
    state, m = trainer.run(state, 2)
    ret, length = trainer.evaluate(state, 1)
    out[bridge] = ([p.numpy() for p in state.params], m, ret, state.norm.mean.numpy())
  (p1, m1, r1, n1), (p2, m2, r2, n2) = out["numpy"], out["graph"]
  for a, b in zip(p1, p2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-4)
  np.testing.assert_allclose(n1, n2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r1, r2)
  assert m1["loss"].shape == (2, 2)  # [training steps, seeds]
  assert not np.allclose(p1[0][0], p1[0][1])  # two independent seeds


@pytest.mark.parametrize("name", ["optim4rl", "rmsprop"])
@pytest.mark.slow(12)
def test_learned_and_classical_optimizers_from_config(name, tmp_path):
  from optim4rl_tf.optimizers import meta_params
  meta = ""
  if name == "optim4rl":
    core, phi = meta_params.resolve("optim4rl", None, seed=3)
    meta = meta_params.save(str(tmp_path / "phi.npz"), core, phi)
  c = tiny_config(**{"optimizer.name": name, "optimizer.meta_params": meta, "plot": False})
  res = ppo_train.train(c, str(tmp_path / "run"), console=False)
  assert res["env_steps"] == STEP and np.all(np.isfinite(res["final"]))
  assert all(np.all(np.isfinite(p)) for p in res["params"])


@pytest.mark.slow(34)
def test_ppo_adam_learns_inverted_pendulum(tmp_path):
  """PPO + Adam on Brax inverted_pendulum (the config's variant with episode_length 200; 2 seeds in one
  graph, 16 envs each, 99,200 env steps per seed): the mean final return (mean of the last 2 evaluations)
  must be at least twice the return at step 0 (random policy: about 25; the maximum is 200)."""
  c = ppo_configs.get_config("inverted_pendulum")
  set_fields(c, **{"env.episode_length": 200, "num_seeds": 2, "console_every_secs": 30.0, "plot": False})
  t0 = time.time()
  res = ppo_train.train(c, str(tmp_path))
  secs = time.time() - t0
  first = np.mean([res["returns"][lab][1][0] for lab in res["labels"]])
  final = float(np.mean(res["final"]))
  print(f"inverted_pendulum PPO+Adam: eval return {first:.1f} -> {final:.1f} in {res['env_steps']:,} "
        f"env steps per seed, {secs:.0f} s")
  assert res["env_steps"] == 99_200
  assert final >= 2.0 * first, (first, final, res["returns"])


# ------------------------------------------------------------------------------------------------
# MetaPPO (docs/fidelity.md §7.5); a launcher run whose phi then trains a PPO agent (§10 flow) is in
# tests/test_reproduction.py


@pytest.mark.slow(20)
def test_meta_ppo_star_config_builds_a_full_unroll_and_its_phi_drives_ppo_star(tmp_path):
  """MetaPPOstar (docs/fidelity.md §6.5, §7.6): the config builds a MetaTrainer whose estimator is the full
  unroll over MetaPPO (nested tapes, so the meta-gradient includes the path through the agent gradients); a
  STAR phi saved by meta_params then drives a PPO agent (PPOstar). The second-order meta-gradient itself is
  checked against finite differences in test_meta_ppo_gradient.py, and three meta-training iterations of this
  config bitwise in test_meta_redesign_golden.py (one compilation of that graph each, not a third here)."""
  from optim4rl_tf.meta import estimators
  from optim4rl_tf.meta import meta_ppo
  from optim4rl_tf.meta import trainer as trainer_lib
  from optim4rl_tf.optimizers import meta_params
  c = set_fields(ppo_configs.get_config("meta_inverted_pendulum"), **{"optimizer.name": "star", "num_iterations": 2})
  trainer = trainer_lib.MetaTrainer(c)
  est = trainer.estimators[0]
  assert isinstance(est, estimators.FullUnroll) and isinstance(est.problem, meta_ppo.MetaPPO) and est.second_order
  rng = np.random.default_rng(0)  # a phi away from the initial one, as meta-training would leave it
  phi = {
      k: v.numpy() + 1e-2 * rng.standard_normal(v.shape).astype(np.float32) for k, v in zip(trainer.keys, trainer.phi)
  }
  path = meta_params.save(str(tmp_path / "star.npz"), trainer.core, phi)
  cfg = tiny_config(**{"optimizer.name": "star", "optimizer.meta_params": path, "plot": False})
  out = ppo_train.train(cfg, str(tmp_path / "lopt"), console=False)
  assert out["env_steps"] == STEP and all(np.all(np.isfinite(p)) for p in out["params"])
  _, loaded = meta_params.load(path)
  assert all(np.array_equal(loaded[k], phi[k]) for k in phi)


def test_meta_ppo_config_errors():
  from optim4rl_tf.meta import run
  c = ppo_configs.get_config("meta_inverted_pendulum")
  assert (c.agent, c.env.num_envs, c.env.episode_length, c.num_units) == ("meta_ppo", 32, 200, 2)
  c = ppo_configs.get_config("meta_ant")
  assert run.validate_config(c) == 610  # docs/fidelity.md §7.5
  assert (c.batch_size, c.num_minibatches, c.unroll_length, c.update_epochs, c.inner_updates) == \
      (1024, 8, 5, 4, 4)
  assert tuple(c.network.value_hidden) == (64,) * 5 and c.env.num_envs == 2048
  nopipe = ppo_configs.get_config("meta_humanoid_nopipe")
  assert (nopipe.pipeline, nopipe.env.name, nopipe.reward_scaling, list(nopipe.sweep.reset_interval)) == \
      (False, "humanoid", 0.1, [])
  assert c.pipeline and list(c.sweep.reset_interval) == [32, 64, 128, 256, 512]
  assert c.meta_grad_through_env is True  # the official estimator by default (docs/fidelity.md §7.5)
  for overrides, match in [({
      "env.bridge": "numpy"
  }, "Unknown env.bridge 'numpy'"), ({
      "optimizer.name": "adam"
  }, "Unknown optimizer.name 'adam'"), ({
      "optimizer.name": "velo"
  }, "Unknown optimizer.name 'velo'"), ({
      "num_units": 3
  }, "must be a multiple of num_units=3"), ({
      "train_steps": 1000
  }, "less than one outer iteration")]:
    with pytest.raises(ValueError, match=match):
      run.validate_config(set_fields(ppo_configs.get_config("meta_ant"), **overrides))
