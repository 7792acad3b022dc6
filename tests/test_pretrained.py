"""Shipped trained optimizers: every file loads offline, carries its provenance, gives finite updates."""

import numpy as np
import pytest
import tensorflow as tf

import optim4rl_tf
from optim4rl_tf import pretrained
from optim4rl_tf.meta import run

PROVENANCE = ("recipe", "config", "version", "commit", "outer_iterations", "units_per_task", "seed", "final_meta_loss",
              "command")


def test_every_recipe_ships_a_file():
  assert pretrained.available() == pretrained.names() == ["catch", "grid6", "small_dense_long"]


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
  with pytest.raises(ValueError, match="valid names: catch, grid6, small_dense_long"):
    optim4rl_tf.Optim4RL.from_pretrained("grid7")
