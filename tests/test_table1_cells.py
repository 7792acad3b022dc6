"""Table 1 cells (optim4rl_tf.eval.table1_cells): specs, configs, best-of-N with equal N, the verdict; the
command (optim4rl_tf.eval.table1_cells_command, launch/table1_cells.py) run in this process."""

import json

import pytest

from conftest import run_command
from optim4rl_tf.eval import table1_cells as tc
from optim4rl_tf.eval import table1_cells_command


def test_parse_cell_fills_the_official_defaults_and_names_the_cell():
  cell = tc.parse_cell("with:3e-4")
  assert (cell.row, cell.meta_lr, cell.meta_clip, cell.reset_interval, cell.meta_seed, cell.mlp_dims) == \
      ("with", 3e-4, "norm0.5", 72, 0, ())
  assert cell.name == "with_m72_lr0.0003_norm0.5_seed0_headfree"
  cell = tc.parse_cell("without:1e-3:clip1.0::1:16x16")
  assert cell.name == "without_lr0.001_clip1.0_seed1_mlp16x16"


@pytest.mark.parametrize("spec,match", [("sideways:1e-3", "row"), ("with:-1", "meta_lr"),
                                        ("with:1e-3:clip2", "meta_clip"), ("with:1e-3:norm0.5:0", "reset_interval"),
                                        ("with:abc", "abc")])
def test_parse_cell_refuses_bad_specs_naming_the_field(spec, match):
  with pytest.raises(ValueError, match=match):
    tc.parse_cell(spec)


def test_meta_config_sets_the_cell_on_the_paper_config():
  c = tc.meta_config(tc.parse_cell("with:3e-3:clip1.0:288:2"))
  assert c.pipeline and c.reset_interval == 288 and c.seed == 2 and c.meta_lr == 3e-3
  assert (c.meta_grad_clip, c.meta_grad_norm) == (1.0, -1.0)
  assert tuple(c.optimizer.mlp_dims) == () and c.num_units == 512 and c.num_iterations == 585
  c = tc.meta_config(tc.parse_cell("without:1e-3"))
  assert not c.pipeline and (c.meta_grad_clip, c.meta_grad_norm) == (-1.0, 0.5)


def _rec(row, lr, mean, seed=0, hw=0.5):
  cell = tc.Cell(row=row, meta_lr=lr, meta_seed=seed)
  return dict(cell.record(), name=cell.name, test=dict(mean=mean, ci_half_width=hw, seeds=10, env_steps=3e7))


def test_best_of_n_uses_equal_n_and_the_verdict_follows_the_cis():
  recs = [_rec("with", 1e-3, 30.0), _rec("with", 3e-3, 33.0), _rec("without", 1e-3, 31.5)]
  s = tc.summarize_cells(recs)
  assert s["equal_n"] == 1  # the second 'with' cell has no 'without' partner yet
  assert s["rows"]["with"]["best_of_n"]["mean"] == 30.0
  assert s["verdict"].startswith("pipeline training hurts")
  recs.append(_rec("without", 3e-3, 29.0))
  s = tc.summarize_cells(recs)
  assert s["equal_n"] == 2 and s["rows"]["with"]["best_of_n"]["mean"] == 33.0
  assert s["verdict"].startswith("pipeline training helps")
  assert s["rows"]["with"]["mean_over_cells"] == pytest.approx(31.5)
  assert s["rows"]["without"]["best_of_n"]["mean"] == 31.5
  recs.append(_rec("with", 3e-3, 32.0, seed=1))
  s = tc.summarize_cells(recs)
  assert s["rows"]["with"]["best_cell_meta_seeds"] == {"0": 33.0, "1": 32.0}
  assert s["equal_n"] == 2  # a second meta seed is not a new cell
  s = tc.summarize_cells([_rec("with", 1e-3, 30.0), _rec("without", 1e-3, 30.4)])
  assert "does not separate" in s["verdict"]


def test_command_collect_only_rebuilds_the_summary_from_the_finished_cells(tmp_path):
  """optim4rl-table1-cells (launch/table1_cells.py) in this process: --collect_only writes cells.json and
  cells.md from results/cells and prints the verdict; nothing is run, even with --cells given."""
  (tmp_path / "cells").mkdir()
  for rec in (_rec("with", 3e-3, 33.0), _rec("without", 3e-3, 29.0)):
    (tmp_path / "cells" / f"{rec['name']}.json").write_text(json.dumps(rec))
  res = run_command(table1_cells_command, "--collect_only", "--cells=with:1e-3", f"--results={tmp_path}",
                    f"--workdir={tmp_path / 'runs'}")
  assert res.returncode == 0, res.stderr
  assert res.stdout.strip().splitlines()[-1].startswith("pipeline training helps")
  assert json.loads((tmp_path / "cells.json").read_text())["summary"]["equal_n"] == 1
  assert not (tmp_path / "runs").exists()


def test_command_refuses_a_bad_cell_in_one_line_before_running(tmp_path):
  res = run_command(table1_cells_command, "--cells=with:1e-3,sideways:1e-3", f"--results={tmp_path}",
                    f"--workdir={tmp_path / 'runs'}")
  assert res.returncode == 2
  assert res.stderr.strip().startswith("error:") and "row" in res.stderr and len(res.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "runs").exists() and not (tmp_path / "cells.json").exists()


def test_a_finished_cell_is_not_run_again_and_keeps_its_record(tmp_path, monkeypatch):
  """Rerunning the stream skips a finished cell without touching its record (its commit stays the one of the
  code that made it); a record for other test settings is not taken as finished."""
  cell = tc.parse_cell("with:1e-3")
  rec = _rec("with", 1e-3, 30.0)
  rec.update(meta_iterations=585, commit="abc1234")
  rec["test"]["test_steps"] = 3e7
  (tmp_path / "cells").mkdir()
  path = tmp_path / "cells" / f"{cell.name}.json"
  path.write_text(json.dumps(rec))
  before = path.read_bytes()
  assert tc.run_cell(cell, str(tmp_path / "runs"), str(tmp_path)) == rec
  assert path.read_bytes() == before and not (tmp_path / "runs").exists()

  def ran(*args):
    raise RuntimeError("the cell runs")

  monkeypatch.setattr(tc, "meta_config", ran)
  with pytest.raises(RuntimeError, match="the cell runs"):  # 5 seeds asked: the 10-seed record does not count
    tc.run_cell(cell, str(tmp_path / "runs"), str(tmp_path), num_seeds=5)
  assert path.read_bytes() == before


def test_a_signal_during_a_cell_ends_the_command_with_one_line_and_the_signal_status(tmp_path, monkeypatch):
  """A SIGTERM while a cell meta-trains (the trainer saved the cell and raised Interrupted): one ``error:``
  line naming it and exit status 143, no traceback, as launch/meta_train.py."""
  from optim4rl_tf.meta import trainer as trainer_lib

  def interrupted(*args, **kwargs):
    raise trainer_lib.Interrupted(15, "interrupted by SIGTERM after outer iteration 9/585; saved it in X")

  monkeypatch.setattr(tc, "run_cell", interrupted)
  proc = run_command(table1_cells_command, "--cells=with:3e-4", f"--workdir={tmp_path / 'runs'}",
                     f"--results={tmp_path / 'results'}")
  assert proc.returncode == 143 and "Traceback" not in proc.stderr
  assert [line for line in proc.stderr.splitlines() if line.startswith("error:")
         ] == ["error: interrupted by SIGTERM after outer iteration 9/585; saved it in X"]
