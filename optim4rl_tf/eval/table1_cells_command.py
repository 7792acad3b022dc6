"""The Table 1 cells command (``optim4rl-table1-cells``, launch/table1_cells.py): each cell meta-trains and
tests one point of the official small_dense_long sweep (optim4rl_tf.eval.table1_cells).

  python launch/table1_cells.py --cells=with:1e-3,without:1e-3 --workdir=runs/table1_cells \
      --results=results/table1_sdl
  python launch/table1_cells.py --collect_only --results=results/table1_sdl     # rebuild cells.json / cells.md

A cell is ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]] (optim4rl_tf.eval.table1_cells.parse_cell): ROW ``with`` or
``without`` pipeline training, CLIP ``norm0.5`` (default) or ``clip1.0``, M the reset interval (72), SEED the
meta seed (0), MLP ``16x16`` for the paper-text heads (default head-free). Cells run one after another; each
resumes from its workdir and writes ``<results>/cells/<name>.json`` when it finishes, then the summary
(``cells.json``, ``cells.md``) is rebuilt.

This module imports no TensorFlow (the experiment is imported by :func:`main`), so that :func:`console` sets
the process up before TensorFlow loads.
"""

from absl import app
from absl import flags
from absl import logging as absl_logging

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_list("cells", [],
                    "Cells to run, in order (ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]]).",
                    flag_values=flag_values)
  flags.DEFINE_string("workdir", "runs/table1_cells", "Root of the cells' run directories.", flag_values=flag_values)
  flags.DEFINE_string("results",
                      "results/table1_sdl",
                      "Where cells/<name>.json, cells.json and cells.md go.",
                      flag_values=flag_values)
  flags.DEFINE_integer("meta_units", 512, "Units per meta-training run.", flag_values=flag_values)
  flags.DEFINE_integer("meta_iterations", 585, "Outer iterations per meta-training run.", flag_values=flag_values)
  flags.DEFINE_integer("num_seeds", 10, "Test seeds per cell.", flag_values=flag_values)
  flags.DEFINE_float("test_steps", 3e7, "Env steps per test seed.", flag_values=flag_values)
  flags.DEFINE_bool("collect_only",
                    False,
                    "Only rebuild cells.json / cells.md from the finished cells.",
                    flag_values=flag_values)


def main(argv, flag_values):
  """The command: runs the ``--cells`` one after another (the summary rebuilt after each), then prints the
  verdict of the summary; with ``--collect_only`` it only rebuilds the summary. A bad cell spec is a usage
  error (one line, exit 2) before anything runs; SIGTERM/SIGINT saves the running cell and ends with one line
  (exit 143/130), as the meta-training launcher does."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.eval import table1_cells  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
  try:
    cells = [table1_cells.parse_cell(s) for s in flag_values.cells]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for cell in [] if flag_values.collect_only else cells:
    # (a signal, a diverged or unwritable run: one error line and the launchers' exit status, run.cli_call)
    rec = run.cli_call(table1_cells.run_cell, cell, flag_values.workdir, flag_values.results, flag_values.meta_units,
                       flag_values.meta_iterations, flag_values.num_seeds, flag_values.test_steps)
    test = rec["test"]
    print(f"[table1] {cell.name}: " + ("diverged, not tested" if test is None else f"{test['mean']:.2f}"), flush=True)
    table1_cells.collect(flag_values.results)
  print(table1_cells.collect(flag_values.results)["verdict"])


def console():
  """The ``optim4rl-table1-cells`` console script (and launch/table1_cells.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
