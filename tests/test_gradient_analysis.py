"""Gradient analysis of docs/fidelity.md §8: 30-part split, histogram bins, Wasserstein distances, end-to-end run."""

import json
import os

import numpy as np
import pytest
from scipy import stats as sps

from conftest import run_command
from optim4rl_tf.analysis import analyze_gradients_command
from optim4rl_tf.analysis import collect
from optim4rl_tf.analysis import collect_gradients_command
from optim4rl_tf.analysis import gradients

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from optim4rl_tf.configs import collect as collect_configs  # noqa: E402


def test_part_bounds_match_array_split():
  b = gradients.part_bounds(2929, 30)
  assert len(b) == 30 and b[0] == (0, 98) and b[-1] == (2832, 2929)
  assert all(b[i][1] == b[i + 1][0] for i in range(29))
  assert [e - s for s, e in b] == [len(p) for p in np.array_split(np.arange(2929), 30)]
  assert gradients.part_bounds(4200, 30)[15] == (2100, 2240)
  with pytest.raises(ValueError, match="cannot be split"):
    gradients.part_bounds(29, 30)


def test_split_parts_on_synthetic_data():
  steps = np.arange(95)[:, None, None] * np.ones((1, 2, 3))  # value = step index
  parts = gradients.split_parts(steps, 30)
  assert len(parts) == 30
  np.testing.assert_array_equal(np.concatenate(parts), steps)
  assert [p.shape[0] for p in parts] == [4] * 5 + [3] * 25
  assert parts[15][0, 0, 0] == 5 * 4 + 10 * 3  # part 16 starts at step 50


def test_histogram_bins_and_density():
  assert gradients.HIST_BINS[0] == -9.0 and gradients.HIST_BINS[-1] == 4.5
  assert len(gradients.HIST_BINS) == 28 and np.allclose(np.diff(gradients.HIST_BINS), 0.5)
  g = np.array([0.0, 0.0, 1e-3, -1e-3, 2.0, 1e6])  # 1e6 -> log 6: outside the bins
  dens, edges = gradients.histogram(g)
  np.testing.assert_array_equal(edges, gradients.HIST_BINS)
  # log10(0 + 1e-8) = -8 -> bin [-8, -7.5) = index 2; log10(1e-3) -> [-3, -2.5) = 12; log10(2) -> [0, .5) = 18
  counts = dens * 0.5 * 5  # density over the 5 values inside
  np.testing.assert_allclose(counts[[2, 12, 18]], [2, 2, 1])
  assert np.isclose((dens * 0.5).sum(), 1.0)
  np.testing.assert_allclose(gradients.log_abs([0.0, -10.0]), [-8.0, np.log10(10 + 1e-8)])


def test_wasserstein_known_answers():
  assert gradients.wasserstein([0.0], [1.0]) == pytest.approx(1.0)
  x = np.random.default_rng(0).normal(size=1000)
  assert gradients.wasserstein(x, x + 0.25) == pytest.approx(0.25)
  assert gradients.wasserstein([0, 1, 2, 3], [0, 1, 2, 3]) == 0.0
  # U{0,1} vs {0}: half the mass moves by 1.
  assert gradients.wasserstein([0.0, 1.0], [0.0]) == pytest.approx(0.5)


def test_analyze_panels_known_answer():
  # 30 steps, step k holds the constant value k on every coordinate: "all" is uniform on {0..29}, so
  # WD(part k, all) = mean_j |k - j|: 14.5 for k = 0 and 29, 7.5 for k = 15.
  grads = np.arange(30, dtype=np.float32)[:, None, None] * np.ones((1, 2, 5), np.float32)
  res = gradients.analyze(grads, 30)
  assert res["panels"]["beginning"]["wd"] == pytest.approx(14.5)
  assert res["panels"]["middle"]["wd"] == pytest.approx(7.5)
  assert res["panels"]["end"]["wd"] == pytest.approx(14.5)
  assert res["panels"]["middle"]["steps"] == (15, 16)
  # wd_log is on log10(|g| + 1e-8).
  want = sps.wasserstein_distance(gradients.log_abs(np.zeros(10)), gradients.log_abs(grads.ravel()))
  assert res["panels"]["beginning"]["wd_log"] == pytest.approx(want)
  md = gradients.table4_markdown([("synthetic", None, res, _FakeStore())])
  assert "raw gradient values" in md and "4.0642e-04" in md and "7.1583e-04" in md
  assert "| synthetic | measured here | 30 × 10 | 1.4500e+01 | 7.5000e+00 | 1.4500e+01 |" in md


