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
from optim4rl_tf.eval import lr_choice


def test_cell_configs_use_the_shipped_file_the_given_rate_and_the_configs_clip():
  c = gen.cell_config("big_dense_long", "Optim4RL catch", 1e5, 3, 3e-4)
  assert c.optimizer.name == "optim4rl" and c.optimizer.meta_params == pretrained.path("catch")
  assert (c.optimizer.learning_rate, c.optimizer.grad_clip) == (3e-4, 1.0)
  assert c.train_steps == 1e5 and c.num_seeds == 3
  adam = gen.cell_config("catch", "Adam", 1e5, 3, 3e-3)
  assert (adam.optimizer.name, adam.optimizer.learning_rate, adam.optimizer.grad_clip) == ("adam", 3e-3, -1.0)
  rms = gen.cell_config("small_sparse_long", "RMSProp", 1e5, 3, 1e-3)
  assert (rms.optimizer.name, rms.optimizer.learning_rate, rms.optimizer.grad_clip) == ("rmsprop", 1e-3, 1.0)
  sdl = gen.cell_config("catch", "Optim4RL small_dense_long", 1e5, 3, 1e-3)  # any shipped name, not only the defaults
  assert sdl.optimizer.meta_params == pretrained.path("small_dense_long")


def test_best_rate_is_the_highest_mean_a_diverged_rate_ranks_last_and_works_at_is_within_the_best_ci():
  choice = lr_choice.choose({3e-4: [1.0, 1.2, 1.1], 1e-3: [2.0, 2.2, 2.1], 3e-3: [5.0, np.nan, 5.0]})
  assert choice.lr == 1e-3 and choice.diverged == 0  # 3e-3 has the higher mean but a diverged seed
  assert choice.ci.mean == pytest.approx(2.1) and choice.ci.low <= 2.1 <= choice.ci.high
  assert choice.works_at == (1e-3,)
  close = lr_choice.choose({3e-4: [1.0, 3.0], 1e-3: [2.0, 2.1]})  # 3e-4's mean 2.0 lies in 1e-3's CI [2.0, 2.1]
  assert close.lr == 1e-3 and close.works_at == (3e-4, 1e-3)
  tie = lr_choice.choose({3e-4: [0.0, 2.0], 1e-3: [1.0, 1.0]})  # equal means: the smaller standard error
  assert tie.lr == 1e-3
  lost = lr_choice.choose({1e-3: [np.nan, np.nan], 3e-3: [np.nan, 1.0]})
  assert lost.lr == 3e-3 and lost.diverged == 1 and lost.works_at == ()
  assert lr_choice.ratio(0.9, 1.2) == pytest.approx(0.75) and lr_choice.ratio(0.5, -0.3) is None
  with pytest.raises(ValueError, match="at least one learning rate"):
    lr_choice.choose({})


