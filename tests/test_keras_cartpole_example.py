"""examples/keras_cartpole.py: the A2C CartPole example trains a Keras model with Adam and with a shipped
learned optimizer, finishes with finite returns, and is deterministic under a seed."""

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from examples import keras_cartpole  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(autouse=True)
def _restore_op_determinism():
  """The example turns on TF's op determinism for its whole process (a script's choice); the suite's
  other tests share this process, and Keras refuses jit_compile while it is on, so it is turned off
  again after each test here."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=import-outside-toplevel
  was_on = tf_config.is_op_determinism_enabled()
  yield
  if not was_on:
    tf_config.disable_op_determinism()


TINY = ["--steps=384", "--envs=4", "--rollout=16", "--hidden=16", "--log_every=0", "--seed=3"]


@pytest.mark.slow(30)
@pytest.mark.parametrize("optimizer", ["adam", "optim4rl:catch"])
def test_the_example_runs_and_is_deterministic(optimizer):
  first = keras_cartpole.main([f"--optimizer={optimizer}", "--lr=3e-3", *TINY])
  second = keras_cartpole.main([f"--optimizer={optimizer}", "--lr=3e-3", *TINY])
  assert first["steps"] == 384
  assert len(first["episode_returns"]) > 0
  assert np.all(np.isfinite(first["episode_returns"])) and np.isfinite(first["final_return"])
  assert first["episode_returns"] == second["episode_returns"]
  assert first["episode_steps"] == second["episode_steps"]


def test_an_unknown_optimizer_is_refused():
  with pytest.raises(ValueError, match="adam or optim4rl:NAME"):
    keras_cartpole.make_optimizer("sgd", 1e-3, None)
