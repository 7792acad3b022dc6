"""Shipped trained optimizers: every file loads offline, carries its provenance, gives finite updates; the
command that makes them (optim4rl_tf.meta.make_pretrained_command, launch/make_pretrained.py) in this process."""

import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf
from conftest import run_command
from optim4rl_tf import pretrained
from optim4rl_tf.meta import make_pretrained_command
from optim4rl_tf.meta import run

PROVENANCE = ("recipe", "config", "version", "commit", "outer_iterations", "units_per_task", "seed", "final_meta_loss",
              "command")


def test_every_recipe_ships_a_file():
  assert pretrained.available() == pretrained.names() == ["catch", "grid6", "inverted_pendulum", "small_dense_long"]


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_file_loads_carries_provenance_and_gives_finite_updates(name):
  meta = pretrained.provenance(name)
  missing = [k for k in PROVENANCE if k not in meta]
  assert not missing, missing
  assert meta["recipe"] == name and meta["command"].endswith(f"--name={name}")
  assert np.isfinite(meta["final_meta_loss"]) and meta["outer_iterations"] > 0
  # The recipe in the package is the config the file was made with (so the command reproduces it).
  assert run.resolved_config(pretrained.config(name)) == meta["config"]
  opt = optim4rl_tf.Optim4RL.from_pretrained(name, learning_rate=1e-2)
  var = tf.Variable(np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6))
  before = var.numpy().copy()
  for step in range(3):
    grad = tf.constant(np.sin(np.arange(24, dtype=np.float32) + step).reshape(4, 6))
    opt.apply_gradients([(grad, var)])
  assert np.all(np.isfinite(var.numpy()))
  assert not np.allclose(var.numpy(), before)
  assert int(np.asarray(opt.nonfinite_steps)) == 0


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match="valid names: catch, grid6, inverted_pendulum, small_dense_long"):
    optim4rl_tf.Optim4RL.from_pretrained("grid7")


def test_make_pretrained_refuses_an_unknown_recipe_in_one_line(tmp_path):
  res = run_command(make_pretrained_command, "--name=grid7", f"--workdir={tmp_path / 'w'}",
                    f"--out={tmp_path / 'o.npz'}")
  assert res.returncode == 2 and "--name must be one of catch, grid6, inverted_pendulum, small_dense_long" in res.stderr
  assert len(res.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_make_pretrained_plot_only_redraws_the_curves_of_a_workdir(tmp_path):
  """--plot_only reads meta_metrics.csv and writes the PNG, training nothing; final_meta_loss sums the tasks'
  last meta-losses."""
  workdir = tmp_path / "w"
  workdir.mkdir()
  rows = ["iteration,catch/agent_return,catch/meta_loss,big_dense_long/agent_return,big_dense_long/meta_loss"]
  rows += [f"{i},{0.1 * i},{1.0 / (i + 1)},{i},{2.0 / (i + 1)}" for i in range(30)]
  (workdir / "meta_metrics.csv").write_text("\n".join(rows) + "\n")
  res = run_command(make_pretrained_command, "--name=catch", f"--workdir={workdir}", "--plot_only",
                    f"--plot_dir={tmp_path / 'plots'}")
  assert res.returncode == 0, res.stderr
  png = tmp_path / "plots" / "catch_meta_training.png"
  assert res.stdout.strip() == f"wrote {png}" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in workdir.iterdir()) == ["meta_metrics.csv"]
  assert make_pretrained_command.final_meta_loss(str(workdir)) == pytest.approx(3.0 / 30)
