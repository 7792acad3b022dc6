"""Each optimizer at its best learning rate of one shared grid: the fair comparison of the generalisation
tables (README, "How far they transfer"; issue #25: every optimizer, learned or not, gets the same grid).

* :data:`LRS` -- the grid, {3e-4, 1e-3, 3e-3}.
* :func:`choose` -- the best learning rate of one optimizer on one task from its final returns per seed at
  each rate, the rates where it works (mean within the best's 90% CI) and how many seeds diverged.
* :func:`ratio` -- a return as a fraction of a reference's (Adam's best), None where the reference is not
  positive (a ratio of negative returns reads backwards).

Ranking follows the official analysis (docs/fidelity.md §9.3): mean final return descending, a rate with a
diverged (non-finite) seed after every rate without one.
"""

from typing import NamedTuple, Sequence

import numpy as np

from optim4rl_tf.utils import stats

LRS = (3e-4, 1e-3, 3e-3)


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

  def rank(lr):
    ci, diverged = summaries[lr]
    return (diverged == 0 and ci is not None, ci.mean if ci is not None else -np.inf)

  best = max(sorted(summaries), key=rank)
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
