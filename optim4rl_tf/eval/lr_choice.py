"""Each optimizer at its best learning rate of one shared grid: the fair comparison of the generalisation
tables (README, "How far they transfer"; issue #25: every optimizer, learned or not, gets the same grid).

* :data:`LRS` -- the grid, {3e-4, 1e-3, 3e-3}.
* :func:`choose` -- the best learning rate of one optimizer on one task from its final returns per seed at
  each rate, the rates where it works (mean within the best's 90% CI) and how many seeds diverged.
* :func:`ratio` -- a return as a fraction of a reference's (Adam's best), None where the reference is not
  positive (a ratio of negative returns reads backwards).
* :func:`check_grid` -- a grid as given by a user: sorted, checked, one entry per rate.

Ranking follows the official analysis (docs/fidelity.md §9.3, ``eval/ranking.py``): a rate with a diverged
(non-finite) seed after every rate without one, then mean final return descending, ties by the standard
error of the mean (ascending; numpy ``std`` with ddof 0 over sqrt(n)).
"""

import math
from typing import NamedTuple, Sequence

import numpy as np

from optim4rl_tf.utils import stats

LRS = (3e-4, 1e-3, 3e-3)


def check_grid(lrs, name="learning rates"):
  """``lrs`` (numbers) as a sorted tuple of floats without repeats; ValueError naming ``name`` for an empty
  grid, a rate that is not a positive finite number, or two rates that print alike (``%g``: their runs
  would share a folder)."""
  values = list(lrs)
  number = lambda x: isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
  if not values or any(not number(lr) or not math.isfinite(lr) or lr <= 0 for lr in values):
    raise ValueError(f"{name} must be positive numbers, got {values}")
  grid = sorted({float(lr) for lr in values})
  texts = [f"{lr:g}" for lr in grid]
  if len(set(texts)) < len(texts):
    raise ValueError(f"{name} {values}: two rates print alike as %g ({', '.join(texts)}); use rates that differ "
                     "in the first 6 digits")
  return tuple(grid)


class Choice(NamedTuple):
  """One optimizer's best rate on one task.

  lr: the best rate. ci: :class:`stats.CI` of its mean final return over its finite seeds (None: every seed
  diverged at every rate). diverged: the best rate's non-finite seeds. works_at: the rates (ascending) whose
  mean final return is at least the best's CI low and that have no diverged seed.
  """
  lr: float
  ci: object
  diverged: int
  works_at: tuple


def _summary(finals):
  x = np.asarray(finals, np.float64)
  ok = x[np.isfinite(x)]
  return (stats.bootstrap_ci(ok) if ok.size else None), int(x.size - ok.size)


def choose(finals_by_lr):
  """``finals_by_lr``: {lr (float): final return per seed (sequence; NaN = a diverged seed)}, at least one
  rate. Returns the :class:`Choice`."""
  if not finals_by_lr:
    raise ValueError("choose needs the final returns of at least one learning rate")
  summaries = {float(lr): _summary(f) for lr, f in finals_by_lr.items()}
  finals = {float(lr): np.asarray(f, np.float64) for lr, f in finals_by_lr.items()}

  def rank(lr):  # ascending = better
    ci, diverged = summaries[lr]
    ok = finals[lr][np.isfinite(finals[lr])]
    se = float(np.std(ok) / np.sqrt(ok.size)) if ok.size else np.inf
    return (diverged > 0 or ci is None, -ci.mean if ci is not None else np.inf, se)

  best = min(sorted(summaries), key=rank)
  ci, diverged = summaries[best]
  works = tuple(
      sorted(
          lr for lr, (c, d) in summaries.items() if ci is not None and c is not None and d == 0 and c.mean >= ci.low))
  return Choice(lr=best, ci=ci, diverged=diverged, works_at=works)


def ratio(value, reference):
  """``value / reference`` (floats), None where ``reference`` is not a positive finite number."""
  if reference is None or not np.isfinite(reference) or reference <= 0 or value is None:
    return None
  return float(value) / float(reference)


def lr_text(lrs: Sequence[float]):
  """'0.0003, 0.001' (the rates as %g, in order)."""
  return ", ".join(f"{lr:g}" for lr in lrs)
