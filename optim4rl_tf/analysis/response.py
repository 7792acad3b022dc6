"""What an optimizer's update does with the gradients it is given: its step size against the gradient's scale and
signal-to-noise ratio (the ``optim4rl-optimizer-response`` command, launch/optimizer_response.py).

A learned optimizer's GRUs read the raw gradient (Optim4RL: ``g`` and ``g²``), so what it computes depends on
the scale of the gradients a task produces. This module measures it on synthetic gradient streams, one
independent coordinate per stream, all at once (the cores are coordinatewise)::

  g_t = scale · (snr · sigma + eps_t),   sigma = ±1 fixed per coordinate,   eps_t ~ N(0, 1) (stateless, seeded)

For every (scale, snr) cell, ``coords`` coordinates run ``steps`` updates from the zero state; after ``burn_in``
steps it records, per unit learning rate (the optimizer is called with lr 1):

  * ``step``:  mean |update|, the size of a step;
  * ``drift``: mean of ``-update · sigma``, how far a step moves along the gradient's consistent direction.

Adam's step shrinks on pure noise (snr 0: about 0.2) and is about 1 on a consistent gradient at any scale above
its epsilon; a step that is the same at every snr ignores the gradient's history: the update is then
``sign(g) · c · lr``, sign descent with a constant step ``c``. ``history_blind_below`` is the largest measured
scale up to which (from the smallest) the steps of the snr 0 and the largest-snr streams differ by less than
``BLIND_TOLERANCE`` (relative); ``None`` if even the smallest does not.

Optimizers: ``adam`` and ``rmsprop`` (``optimizers/classical.py``, optax's defaults), a shipped learned
optimizer by name (``optim4rl_tf.pretrained.names()``) or a meta-parameter file ``PATH.npz`` of a GRU optimizer
(Optim4RL, LinearOptim, L2LGD²; STAR's update also reads the parameters, so a STAR file is refused).
"""

import os

import numpy as np
import tensorflow as tf

from optim4rl_tf import pretrained
from optim4rl_tf.optimizers import classical
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import meta_params as meta_params_lib

SCALES = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
SNRS = (0.0, 0.3, 1.0, 3.0)
BLIND_TOLERANCE = 0.05
CLASSICAL = ("adam", "rmsprop")


def step_function(spec):
  """``(init, step, label)`` of an optimizer spec: ``init(param [C]) -> state``, ``step(state, g [C]) -> (update
  [C], state)`` at learning rate 1. ``spec``: adam | rmsprop | a shipped name | PATH.npz (ValueError otherwise)."""
  if spec == "adam":
    return classical.adam_init, lambda s, g: classical.adam_update(s, g, 1.0), "Adam"
  if spec == "rmsprop":
    return classical.rmsprop_init, lambda s, g: classical.rmsprop_update(s, g, 1.0), "RMSProp"
  if spec.endswith(".npz"):
    if not os.path.isfile(spec):
      raise ValueError(f"no meta-parameter file {spec!r}")
    path, label = spec, os.path.basename(spec)
  elif spec in pretrained.available():
    path, label = pretrained.path(spec), spec
  else:
    raise ValueError(f"unknown optimizer {spec!r}: give adam, rmsprop, a shipped learned optimizer "
                     f"({', '.join(pretrained.available())}) or a meta-parameter file PATH.npz")
  name = meta_params_lib.read_meta(path).get("optimizer", "optim4rl")
  if name not in cores.CORES:
    raise ValueError(f"{spec!r} is a {name} file; the response is measured for the coordinatewise GRU optimizers "
                     f"({', '.join(cores.LEARNED_NAMES)}), whose update reads only the gradient")
  core, phi = meta_params_lib.resolve(name, meta_params=path)
  phi = {k: tf.constant(v) for k, v in phi.items()}
  update = core.compiled_update()  # the fixed-phi XLA step the package shares between cores of one kind
  return core.init_state, lambda s, g: update(phi, s, g, 1.0), label