class _FakeStore:
  directory = "synthetic"
  index = dict(kind="rl", every_nth=1, num_params=5, num_coords=5, num_units=2, complete=True)


@pytest.mark.slow(7)
def test_end_to_end_collection_figures_and_table(tmp_path):
  """Reduced runs: A2C on big_dense_long with collection, the digits stand-in supervised run, analysis."""
  from optim4rl_tf.analysis import supervised

  res = run_command(collect_gradients_command, f"--config={ROOT}/configs/collect.py:bdl_tiny",
                    "--config.env.num_envs=8", f"--config.train_steps={8 * 20 * 32}", "--config.iterations_per_call=16",
                    "--config.console_every_secs=0.0", "--config.plot=False", f"--workdir={tmp_path / 'bdl'}")
  assert res.returncode == 0, res.stderr
  assert res.stdout.strip().endswith(f"gradients written to {tmp_path / 'bdl' / 'grads'}")

  m = collect_configs.get_config("mnist_reduced")
  m.max_steps = 60
  m.steps_per_call = 30
  res_sl = supervised.train(m, str(tmp_path / "mnist"), console=False)
  assert res_sl["stand_in"] and "STAND-IN" in res_sl["dataset"] and res_sl["steps"] == 60
  assert "STAND-IN" in open(tmp_path / "mnist" / "train_log.csv").read()
  idx = json.load(open(tmp_path / "mnist" / "grads" / "index.json"))
  assert idx["stand_in"] and idx["num_coords"] == 402 and idx["num_params"] == 401850

  out = tmp_path / "table4"
  proc = run_command(analyze_gradients_command, f"--grads={tmp_path / 'bdl'}", f"--grads={tmp_path / 'mnist'}",
                     f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  for name in ("fig1_bdl.png", "fig5_mnist.png"):
    data = open(out / name, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
  md = open(out / "table4.md").read()
  assert "| big_dense_long (A2C, rmsprop lr 0.003) | measured here | 32 × 395 |" in md
  assert "| STAND-IN: scikit-learn digits 28x28 | measured here | 60 × 402 |" in md
  assert "| big_dense_long | paper (Table 4) | – | 7.1583e-04 | 1.1726e-04 | 6.7967e-04 |" in md
  assert "MNIST | paper (Table 4; not measured here)" in md  # the stand-in is not MNIST
  assert "raw gradient values" in md and "inference" in md
  js = json.load(open(out / "table4.json"))
  bdl = js["entries"][0]
  store = collect.GradientStore(str(tmp_path / "bdl" / "grads"))
  g = store.load()
  want = sps.wasserstein_distance(g[:2].ravel().astype(np.float64), g.ravel().astype(np.float64))
  assert bdl["wd"]["beginning"] == pytest.approx(want)  # part 1 of 32 steps = steps 0-1
  assert "fig1_bdl.png" in proc.stdout


def test_analyze_missing_collection_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="collect_gradients.py"):
    gradients.run_analysis([str(tmp_path)], str(tmp_path / "o"))


@pytest.mark.parametrize(
    "args,match",
    [((), "--config is required"), (("--config={config}:bdl_tiny",), "--workdir"),
     (("--config={config}:bdl_tiny", "--config.kind=svm", "--workdir={tmp}"), "unknown config kind 'svm'")])
def test_collect_command_refuses_in_one_line(tmp_path, args, match):
  args = [a.format(config=f"{ROOT}/configs/collect.py", tmp=tmp_path / "w") for a in args]
  res = run_command(collect_gradients_command, *args)
  assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "w").exists()


def test_analyze_command_refuses_in_one_line(tmp_path):
  res = run_command(analyze_gradients_command, f"--out={tmp_path / 'o'}")
  assert res.returncode == 2 and "give at least one --grads" in res.stderr
  res = run_command(analyze_gradients_command, f"--grads={tmp_path}", f"--out={tmp_path / 'o'}")
  assert res.returncode == 2 and "collect_gradients.py" in res.stderr and len(res.stderr.strip().splitlines()) == 1
