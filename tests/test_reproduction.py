"""A reduced end-to-end reproduction of the Figure 3 Catch panel: meta-train Optim4RL and L2LGD² for a few
outer iterations, test each (and Adam) with 3 seeds, and write the panel and its table."""

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


@pytest.mark.slow(95)
def test_brax_reproduction_path_meta_trains_with_metappo_and_writes_table1(tmp_path, monkeypatch):
  """The Brax experiments' code path (MetaPPO -> PPO test -> Table 1), on the cheap inverted pendulum."""
  from optim4rl_tf.configs import ppo as ppo_configs  # pylint: disable=import-outside-toplevel
  reproduce = _reproduce_module()
  get_config = ppo_configs.get_config

  def small_meta_config(variant):  # MetaPPO on a tiny graph (the wiring is under test, not the numbers)
    config = get_config(variant)
    if variant.startswith("meta_"):
      config.env.num_envs, config.env.episode_length, config.batch_size, config.num_minibatches = 4, 5, 2, 2
      config.unroll_length, config.network.policy_hidden, config.network.value_hidden = 3, (8,), (8, 8)
      config.optimizer.hidden_size = 3
    return config

  monkeypatch.setattr(ppo_configs, "get_config", small_meta_config)
  monkeypatch.setitem(
      reproduce.PPO_EXPERIMENTS, "table1_tiny",
      ("inverted_pendulum", [("with", "optim4rl", "meta_inverted_pendulum", True),
                             ("without", "optim4rl", "meta_inverted_pendulum", False)], False, "table1"))
  budget = reproduce.Budget(meta_iterations=2, test_steps=5 * 640, num_seeds=2, only=("with",))
  path = reproduce.reproduce("table1_tiny", str(tmp_path), budget)
  assert os.path.exists(os.path.join(str(tmp_path), "meta_optim4rl_meta_inverted_pendulum", "phi.npz"))
  assert os.path.exists(os.path.join(str(tmp_path), "test_optim4rl_meta_inverted_pendulum", "summary.json"))
  assert not os.path.exists(os.path.join(str(tmp_path), "meta_optim4rl_meta_inverted_pendulum_nopipe"))
  assert "With pipeline training" in open(path).read()
  assert "![Table 1 — " in open(path).read()  # the rows' learning curves, as a panel
  assert os.path.exists(os.path.join(str(tmp_path), "report", "table1_inverted_pendulum.png"))
  with pytest.raises(KeyError):
    reproduce.reproduce("no_such_experiment", str(tmp_path), budget)
