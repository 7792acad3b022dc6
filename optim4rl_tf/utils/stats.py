"""Result statistics as reported in the paper (docs/fidelity.md §9.3, §4.3).

* :func:`bootstrap_ci` -- percentile bootstrap confidence interval (default 90%) of the mean over runs
  (``scipy.stats.bootstrap``); the paper reports its half-width (high - low) / 2 as "±".
* :func:`final_performance` -- a run's final performance: the mean of its last 20 logged returns.
* :func:`summarize_final` -- both together over runs.
* :func:`ratio_above_floor` -- a result as a share of a baseline's, both counted from a floor.

Shared by the trainers (``agents/*_train.py`` write the final performance into summary.json) and the
reports (``eval/``), so it sits below both (see tests/test_layers.py).
"""

import inspect
from typing import NamedTuple, Sequence

import numpy as np
import scipy.stats


class CI(NamedTuple):
  mean: float
  low: float
  high: float

  @property
  def half_width(self):
    return 0.5 * (self.high - self.low)

  def __str__(self):
    return f"{self.mean:.4g} ± {self.half_width:.3g} (90% CI [{self.low:.4g}, {self.high:.4g}])"


# scipy >= 1.15 names the generator argument ``rng``, older versions ``random_state``.
_RNG_ARG = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def _bootstrap(x, num_resamples, seed, confidence=0.9):
  """``scipy.stats.bootstrap`` of the mean along the last axis of ``x`` [..., n] (n >= 2), percentile
  method, resampled with ``np.random.default_rng(seed)``."""
  return scipy.stats.bootstrap((x,),
                               np.mean,
                               n_resamples=int(num_resamples),
                               vectorized=True,
                               axis=-1,
                               confidence_level=confidence,
                               method="percentile",
                               **{_RNG_ARG: np.random.default_rng(seed)})


def bootstrap_means(values, num_resamples=10000, seed=0, axis=-1):
  """Means of ``num_resamples`` resamples (with replacement) of ``values`` along ``axis``.

  values: array [..., n] (runs on ``axis``). Returns [num_resamples, ...] (scipy's bootstrap
  distribution; seeded numpy generator). One value (n = 1): every resample's mean is that value.
  """
  x = np.moveaxis(np.asarray(values, np.float64), axis, -1)
  n = x.shape[-1]
  if n == 0:
    raise ValueError("bootstrap needs at least one value")
  if n == 1:
    return np.broadcast_to(x[..., 0], (int(num_resamples),) + x.shape[:-1]).copy()
  return np.moveaxis(_bootstrap(x, num_resamples, seed).bootstrap_distribution, -1, 0)


def bootstrap_ci(values, confidence=0.9, num_resamples=10000, seed=0, axis=-1):
  """Percentile bootstrap CI of the mean over runs (``scipy.stats.bootstrap(..., method='percentile')``,
  as the official analysis computes it).

  Args:
    values: 1-D array of per-run numbers (or an array with runs on ``axis``; then every other index gets
      its own interval, e.g. one per logged step for a CI band).
    confidence: coverage, 0.9 = the paper's 90% interval.
    num_resamples: bootstrap resamples.
    seed: numpy seed (deterministic results).

  Returns:
    :class:`CI` (mean, low, high) of floats for 1-D input, else a CI of arrays (the shape of ``values``
    without ``axis``). One run, or runs that all have the same value: the interval is the point (mean,
    mean, mean).
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("bootstrap_ci needs at least one value")
  if not np.all(np.isfinite(x)):
    raise ValueError("bootstrap_ci got non-finite values")
  runs = np.moveaxis(x, axis, -1)  # [..., n]
  mean = runs.mean(axis=-1)
  point = np.ptp(runs, axis=-1) == 0  # one run, or a constant sample
  if np.all(point):
    low = high = mean
  else:
    interval = _bootstrap(runs, num_resamples, seed, confidence).confidence_interval
    low, high = np.where(point, mean, interval.low), np.where(point, mean, interval.high)
  if x.ndim == 1:
    return CI(float(mean), float(low), float(high))
  return CI(mean, np.asarray(low), np.asarray(high))


def ratio_above_floor(value, reference, floor=0.0):
  """(value - floor) / (reference - floor): ``value`` as a share of ``reference``, both counted from ``floor``
  (the return of a policy that learns nothing: 0, or e.g. -500 on Acrobot-v1, whose returns are negative).
  None when either is missing or the reference is not above the floor."""
  if value is None or reference is None or not reference > floor:
    return None
  return (value - floor) / (reference - floor)


def final_performance(returns, last=20):
  """Mean of the last ``last`` logged returns of one run (1-D sequence in logging order)."""
  r = np.asarray(returns, np.float64).reshape(-1)
  if r.size == 0:
    return float("nan")
  return float(r[-last:].mean())


def summarize_final(returns_per_run: Sequence[Sequence[float]], last=20, confidence=0.9, num_resamples=10000, seed=0):
  """(per-run final performances, CI of their mean over runs). Runs without any logged return are
  left out of the interval (a ValueError if none has one)."""
  finals = np.array([final_performance(r, last) for r in returns_per_run])
  ok = finals[np.isfinite(finals)]
  if ok.size == 0:
    raise ValueError("no run has a logged return")
  return finals, bootstrap_ci(ok, confidence, num_resamples, seed)