@pytest.mark.slow(10)
def test_tiny_run_writes_table_numbers_figure_and_resumes_by_cell(tmp_path):
  out = str(tmp_path / "gen")
  args = dict(small_steps=2e4,
              big_steps=2e4,
              catch_steps=1.5e4,
              num_seeds=2,
              tasks=("catch",),
              optimizers=("Optim4RL catch", "Adam"),
              lrs=(1e-3, 3e-3),
              progress=lambda *_: None)
  numbers = gen.run(out, **args)
  for name in ("table.md", "numbers.json", "generalisation.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  finals = numbers["final_per_seed"]["catch"]
  assert sorted(finals["Adam"]) == ["0.001", "0.003"]
  assert all(len(v) == 2 and np.all(np.isfinite(v)) for per_lr in finals.values() for v in per_lr.values())
  saved = json.load(open(os.path.join(out, "numbers.json")))
  assert saved["final_per_seed"]["catch"] == finals
  for optimizer in ("Optim4RL catch", "Adam"):  # each at its best rate, the one of the higher mean
    best = saved["best"]["catch"][optimizer]
    means = {lr: np.mean(v) for lr, v in finals[optimizer].items()}
    assert f"{best['lr']:g}" == max(means, key=means.get)
    assert best["mean"] == pytest.approx(max(means.values()))
  adam_best, mine = saved["best"]["catch"]["Adam"]["mean"], saved["best"]["catch"]["Optim4RL catch"]
  expected = mine["mean"] / adam_best if adam_best > 0 else None  # no ratio to a negative return
  assert mine["ratio_to_adam_best"] == (expected if expected is None else pytest.approx(expected))
  table = open(os.path.join(out, "table.md")).read()
  assert "| catch | catch |" in table  # the catch optimizer was meta-trained on Catch
  assert f"@ {saved['best']['catch']['Adam']['lr']:g}" in table
  cell = os.path.join(out, "runs", "catch__Optim4RL_catch__lr0.001", "cell.json")
  stamp = os.path.getmtime(cell)
  assert gen.run(out, **args)["final_per_seed"]["catch"] == finals  # reused, not retrained
  assert os.path.getmtime(cell) == stamp


def test_a_cell_is_trained_again_when_the_shipped_file_behind_it_changes(tmp_path, monkeypatch):
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.eval import reproduce
  calls = []

  def fake_train(config, workdir, console):  # a finished run: its workdir and the final return per seed
    os.makedirs(workdir)
    calls.append(workdir)
    return {"final": [1.0, 2.0]}

  monkeypatch.setattr(a2c_train, "train", fake_train)
  config = gen.cell_config("catch", "Optim4RL catch", 1e4, 2, 1e-3)
  workdir = str(tmp_path / "cell")
  assert gen._train_cell(config, workdir) == [1.0, 2.0] and len(calls) == 1
  assert gen._train_cell(config, workdir) == [1.0, 2.0] and len(calls) == 1  # the same file: reused
  monkeypatch.setattr(reproduce, "phi_digest", lambda path: "another phi")  # remade at the same path
  gen._train_cell(config, workdir)
  assert len(calls) == 2


def test_the_grid_is_sorted_without_repeats_and_bad_rates_are_refused():
  assert lr_choice.check_grid([3e-3, 1e-3, 3e-3]) == (1e-3, 3e-3)
  for bad in ([], [0.0], [-1e-3], [float("nan")], [float("inf")], ["fast"], [True]):
    with pytest.raises(ValueError, match="must be positive numbers"):
      lr_choice.check_grid(bad, "--lrs")
  with pytest.raises(ValueError, match="print alike"):
    lr_choice.check_grid([1e-3, 1.0000001e-3])


def test_unseen_summary_counts_a_diverged_learned_optimizer_as_a_failure_and_skips_tasks_without_a_reference():

  def best(mean, diverged=0, ratio=None, lr=1e-3):
    return dict(lr=lr, mean=mean, low=mean, high=mean, diverged=diverged, works_at=[lr], ratio_to_adam_best=ratio)

  numbers = {
      "tasks": ["small_sparse_short", "small_sparse_long", "catch", "big_sparse_long"],
      "optimizers": ["Optim4RL catch", "Adam"],
      "learning_rates": [1e-3],
      "best": {
          "small_sparse_short": {
              "Optim4RL catch": best(0.9, ratio=0.9),
              "Adam": best(1.0, ratio=1.0)
          },
          "small_sparse_long": {
              "Optim4RL catch": best(None, diverged=2),
              "Adam": best(1.0, ratio=1.0)
          },
          "catch": {
              "Optim4RL catch": best(0.1, ratio=0.1),
              "Adam": best(1.0, ratio=1.0)
          },  # seen: not counted
          "big_sparse_long": {
              "Optim4RL catch": best(0.2),
              "Adam": best(-0.1)
          },  # no positive reference
      }
  }
  table = gen.table_markdown(numbers)
  assert "| catch | catch |" in table and "diverged" in table
  row = [line for line in table.splitlines() if line.startswith("| Optim4RL catch | 3 |")]
  assert row and "| 1 of 2 | 0.45x |" in row[0], table  # ratios 0.9 and 0 (diverged)


def test_unknown_pretrained_name_is_one_clear_error():
  with pytest.raises(ValueError, match="pretrained names"):
    gen.cell_config("catch", "Optim4RL grid7", 1e5, 2, 1e-3)
  with pytest.raises(ValueError, match="unknown optimizer 'SGD'"):
    gen.run("unused", 1, 1, 1, 1, optimizers=("SGD",))


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
  assert kwargs["lrs"] == (3e-4, 1e-3, 3e-3)
  assert kwargs["command"] == (f"python launch/generalisation.py --out={tmp_path} --num_seeds=2 --catch_steps=20000.0 "
                               "--tasks=small_sparse_short,catch")
  run_command(generalisation_command, f"--out={tmp_path}", "--optimizers=Optim4RL small_dense_long,Adam", "--lrs=1e-3")
  assert calls[1][5]["optimizers"] == ("Optim4RL small_dense_long", "Adam") and calls[1][5]["lrs"] == (1e-3,)
  assert "table of ['stand-in']" in res.stdout


@pytest.mark.parametrize("args,match", [(["--tasks=catch,pong"], "unknown --tasks"),
                                        (["--optimizers=Adam,SGD"], "--optimizers: unknown optimizer 'SGD'"),
                                        (["--num_seeds=0"], "must be positive"), (["extra"], "unexpected arguments"),
                                        (["--lrs=1e-3,fast"], "--lrs must be positive numbers"),
                                        (["--lrs=0"], "--lrs must be positive")])
def test_command_refuses_bad_flags_in_one_line_before_training(tmp_path, args, match):
  res = run_command(generalisation_command, f"--out={tmp_path / 'gen'}", *args)
  assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "gen").exists()


