"""The optimizer-response command (``optim4rl-optimizer-response``, launch/optimizer_response.py): an optimizer's
step size against the gradient's scale and signal-to-noise ratio (optim4rl_tf.analysis.response).

  python launch/optimizer_response.py --optimizers=inverted_pendulum,catch,grid6,adam --out=runs/response
  python launch/optimizer_response.py --optimizers=runs/meta/phi.npz,adam --out=runs/response_mine

Prints, per optimizer, the gradient scale below which its step ignores the gradient's history (sign descent
with a constant step), and the table of step / drift per unit learning rate. Writes into --out:
response.md (the sentences and the table), response.json (every number and the settings) and response.png
(step size against gradient scale, one line per signal-to-noise ratio). Compare the scales with your task's
gradients (after clipping): where they fall inside an optimizer's history-blind range, its update there is
``-sign(g) * c * lr``.

This module imports no TensorFlow (the measurement is imported by :func:`main`), so that :func:`console` sets
the process up before TensorFlow loads.
"""

import json
import os

from absl import app
from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_list("optimizers", ["inverted_pendulum", "adam"],
                    "adam, rmsprop, shipped learned optimizers by name, or meta-parameter files PATH.npz.",
                    flag_values=flag_values)
  flags.DEFINE_string("out",
                      None,
                      "Output directory (response.md, response.json, response.png).",
                      flag_values=flag_values)
  flags.DEFINE_list("scales", None, "Gradient scales (default: 1e-4 ... 10).", flag_values=flag_values)
  flags.DEFINE_list("snrs", None, "Signal-to-noise ratios (default: 0, 0.3, 1, 3).", flag_values=flag_values)
  flags.DEFINE_integer("coords", 512, "Coordinates per (scale, snr) cell.", flag_values=flag_values)
  flags.DEFINE_integer("steps", 200, "Updates per stream.", flag_values=flag_values)
  flags.DEFINE_integer("burn_in", 100, "Updates before the averages start.", flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of the synthetic gradients.", flag_values=flag_values)


def _floats(values, name, default):
  if values is None:
    return default
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{name} must be numbers, got {','.join(values)}") from None


def main(argv, flag_values):
  """The command: measures every optimizer, prints the summary and the table, writes --out. A bad optimizer
  spec or setting: one line ``error: ...``, exit 2."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flag_values.out:
    raise app.UsageError("--out is required")
  if not flag_values.optimizers:
    raise app.UsageError("give at least one optimizer in --optimizers")
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from optim4rl_tf.analysis import response
  scales = _floats(flag_values.scales, "scales", response.SCALES)
  snrs = _floats(flag_values.snrs, "snrs", response.SNRS)
  try:
    results = [
        response.measure(spec,
                         scales,
                         snrs,
                         coords=flag_values.coords,
                         steps=flag_values.steps,
                         burn_in=flag_values.burn_in,
                         seed=flag_values.seed) for spec in flag_values.optimizers
    ]
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  summary = response.summary_lines(results)
  table = response.table_markdown(results, scales, snrs)
  os.makedirs(flag_values.out, exist_ok=True)
  with open(os.path.join(flag_values.out, "response.md"), "w", encoding="utf-8") as f:
    f.write("# Step size against gradient scale and signal-to-noise ratio (per unit lr)\n\n")
    f.write("\n".join(f"- {line}" for line in summary) + "\n\n" + table + "\n")
  settings = {
      "scales": list(scales),
      "snrs": list(snrs),
      "coords": flag_values.coords,
      "steps": flag_values.steps,
      "burn_in": flag_values.burn_in,
      "seed": flag_values.seed,
      "blind_tolerance": response.BLIND_TOLERANCE
  }
  numbers = {
      spec: {
          "label": r["label"],
          "step": r["step"].tolist(),
          "drift": r["drift"].tolist(),
          "history_blind_below": r["history_blind_below"],
          "sign_step": r["sign_step"]
      } for spec, r in zip(flag_values.optimizers, results)
  }
  with open(os.path.join(flag_values.out, "response.json"), "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "optimizers": numbers}, f, indent=1)
  response.plot(results, scales, snrs, os.path.join(flag_values.out, "response.png"))
  print("\n".join(summary) + "\n\n" + table)
  print(f"written: {os.path.join(flag_values.out, 'response.md')}, response.json, response.png")


def console():
  """The ``optim4rl-optimizer-response`` console script (and launch/optimizer_response.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
