"""The gradient analysis command (``optim4rl-analyze-gradients``, launch/analyze_gradients.py): Fig. 1 / Fig. 5
histograms and Table 4 Wasserstein distances from collected gradients (docs/fidelity.md §8;
optim4rl_tf.analysis.gradients).

  python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4

Each --grads is a launch/collect_gradients.py workdir (or its grads/ directory). Writes into --out:
fig1_<name>.png (RL collections), fig5_<name>.png (supervised ones), table4.md (measured beside the paper's
numbers) and table4.json. The distances are computed on the raw gradient values (see table4.md).
"""

from absl import app
from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_multi_string("grads", [],
                            "Collection workdir(s) (repeat the flag for several).",
                            flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output directory for figures and table4.md.", flag_values=flag_values)
  flags.DEFINE_integer("num_parts", 30, "Consecutive parts along time (paper: 30).", flag_values=flag_values)


def main(argv, flag_values):
  """The command: analyses the ``--grads`` collections into ``--out`` and prints the table and the paths. A
  missing or unreadable collection: one line ``error: ...``, exit 2."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flag_values.grads:
    raise app.UsageError("give at least one --grads=WORKDIR")
  if not flag_values.out:
    raise app.UsageError("--out is required")
  from optim4rl_tf.analysis import gradients  # pylint: disable=import-outside-toplevel  (scipy, matplotlib)
  try:
    res = gradients.run_analysis(flag_values.grads, flag_values.out, num_parts=flag_values.num_parts)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  with open(res["table"]) as f:
    print(f.read())
  for p in res["figures"]:
    print(f"figure: {p}")
  print(f"table: {res['table']}")


def console():
  """The ``optim4rl-analyze-gradients`` console script (and launch/analyze_gradients.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
