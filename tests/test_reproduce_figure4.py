"""Figure 4's wiring in optim4rl_tf/eval/reproduce.py: the grid6 Optim4RL is tested on each Brax task at the agent
learning rate of the official lopt_rl_grid_* configs (Walker2d: 3e-5, the others 3e-4). No training runs."""

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


def test_figure4_cpu_tests_the_shipped_optimizers_on_cpu_settings_without_meta_training(tmp_path, monkeypatch):
  from optim4rl_tf import pretrained
  calls = []
  monkeypatch.setattr(reproduce, "meta_train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("meta")))
  monkeypatch.setattr(
      reproduce, "test_run_ppo", lambda task, optimizer, phi, lr, workdir, budget: calls.append(
          (task, optimizer, phi, lr, budget.ppo_cpu)))
  from optim4rl_tf.eval import report
  monkeypatch.setattr(report, "write_report", lambda *a, **k: "report.md")
  reproduce.reproduce_ppo("figure4_cpu", str(tmp_path), reproduce.Budget())
  expected = []
  for task in ("inverted_double_pendulum", "walker2d"):
    expected += [(task, "optim4rl", pretrained.path(name), OFFICIAL_LR[task], True) for name in ("grid6", "catch")]
    expected += [(task, opt, None, None, True) for opt in ("adam", "rmsprop")]
  assert calls == expected


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