def measure(spec, scales=SCALES, snrs=SNRS, coords=512, steps=200, burn_in=100, seed=0):
  """Runs the synthetic streams through optimizer ``spec``.

  Returns a dict: ``label``; ``step`` and ``drift``, float arrays [len(scales), len(snrs)] (per unit lr);
  ``history_blind_below`` (float or None) and ``sign_step`` (the mean step there, or None).
  """
  scales, snrs = [float(s) for s in scales], [float(r) for r in snrs]
  if not scales or not snrs or min(scales) <= 0 or min(snrs) < 0:
    raise ValueError(f"scales must be positive and snrs non-negative, non-empty; got {scales}, {snrs}")
  if not 0 <= burn_in < steps or coords <= 0:
    raise ValueError(f"need coords > 0 and 0 <= burn_in < steps; got {coords}, {burn_in}, {steps}")
  init, step, label = step_function(spec)
  ns, nr = len(scales), len(snrs)
  n = ns * nr * coords  # cell-major: [scale, snr, coordinate]
  scale = tf.constant(np.repeat(scales, nr * coords), tf.float32)
  snr = tf.constant(np.tile(np.repeat(snrs, coords), ns), tf.float32)
  sigma = tf.sign(tf.random.stateless_uniform([n], [seed, 0], -1.0, 1.0))

  state = init(tf.zeros([n]))
  size, along = tf.zeros([n]), tf.zeros([n])
  for t in range(steps):  # a few hundred steps, each one call (a compiled one for the learned cores)
    eps = tf.random.stateless_normal([n], [seed, t + 1])
    u, state = step(state, scale * (snr * sigma + eps))
    if t >= burn_in:
      size, along = size + tf.abs(u), along - u * sigma
  size, along = (x.numpy().reshape(ns, nr, coords).mean(-1) / (steps - burn_in) for x in (size, along))
  blind, sign_step = None, None
  for i, s in enumerate(scales):
    if abs(size[i, -1] - size[i, 0]) >= BLIND_TOLERANCE * size[i].mean():
      break
    blind, sign_step = s, float(size[:i + 1].mean())
  return {"label": label, "step": size, "drift": along, "history_blind_below": blind, "sign_step": sign_step}


def table_markdown(results, scales, snrs):
  """A markdown table: one row per (optimizer, scale), ``step / drift`` per snr."""
  lines = [
      "| optimizer | gradient scale | " + " | ".join(f"snr {r:g}: step / drift" for r in snrs) + " |",
      "|---|---|" + "---|" * len(snrs)
  ]
  for res in results:
    for i, s in enumerate(scales):
      cells = " | ".join(f"{res['step'][i, j]:.3g} / {res['drift'][i, j]:.3g}" for j in range(len(snrs)))
      lines.append(f"| {res['label']} | {s:g} | {cells} |")
  return "\n".join(lines)


def summary_lines(results):
  """One plain sentence per optimizer: where it ignores the gradient's history."""
  out = []
  for res in results:
    if res["history_blind_below"] is None:
      out.append(f"{res['label']}: its step depends on the gradient's history at every measured scale.")
    else:
      out.append(f"{res['label']}: up to gradient scale {res['history_blind_below']:g} its step is the same "
                 f"whatever the signal-to-noise ratio: sign descent, update = -sign(g) * "
                 f"{res['sign_step']:.3g} * lr.")
  return out


def plot(results, scales, snrs, path):
  """Step size against gradient scale, one panel per optimizer, one line per snr (log-log)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.4), squeeze=False, sharey=True)
  for ax, res in zip(axes[0], results):
    for j, r in enumerate(snrs):
      ax.plot(scales, res["step"][:, j], marker="o", ms=3, label=f"snr {r:g}")
    if res["history_blind_below"] is not None:
      ax.axvspan(min(scales), res["history_blind_below"], color="0.9", zorder=0, label="history-blind")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(res["label"])
    ax.set_xlabel("gradient scale")
  axes[0][0].set_ylabel("|update| / lr")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
