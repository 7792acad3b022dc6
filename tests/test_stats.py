"""Percentile bootstrap CI and final performance (docs/fidelity.md §9.3, §4.3), and the returns plot."""

import itertools
import os

import numpy as np
import pytest

from optim4rl_tf.utils import plots
from optim4rl_tf.utils import stats


def test_bootstrap_two_values_exact_percentiles():
  # Resample means of {0, 1} (n = 2): 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 5%/95% percentiles 0 and 1.
  ci = stats.bootstrap_ci([0.0, 1.0], seed=0)
  assert ci == (0.5, 0.0, 1.0)
  assert ci.half_width == 0.5


def test_bootstrap_matches_exact_resampling_distribution():
  x = np.array([0.0, 1.0, 5.0])
  # Exact bootstrap distribution of the mean: all 3^3 equally likely index tuples.
  means = np.sort([x[list(idx)].mean() for idx in itertools.product(range(3), repeat=3)])
  w = np.full(len(means), 1.0 / len(means))
  cdf = np.cumsum(w)
  lo_exact = means[np.searchsorted(cdf, 0.05)]
  hi_exact = means[np.searchsorted(cdf, 0.95)]
  ci = stats.bootstrap_ci(x, num_resamples=100000, seed=1)
  assert ci.mean == pytest.approx(2.0)
  assert ci.low == pytest.approx(lo_exact, abs=0.34)   # quantiles of a discrete law, up to one atom
  assert ci.high == pytest.approx(hi_exact, abs=0.34)
  assert ci.low == pytest.approx(1 / 3, abs=1e-9) and ci.high == pytest.approx(11 / 3, abs=1e-9)


def test_bootstrap_normal_approximation_and_determinism():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, size=400)
  ci = stats.bootstrap_ci(x, confidence=0.9, seed=3)
  se = x.std() / np.sqrt(len(x))
  assert ci.half_width == pytest.approx(1.6449 * se, rel=0.05)
  assert ci.low < x.mean() < ci.high
  assert stats.bootstrap_ci(x, seed=3) == ci                  # seeded
  assert stats.bootstrap_ci([2.0] * 5) == (2.0, 2.0, 2.0)


def test_bootstrap_band_along_axis():
  vals = np.stack([np.zeros(4), np.ones(4)], axis=1)          # [points, runs]
  band = stats.bootstrap_ci(vals, axis=1)
  np.testing.assert_array_equal(band.mean, [0.5] * 4)
  np.testing.assert_array_equal(band.low, [0.0] * 4)
  np.testing.assert_array_equal(band.high, [1.0] * 4)


def test_bootstrap_errors():
  with pytest.raises(ValueError):
    stats.bootstrap_ci([])
  with pytest.raises(ValueError):
    stats.bootstrap_ci([1.0, np.nan])
  with pytest.raises(ValueError):
    stats.bootstrap_ci([1.0], confidence=1.5)


def test_final_performance_last_20():
  r = np.arange(50, dtype=float)
  assert stats.final_performance(r) == pytest.approx(np.arange(30, 50).mean())
  assert stats.final_performance([1.0, 3.0]) == 2.0
  assert np.isnan(stats.final_performance([]))
  finals, ci = stats.summarize_final([r, r + 1.0, []])
  assert finals[0] == pytest.approx(39.5) and finals[1] == pytest.approx(40.5) and np.isnan(finals[2])
  assert ci.mean == pytest.approx(40.0)


def test_plot_returns(tmp_path):
  path = tmp_path / "returns.csv"
  with open(path, "w") as f:
    f.write("step,seed,return\n")
    for step in range(0, 1000, 100):
      for seed in range(3):
        if not (seed == 2 and step == 0):
          f.write(f"{step},{seed},{step / 1000 + seed * 0.1}\n")
  runs = plots.read_returns_csv(path)
  assert sorted(runs) == [0, 1, 2] and len(runs[2][0]) == 9
  grid, vals = plots.curves_on_grid(runs, num_points=5)
  assert grid[0] == 100 and grid[-1] == 900 and vals.shape == (5, 3)
  out = plots.plot_returns(str(path), str(tmp_path / "returns.png"), title="t")
  assert os.path.getsize(out) > 1000
