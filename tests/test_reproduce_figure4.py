"""Figure 4's wiring in launch/reproduce.py: the grid6 Optim4RL is tested on each Brax task at the agent
learning rate of the official lopt_rl_grid_* configs (Walker2d: 3e-5, the others 3e-4). No training runs."""

from launch import reproduce

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
