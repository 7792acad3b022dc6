"""Figure 4's wiring in optim4rl_tf/eval/reproduce.py: the grid6 Optim4RL is tested on each Brax task at the agent
learning rate of the official lopt_rl_grid_* configs (Walker2d: 3e-5, the others 3e-4). No training runs."""

import os

import pytest

from conftest import run_command
from optim4rl_tf.eval import reproduce

OFFICIAL_LR = dict(ant=3e-4, humanoid=3e-4, inverted_double_pendulum=3e-4, walker2d=3e-5)


def test_figure4_tests_the_grid6_optimizer_at_the_official_learning_rates(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(reproduce, "meta_train", lambda *a, **k: "phi.npz")
  monkeypatch.setattr(reproduce, "test_run_ppo", lambda task, optimizer, phi, lr, workdir, budget: calls.append(
      (task, optimizer, lr)))
  from optim4rl_tf.eval import report
  monkeypatch.setattr(report, "write_report", lambda *a, **k: "report.md")
  reproduce.reproduce_ppo("figure4", str(tmp_path), reproduce.Budget(only=("Optim4RL",)))
  assert calls == [(task, "optim4rl", OFFICIAL_LR[task]) for task in reproduce.FIGURE4_TASKS]


def test_figure4_cpu_tests_every_optimizer_at_each_rate_of_the_grid_without_meta_training(tmp_path, monkeypatch):
  from optim4rl_tf import pretrained
  from optim4rl_tf.eval import report
  calls, seen = [], []
  monkeypatch.setattr(reproduce, "meta_train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("meta")))
  monkeypatch.setattr(
      reproduce, "test_run_ppo", lambda task, optimizer, phi, lr, workdir, budget: calls.append(
          (task, optimizer, phi, lr, os.path.relpath(workdir, tmp_path), budget.ppo_cpu)))
  monkeypatch.setattr(report, "write_report", lambda out, panels=(), **k: seen.extend(panels) or "report.md")
  reproduce.reproduce_ppo("figure4_cpu", str(tmp_path), reproduce.Budget())
  expected = []
  for task in ("inverted_double_pendulum", "walker2d"):
    for label, opt, phi in [("optim4rl_grid6", "optim4rl", pretrained.path("grid6")),
                            ("optim4rl_catch", "optim4rl", pretrained.path("catch")),
                            ("optim4rl_inverted_pendulum", "optim4rl", pretrained.path("inverted_pendulum")),
                            ("adam", "adam", None), ("rmsprop", "rmsprop", None)]:
      expected += [(task, opt, phi, lr, f"test_{label}_{task}_lrs/lr{lr:g}", True) for lr in (3e-4, 1e-3, 3e-3)]
  assert calls == expected
  # One source per optimizer: the folder of its rates, which the report ranks (it shows the best).
  assert [(task, [label for label, _ in sources]) for _, task, sources in seen
         ] == [(task, ["Optim4RL grid6", "Optim4RL catch", "Optim4RL inverted_pendulum", "Adam", "RMSProp"])
               for task in reproduce.FIGURE4_CPU_TASKS]
  # Only the requested rates' runs (a run of another grid in the same folder is not ranked).
  assert seen[0][2][3][1] == [
      os.path.join(str(tmp_path), "test_adam_inverted_double_pendulum_lrs", f"lr{lr:g}") for lr in (3e-4, 1e-3, 3e-3)
  ]
  calls.clear()
  reproduce.reproduce_ppo("figure4_cpu", str(tmp_path), reproduce.Budget(only=("Adam",), test_lrs=(1e-2, 1e-3)))
  assert [(c[3], c[4]) for c in calls[:2]] == [(1e-3, "test_adam_inverted_double_pendulum_lrs/lr0.001"),
                                               (1e-2, "test_adam_inverted_double_pendulum_lrs/lr0.01")]
  with pytest.raises(ValueError, match="--test_lrs must be positive"):
    reproduce.Budget(test_lrs=(1e-3, 0.0))
  with pytest.raises(ValueError, match="print alike"):
    reproduce.Budget(test_lrs=(1e-3, 1.0000001e-3))
  assert reproduce.Budget(test_lrs=(3e-3, 1e-3, 3e-3)).test_lrs == (1e-3, 3e-3)


def test_test_lrs_is_refused_for_other_experiments_in_one_line(tmp_path):
  res = run_command(reproduce, "--experiment=figure3_catch", f"--workdir={tmp_path / 'w'}", "--test_lrs=1e-3")
  assert res.returncode == 2 and "--test_lrs applies to figure4_cpu only" in res.stderr
  res = run_command(reproduce, "--experiment=figure4_cpu", f"--workdir={tmp_path / 'w'}", "--test_lrs=1e-3,x")
  assert res.returncode == 2 and "--test_lrs must be positive numbers" in res.stderr
  assert len(res.stderr.strip().splitlines()) == 1


def test_reset_interval_sets_m_of_the_pipeline_run_only_and_names_its_workdirs(tmp_path, monkeypatch):
  """--reset_interval (Table 1's m sweep): the run with pipeline training gets m and workdirs ``*_m<m>``; the
  run without keeps its config and its workdirs, so one workdir holds the whole sweep."""
  import pytest
  from optim4rl_tf.meta import run
  from optim4rl_tf.eval import report
  metas, tests = [], []
  monkeypatch.setattr(
      run, "meta_train", lambda config, workdir: metas.append(
          (config.pipeline, config.reset_interval, workdir.split("/")[-1])))
  monkeypatch.setattr(
      reproduce, "test_run", lambda task, opt, phi, lr, workdir, budget: tests.append(
          (phi.split("/")[-2], workdir.split("/")[-1])))
  monkeypatch.setattr(report, "write_report", lambda *a, **k: "report.md")
  reproduce.reproduce("table1_sdl", str(tmp_path), reproduce.Budget(reset_interval=144))
  assert metas == [(True, 144, "meta_optim4rl_small_dense_long_m144"),
                   (False, 72, "meta_optim4rl_small_dense_long_nopipe")]
  assert tests == [("meta_optim4rl_small_dense_long_m144", "test_optim4rl_small_dense_long_m144"),
                   ("meta_optim4rl_small_dense_long_nopipe", "test_optim4rl_small_dense_long_nopipe")]
  metas.clear()
  reproduce.reproduce("table1_sdl", str(tmp_path), reproduce.Budget(only=("with",)))
  assert metas == [(True, 72, "meta_optim4rl_small_dense_long")]
  with pytest.raises(ValueError, match="reset_interval"):
    reproduce.Budget(reset_interval=-1)
