"""examples/custom_task.py: a task defined outside the package is meta-trained by MetaTrainer through the
InnerProblem protocol, and the phi.npz it writes drives a Keras ``model.fit``."""

import numpy as np
import pytest

from examples import custom_task
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.optimizers import meta_params as meta_params_lib


@pytest.mark.slow(6)
def test_custom_task_meta_trains_and_the_result_fits_a_keras_model(tmp_path):
  workdir = str(tmp_path / "custom")
  result = custom_task.main([
      f"--workdir={workdir}", "--units=4", "--iterations=3", "--inner_updates=2", "--batch_size=8", "--hidden=4",
      "--fit_epochs=2", "--fit_points=32", "--seed=3"
  ])
  # Meta-training ran: 3 applied outer iterations with finite meta-losses.
  assert result["iterations"] == 3
  assert len(result["meta_losses"]) == 3 and np.all(np.isfinite(result["meta_losses"]))
  # phi moved away from the initial phi, and the file holds the trained one.
  _, phi0 = meta_params_lib.resolve("optim4rl", None, mlp_dims=(), hidden_size=8, seed=3)
  _, saved = meta_params_lib.resolve("optim4rl", result["phi_path"])
  assert set(saved) == set(phi0)
  assert any(not np.array_equal(saved[k], phi0[k]) for k in phi0)
  assert result["phi_change"] > 0
  # The Keras fit with Optim4RL(meta_params=phi.npz) ran with finite losses.
  assert len(result["fit_losses"]) == 2 and np.all(np.isfinite(result["fit_losses"]))


def test_the_example_problem_implements_the_protocol():
  p = custom_task.SineRegression(custom_task.make_model(4), num_units=2)
  assert isinstance(p, problem_lib.InnerProblem)
  assert problem_lib.as_problems([p]) == [p]
