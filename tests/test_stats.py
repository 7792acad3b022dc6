"""Percentile bootstrap CI and final performance (docs/fidelity.md §9.3, §4.3), and the returns plot."""

import itertools
import os

import numpy as np
import pytest
import scipy.stats

from optim4rl_tf.utils import plots
from optim4rl_tf.utils import stats


def scipy_ci(x, confidence=0.9, num_resamples=10000, seed=0, axis=-1):
  """The interval straight from scipy (percentile method, the official analysis' call)."""
  res = scipy.stats.bootstrap((np.asarray(x, np.float64),),
                              np.mean,
                              n_resamples=num_resamples,
                              axis=axis,
                              confidence_level=confidence,
                              method="percentile",
                              rng=np.random.default_rng(seed))
  return res.confidence_interval


def test_bootstrap_two_values_exact_percentiles():
  # Resample means of {0, 1} (n = 2): 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 5%/95% percentiles 0 and 1.
  ci = stats.bootstrap_ci([0.0, 1.0], seed=0)
  assert ci == (0.5, 0.0, 1.0)
  assert ci.half_width == 0.5


def test_bootstrap_matches_exact_resampling_distribution():
  x = np.array([0.0, 1.0, 5.0])
  # Exact bootstrap distribution of the mean: all 3^3 equally likely index tuples.
  means = np.sort([x[list(idx)].mean() for idx in itertools.product(range(3), repeat=3)])
  cdf = np.cumsum(np.full(len(means), 1.0 / len(means)))
  lo_exact = means[np.searchsorted(cdf, 0.05)]  # P(mean <= 0) = 1/27 < 5% < P(mean <= 1/3) = 4/27
  hi_exact = means[np.searchsorted(cdf, 0.95)]
  assert (lo_exact, hi_exact) == (pytest.approx(1 / 3), pytest.approx(11 / 3))
  ci = stats.bootstrap_ci(x, num_resamples=100000, seed=1)
  assert ci.mean == pytest.approx(2.0)
  assert ci.low == pytest.approx(lo_exact, abs=1e-9) and ci.high == pytest.approx(hi_exact, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_is_scipys_percentile_interval(seed):
  x = np.random.default_rng(seed).lognormal(size=25)
  ci = stats.bootstrap_ci(x, confidence=0.8, num_resamples=3000, seed=seed)
  want = scipy_ci(x, confidence=0.8, num_resamples=3000, seed=seed)
  assert (ci.low, ci.high) == (pytest.approx(want.low, rel=1e-12), pytest.approx(want.high, rel=1e-12))
  assert ci.mean == pytest.approx(np.mean(x))


def test_bootstrap_normal_approximation_and_determinism():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, size=400)
  ci = stats.bootstrap_ci(x, confidence=0.9, seed=3)
  se = x.std() / np.sqrt(len(x))
  assert ci.half_width == pytest.approx(1.6449 * se, rel=0.05)
  assert ci.low < x.mean() < ci.high
  assert stats.bootstrap_ci(x, seed=3) == ci  # seeded
  assert stats.bootstrap_ci(x, seed=4) != ci


def test_bootstrap_covers_a_known_mean():
  """400 synthetic experiments of 30 runs drawn from N(1, 2^2): the 90% interval covers the true mean 1 in
  about 90% of them (the percentile interval under-covers a little at n = 30: ~88%)."""
  runs = np.random.default_rng(1).normal(1.0, 2.0, size=(400, 30))  # [experiments, runs]
  band = stats.bootstrap_ci(runs, num_resamples=2000, seed=1, axis=1)
  assert band.low.shape == band.high.shape == (400,)
  assert np.all(band.low <= band.mean) and np.all(band.mean <= band.high)
  coverage = np.mean((band.low <= 1.0) & (1.0 <= band.high))
  assert 0.84 <= coverage <= 0.95


def test_bootstrap_one_run_and_constant_runs():
  assert stats.bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)  # one run: scipy needs two
  assert stats.bootstrap_ci([2.0] * 5) == (2.0, 2.0, 2.0)
  ci = stats.bootstrap_ci([0.1] * 7)
  assert ci.low == ci.mean == ci.high == pytest.approx(0.1)
  band = stats.bootstrap_ci(np.array([[0.3, 0.3, 0.3], [0.0, 1.0, 1.0]]), axis=1)
  assert band.low[0] == band.high[0] == band.mean[0]
  want = scipy_ci([0.0, 1.0, 1.0])
  assert (band.low[1], band.high[1]) == (pytest.approx(want.low), pytest.approx(want.high))
  one = stats.bootstrap_ci(np.array([[1.0], [4.0]]), axis=1)
  np.testing.assert_array_equal(one.low, [1.0, 4.0])
  np.testing.assert_array_equal(one.high, [1.0, 4.0])


def test_bootstrap_band_along_axis():
  vals = np.stack([np.zeros(4), np.ones(4)], axis=1)  # [points, runs]
  band = stats.bootstrap_ci(vals, axis=1)
  np.testing.assert_array_equal(band.mean, [0.5] * 4)
  np.testing.assert_array_equal(band.low, [0.0] * 4)
  np.testing.assert_array_equal(band.high, [1.0] * 4)
  same = stats.bootstrap_ci(vals.T, axis=0)
  np.testing.assert_array_equal(same.low, band.low)


def test_bootstrap_means_distribution():
  x = np.random.default_rng(2).normal(size=50)
  means = stats.bootstrap_means(x, num_resamples=4000, seed=2)
  assert means.shape == (4000,)
  assert np.mean(means) == pytest.approx(np.mean(x), abs=0.02)
  assert np.std(means) == pytest.approx(np.std(x) / np.sqrt(50), rel=0.1)  # standard error of the mean
  np.testing.assert_array_equal(stats.bootstrap_means(x, 4000, seed=2), means)
  assert stats.bootstrap_means(np.ones((3, 2)), 10, axis=0).shape == (10, 2)
  np.testing.assert_array_equal(stats.bootstrap_means([4.0], 5), [4.0] * 5)


def test_bootstrap_errors():
  with pytest.raises(ValueError):
    stats.bootstrap_ci([])
  with pytest.raises(ValueError):
    stats.bootstrap_ci([1.0, np.nan])
  with pytest.raises(ValueError):
    stats.bootstrap_ci([1.0], confidence=1.5)
  with pytest.raises(ValueError):
    stats.bootstrap_means([])


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


def test_ratio_above_floor_counts_both_results_from_the_floor():
  assert stats.ratio_above_floor(340.0, 400.0) == pytest.approx(0.85)  # floor 0: a plain ratio
  assert stats.ratio_above_floor(-180.0, -100.0, floor=-500.0) == pytest.approx(0.8)  # (500 - 180) / (500 - 100)
  assert stats.ratio_above_floor(-120.0, -100.0) is None  # the reference is not above the floor
  assert stats.ratio_above_floor(None, 400.0) is None and stats.ratio_above_floor(1.0, None) is None
