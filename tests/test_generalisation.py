"""The generalisation experiment: cell configs, a tiny run that writes its outputs and resumes by cell; the
command (optim4rl_tf.eval.generalisation_command, launch/generalisation.py) run in this process."""

import json
import os

import numpy as np
import pytest

from conftest import run_command
from optim4rl_tf import pretrained
from optim4rl_tf.eval import generalisation as gen
from optim4rl_tf.eval import generalisation_command


def test_cell_configs_use_the_shipped_file_and_the_documented_rates():
  c = gen.cell_config("big_dense_long", "Optim4RL catch", 1e5, 3)
  assert c.optimizer.name == "optim4rl" and c.optimizer.meta_params == pretrained.path("catch")
  assert c.optimizer.learning_rate == 3e-3 and c.train_steps == 1e5 and c.num_seeds == 3
  adam = gen.cell_config("catch", "Adam", 1e5, 3)
  assert (adam.optimizer.name, adam.optimizer.learning_rate) == ("adam", 1e-3)
  rms = gen.cell_config("small_sparse_long", "RMSProp", 1e5, 3)
  assert (rms.optimizer.name, rms.optimizer.learning_rate, rms.optimizer.grad_clip) == ("rmsprop", 3e-3, 1.0)


@pytest.mark.slow(6)
def test_tiny_run_writes_table_numbers_figure_and_resumes_by_cell(tmp_path):
  out = str(tmp_path / "gen")
  args = dict(small_steps=2e4,
              big_steps=2e4,
              catch_steps=1.5e4,
              num_seeds=2,
              tasks=("catch",),
              optimizers=("Optim4RL catch",),
              progress=lambda *_: None)
  numbers = gen.run(out, **args)
  for name in ("table.md", "numbers.json", "generalisation.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  table = open(os.path.join(out, "table.md")).read()
  assert "| catch | no |" in table and "Optim4RL catch" in table
  finals = numbers["final_per_seed"]["catch"]
  assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in finals.values())
  assert json.load(open(os.path.join(out, "numbers.json")))["final_per_seed"]["catch"] == finals
  cell = os.path.join(out, "runs", "catch__Optim4RL_catch", "cell.json")
  stamp = os.path.getmtime(cell)
  assert gen.run(out, **args)["final_per_seed"]["catch"] == finals  # reused, not retrained
  assert os.path.getmtime(cell) == stamp


def test_unknown_pretrained_name_is_one_clear_error():
  with pytest.raises(ValueError, match="valid names"):
    gen.cell_config("catch", "Optim4RL grid7", 1e5, 2)


def test_command_passes_its_flags_and_its_command_line_to_the_experiment(tmp_path, monkeypatch):
  calls = []

  def fake_run(out, small, big, catch, seeds, **kwargs):
    calls.append((out, small, big, catch, seeds, kwargs))
    return {"stand-in": True}

  monkeypatch.setattr(gen, "run", fake_run)
  monkeypatch.setattr(gen, "table_markdown", lambda numbers: f"table of {sorted(numbers)}")
  res = run_command(generalisation_command, f"--out={tmp_path}", "--num_seeds=2", "--catch_steps=2e4",
                    "--tasks=small_sparse_short,catch")
  assert res.returncode == 0, res.stderr
  out, small, big, catch, seeds, kwargs = calls[0]
  assert (out, small, big, catch, seeds) == (str(tmp_path), 1e6, 5e5, 2e4, 2)
  assert kwargs["tasks"] == ("small_sparse_short", "catch") and kwargs["optimizers"] == gen.OPTIMIZERS
  assert kwargs["command"] == (f"python launch/generalisation.py --out={tmp_path} --num_seeds=2 --catch_steps=20000.0 "
                               "--tasks=small_sparse_short,catch")
  assert "table of ['stand-in']" in res.stdout


@pytest.mark.parametrize("args,match", [(["--tasks=catch,pong"], "unknown --tasks"),
                                        (["--optimizers=Adam,SGD"], "unknown --optimizers"),
                                        (["--num_seeds=0"], "must be positive"), (["extra"], "unexpected arguments")])
def test_command_refuses_bad_flags_in_one_line_before_training(tmp_path, args, match):
  res = run_command(generalisation_command, f"--out={tmp_path / 'gen'}", *args)
  assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "gen").exists()
