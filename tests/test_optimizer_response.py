"""The optimizer-response measurement (optim4rl_tf.analysis.response) and its command."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command
from optim4rl_tf.analysis import response
from optim4rl_tf.analysis import response_command
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params
from optim4rl_tf.optimizers import star

SMALL = dict(coords=64, steps=40, burn_in=20, seed=3)


def numpy_adam_response(scales, snrs, coords, steps, burn_in, seed, b1=0.9, b2=0.999, eps=1e-8):
  """Adam (bias-corrected, lr 1) written in NumPy on the same streams as response.measure builds them."""
  ns, nr = len(scales), len(snrs)
  n = ns * nr * coords
  scale = np.repeat(scales, nr * coords)
  snr = np.tile(np.repeat(snrs, coords), ns)
  sigma = np.sign(tf.random.stateless_uniform([n], [seed, 0], -1.0, 1.0).numpy())
  m, v = np.zeros(n), np.zeros(n)
  size, along = np.zeros(n), np.zeros(n)
  for t in range(steps):
    g = scale * (snr * sigma + tf.random.stateless_normal([n], [seed, t + 1]).numpy())
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    u = -(m / (1 - b1**(t + 1))) / (np.sqrt(v / (1 - b2**(t + 1))) + eps)
    if t >= burn_in:
      size, along = size + np.abs(u), along - u * sigma
  return (x.reshape(ns, nr, coords).mean(-1) / (steps - burn_in) for x in (size, along))


def test_adam_steps_and_drifts_match_an_independent_numpy_adam():
  scales, snrs = (1e-3, 1.0), (0.0, 3.0)
  res = response.measure("adam", scales, snrs, **SMALL)
  step, drift = numpy_adam_response(scales, snrs, **SMALL)
  np.testing.assert_allclose(res["step"], step, rtol=1e-4)
  np.testing.assert_allclose(res["drift"], drift, rtol=1e-3, atol=1e-5)
  # Adam reads the history: a consistent gradient gets a step several times a pure-noise one, at any scale.
  assert np.all(res["step"][:, 1] > 3 * res["step"][:, 0])
  assert res["history_blind_below"] is None and res["sign_step"] is None


def constant_step_file(path, b1, b2):
  """An Optim4RL file whose outputs are the biases only: update = -sign(g) * exp(b1) / sqrt(exp(b2)) * lr."""
  core = cores.make_core("optim4rl", (), 8)
  phi = {k: np.zeros(s, np.float32) for k, s in core.meta_param_shapes().items()}
  phi["mlp1/out/bias"][:] = b1
  phi["mlp2/out/bias"][:] = b2
  return meta_params.save(path, core, phi)


def test_a_bias_only_learned_optimizer_is_sign_descent_at_every_scale(tmp_path):
  path = constant_step_file(tmp_path / "const.npz", 0.5, -1.0)
  scales = (1e-4, 1e-2, 1.0, 10.0)
  res = response.measure(str(path), scales, (0.0, 1.0, 3.0), **SMALL)
  c = np.exp(0.5) / np.sqrt(np.exp(-1.0))
  np.testing.assert_allclose(res["step"], c, rtol=1e-5)
  assert res["history_blind_below"] == 10.0
  assert res["sign_step"] == pytest.approx(c, rel=1e-5)
  # drift of sign descent: c * (P(sign right) - P(sign wrong)) = c * (2 Phi(snr) - 1)
  phi_cdf = lambda x: 0.5 * (1 + tf.math.erf(x / np.sqrt(2.0)).numpy())
  np.testing.assert_allclose(res["drift"][:, 2], c * (2 * phi_cdf(3.0) - 1), rtol=0.02)


def test_the_shipped_default_is_sign_descent_below_gradient_scale_0_03_and_reads_history_at_1():
  res = response.measure("inverted_pendulum", (1e-3, 1e-2, 1.0), (0.0, 3.0), coords=256, steps=100, burn_in=50)
  assert res["history_blind_below"] == 1e-2
  assert res["step"][0, 0] == pytest.approx(res["step"][0, 1], rel=0.01)
  assert res["step"][2, 1] > 2 * res["step"][2, 0]


def test_command_writes_the_report_and_refuses_bad_input_in_one_line(tmp_path):
  out = tmp_path / "resp"
  res = run_command(response_command, "--optimizers=adam,catch", f"--out={out}", "--scales=0.001,1", "--snrs=0,3",
                    "--coords=32", "--steps=30", "--burn_in=10")
  assert res.returncode == 0, res.stderr
  assert "catch: up to gradient scale 0.001" in res.stdout and "Adam: its step depends" in res.stdout
  numbers = json.loads((out / "response.json").read_text())
  assert numbers["settings"]["scales"] == [0.001, 1.0]
  assert np.shape(numbers["optimizers"]["catch"]["step"]) == (2, 2)
  assert (out / "response.png").stat().st_size > 0 and "| catch | 1 |" in (out / "response.md").read_text()

  bad = run_command(response_command, "--optimizers=adam,nosuch", f"--out={tmp_path / 'bad'}")
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'nosuch'" in bad.stderr
  assert not (tmp_path / "bad" / "response.json").exists()
  bad = run_command(response_command, "--optimizers=adam", f"--out={tmp_path / 'bad'}", "--scales=0,1")
  assert bad.returncode == 2 and "scales must be positive" in bad.stderr
  star_file = meta_params.save(tmp_path / "star.npz", star.StarCore(), star.StarCore().init_meta_params(0))
  bad = run_command(response_command, f"--optimizers={star_file}", f"--out={tmp_path / 'bad'}")
  assert bad.returncode == 2 and "is a star file" in bad.stderr
