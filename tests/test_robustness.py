"""Tables 5-7: config expansion, per-run settings, report beside the paper, resume, bad input; the command
(optim4rl_tf.analysis.robustness_command, launch/robustness.py) run in this process."""

import json
import os

import pytest

from conftest import run_command
from optim4rl_tf.analysis import robustness
from optim4rl_tf.analysis import robustness_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from optim4rl_tf.configs import a2c as a2c_configs  # noqa: E402
from optim4rl_tf.configs import robustness as rob_configs  # noqa: E402


def test_full_plan_covers_tables_5_to_7():
  rc = rob_configs.get_config("default")
  rc.meta_params = ""
  rc.allow_untrained = True
  runs = robustness.plan(rc)
  # 2 tasks x 12 cells, the default setting (lambda .95, entropy .01, gamma .995) shared by the 3 tables.
  assert len(runs) == 2 * 10
  cells = {(task, t, v) for task, _, cs in runs for t, v in cs}
  assert len(cells) == 24
  for table, (field, _) in robustness.TABLES.items():
    for task in ("small_dense_short", "big_dense_long"):
      assert sorted(v for (k, t, v) in cells if t == table and k == task) == sorted(robustness.PAPER[table][task])
  default = [r for r in runs if r[0] == "big_dense_long" and robustness.setting_key(r[1]) == "lam0.95_ent0.01_gam0.995"]
  assert len(default) == 1 and sorted(default[0][2]) == [(5, 0.95), (6, 0.01), (7, 0.995)]
  cfg = robustness.a2c_config(rc, "big_dense_long", dict(gae_lambda=0.9, entropy_weight=0.01, discount=0.995),
                              a2c_configs.get_config)
  assert (cfg.num_seeds, cfg.env.num_envs, cfg.train_steps, cfg.gae_lambda) == (10, 512, 3e7, 0.9)
  assert (cfg.optimizer.name, cfg.optimizer.learning_rate, cfg.optimizer.grad_clip) == ("optim4rl", 3e-3, 1.0)


def test_bad_configs():
  rc = rob_configs.get_config("small_dense_short")
  with pytest.raises(ValueError, match="meta_params is required"):
    robustness.plan(rc)
  rc.allow_untrained = True
  rc.tables = "5,8"
  with pytest.raises(ValueError, match="Unknown table 8"):
    robustness.plan(rc)
  rc.tables = "7"
  rc.sweep.discount = "0.9,1.5"
  with pytest.raises(ValueError, match="not in"):
    robustness.plan(rc)
  rc.sweep.discount = "0.9"
  rc.meta_params = "/nonexistent/phi.npz"
  with pytest.raises(ValueError, match="file not found"):
    robustness.plan(rc)


@pytest.mark.slow(14)
def test_tiny_run_report_and_resume(tmp_path, capsys):
  rc = rob_configs.get_config("tiny")
  rc.tables = "5,7"
  rc.sweep.gae_lambda = "0.9,0.95"
  rc.sweep.discount = "0.95,0.995"
  results = robustness.run_all(rc, str(tmp_path), a2c_configs.get_config, console=False)
  assert len(results) == 3  # (0.9,.995), default, (.95,.95)
  for r in results:
    cfg = json.load(open(os.path.join(r["run_dir"], "config.json")))
    assert (cfg["gae_lambda"], cfg["discount"]) == (r["setting"]["gae_lambda"], r["setting"]["discount"])
    assert cfg["num_seeds"] == 2 and len(r["finals"]) == 2 and r["mean"] is not None
  path = robustness.write_report(rc, results, str(tmp_path))
  md = open(path).read()
  assert "## Table 5 — GAE λ" in md and "## Table 7 — discount γ" in md and "Table 6" not in md
  assert "| sds | 0.9 | " in md and "| 11.51 ± 0.19 |" in md and "| 12.47 ± 0.14 |" in md
  assert "| sds | 0.99 | not run | 10.81 ± 0.17 |" in md
  assert "UNTRAINED" in md and "2 seeds" in md
  by_key = {robustness.setting_key(r["setting"]): r for r in results}
  d = by_key["lam0.95_ent0.01_gam0.995"]
  cell = f"{d['mean']:.2f} ± {d['half_width']:.2f}"
  assert f"| sds | 0.95 | {cell} | 11.25 ± 0.16 |" in md  # default run in Table 5 ...
  assert f"| sds | 0.995 | {cell} | 11.01 ± 0.17 |" in md  # ... and in Table 7
  # Resume: finished runs are reused, not rerun.
  again = robustness.run_all(rc, str(tmp_path), a2c_configs.get_config, console=True)
  assert "reusing" in capsys.readouterr().out
  assert [r["mean"] for r in again] == [r["mean"] for r in results]
  # A changed setting (here the seed) is run again, not taken from the old run.
  rc.tables = "5"
  rc.sweep.gae_lambda = "0.9"
  rc.seed = 5
  rerun = robustness.run_all(rc, str(tmp_path), a2c_configs.get_config, console=True)
  assert "reusing" not in capsys.readouterr().out
  assert rerun[0]["seeds"] == [5, 6] and rerun[0]["cells"] == [[5, 0.9]]
  # The command's --report_only reads the finished runs of its config and trains nothing.
  res = run_command(robustness_command, f"--config={ROOT}/configs/robustness.py:tiny", "--config.tables=5",
                    "--config.sweep.gae_lambda=0.9", "--config.seed=5", f"--workdir={tmp_path}", "--report_only")
  assert res.returncode == 0, res.stderr
  assert f"| sds | 0.9 | {rerun[0]['mean']:.2f} ± {rerun[0]['half_width']:.2f} |" in res.stdout
  assert res.stdout.strip().endswith(f"report: {os.path.join(str(tmp_path), 'robustness.md')}")


def test_command_report_only_without_finished_runs_trains_nothing(tmp_path):
  res = run_command(robustness_command, f"--config={ROOT}/configs/robustness.py:tiny", f"--workdir={tmp_path}",
                    "--report_only")
  assert res.returncode == 0, res.stderr
  assert "| sds | 0.9 | not run |" in res.stdout
  assert sorted(os.listdir(tmp_path)) == ["robustness.json", "robustness.md"]


@pytest.mark.parametrize("args,match",
                         [((), "--config is required"), (("--config={config}",), "--workdir is required"),
                          (("--config={config}:small_dense_short", "--workdir={tmp}"), "meta_params is required")])
def test_command_refuses_in_one_line(tmp_path, args, match):
  args = [a.format(config=f"{ROOT}/configs/robustness.py", tmp=tmp_path / "w") for a in args]
  res = run_command(robustness_command, *args)
  assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "w").exists() or not os.listdir(tmp_path / "w")  # (an empty workdir: writable)