def test_a_phi_of_ones_own_is_run_by_path_in_a_flat_cell_folder_and_its_recorded_tasks_count_as_seen(tmp_path):
  import shutil

  from optim4rl_tf.optimizers import meta_params
  mine = tmp_path / "sub" / "phi.npz"
  mine.parent.mkdir()
  core, phi = meta_params.resolve("optim4rl", None, mlp_dims=(), seed=3)
  meta_params.save(str(mine), core, phi)  # a meta-training's phi.npz: no recorded config
  label = f"Optim4RL {mine}"
  c = gen.cell_config("small_sparse_short", label, 1e5, 2, 1e-3)
  assert (c.optimizer.name, c.optimizer.meta_params, c.optimizer.grad_clip) == ("optim4rl", str(mine), 1.0)
  cell = gen._cell_dir(str(tmp_path / "out"), "catch", label, 1e-3)
  assert os.path.dirname(cell) == str(tmp_path / "out" / "runs")  # one folder per cell, not the path's folders
  assert gen.seen_tasks(label) == ()  # nothing recorded: every task is unseen
  shipped_copy = tmp_path / "copy.npz"
  shutil.copy(pretrained.path("catch"), shipped_copy)  # a file that records its meta-training config
  assert gen.seen_tasks(f"Optim4RL {shipped_copy}") == ("catch",)
  table = gen.table_markdown({
      "tasks": ["catch"],
      "optimizers": [f"Optim4RL {shipped_copy}", "Adam"],
      "learning_rates": [1e-3],
      "best": {
          "catch": {
              o: dict(lr=1e-3, mean=1.0, low=1.0, high=1.0, diverged=0, works_at=[1e-3], ratio_to_adam_best=1.0)
              for o in (f"Optim4RL {shipped_copy}", "Adam")
          }
      }
  })
  assert f"| catch | {shipped_copy} |" in table


def test_a_bad_phi_path_is_one_clear_error_naming_it(tmp_path):
  from optim4rl_tf.optimizers import meta_params
  with pytest.raises(ValueError, match="meta-parameter file not found: '.*missing.npz'"):
    gen.cell_config("catch", f"Optim4RL {tmp_path / 'missing.npz'}", 1e5, 2, 1e-3)
  star = tmp_path / "star.npz"
  core, phi = meta_params.resolve("star", None, seed=0)
  meta_params.save(str(star), core, phi)
  with pytest.raises(ValueError, match="is a file of optimizer 'star', not of Optim4RL"):
    gen.check_optimizer(f"Optim4RL {star}")
  with pytest.raises(ValueError, match="'Optim4RL PATH.npz'"):
    gen.check_optimizer(f"Optim4RL {tmp_path / 'phi.txt'}")
