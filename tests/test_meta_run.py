"""One entry for every meta-training config (optim4rl_tf/meta/run.py, launch/meta_train.py): MetaA2C
(configs/meta_a2c.py) and MetaPPO (configs/ppo.py:meta_*) configs are validated in one place, bad ones are
refused in one line before anything is built (a real MetaPPO run from the launcher, resumed, and launch/train.py
refusing it: tests/test_reproduction.py)."""

import json
import os

import pytest

from optim4rl_tf.configs import a2c as a2c_configs
from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
from optim4rl_tf.configs import ppo as ppo_configs
from optim4rl_tf.meta import run
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.meta import meta_train_command  # noqa: E402
from conftest import run_command  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META_A2C_VARIANTS = ("catch", "small_dense_long", "big_dense_long", "grid6", "catch_nopipe")


def test_every_meta_training_config_validates(monkeypatch):
  from optim4rl_tf.utils import config_checks
  # (on a machine large enough: grid6's 512 units per task are estimated at 19 GB, more than a small machine
  # has; tests/test_reliability_faults.py checks the refusal)
  monkeypatch.setattr(config_checks, "memory_limit_bytes", lambda: 64 << 30)
  for variant in META_A2C_VARIANTS:
    assert run.validate_config(meta_a2c_configs.get_config(variant)) >= 1, variant
  for variant in ppo_configs.META:
    assert run.validate_config(ppo_configs.get_config(variant)) >= 1, variant
  with pytest.raises(ValueError, match="not a meta-training config"):
    run.validate_config(a2c_configs.get_config("catch"))


def test_two_tasks_of_one_name_are_refused_before_anything_runs(tmp_path, monkeypatch):
  config = meta_a2c_configs.get_config("catch")
  config.tasks = [
      meta_a2c_configs.task("catch", 2, 1e-3),
      meta_a2c_configs.task("big_dense_long", 2, 1e-3),
      meta_a2c_configs.task("catch", 4, 3e-3)
  ]
  monkeypatch.setattr(trainer_lib, "MetaTrainer", lambda *a, **k: pytest.fail("the trainer was built"))
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=r"tasks\[0\] and tasks\[2\] are both 'catch'"):
    run.meta_train(config, workdir, console=False)
  assert not os.path.exists(os.path.join(workdir, "config.json"))


def test_meta_train_launcher_checks_a_meta_ppo_config_in_one_line(tmp_path):
  proc = run_command(meta_train_command, f"--config={ROOT}/configs/ppo.py:meta_inverted_pendulum",
                     "--config.num_units=3", f"--workdir={tmp_path / 'run'}")
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2 and lines == ["error: env.num_envs=32 must be a multiple of num_units=3"], proc.stderr
  assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.slow(11)
def test_summary_speed_is_the_consoles_rate_not_diluted_by_compilation(tmp_path):
  config = meta_a2c_configs.get_config("catch")
  config.num_units, config.num_iterations, config.checkpoint_every = 4, 4, 100
  config.rollout_steps, config.inner_updates, config.optimizer.mlp_dims = 5, 2, (4,)  # (a smaller graph)
  s = run.meta_train(config, str(tmp_path / "run"), console=False)
  with open(tmp_path / "run" / "summary.json") as f:
    assert json.load(f)["env_steps_per_sec"] == pytest.approx(s["env_steps_per_sec"])
  steps_per_it = 4 * config.rollout_steps * (config.inner_updates + 1)
  assert s["env_steps_per_sec"] == pytest.approx(s["it_per_sec"] * steps_per_it)
  # The rate covers iterations 2..4 only, timed from the end of the first (which includes compilation).
  steady = s["wall_secs"] - s["first_iteration_secs"]
  assert 0 < steady < s["wall_secs"]
  assert (s["iterations"] - 1) / s["it_per_sec"] == pytest.approx(steady, rel=1e-6)
