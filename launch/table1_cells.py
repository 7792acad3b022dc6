"""Table 1 (small_dense_long) cell by cell: each cell meta-trains and tests one point of the official sweep.

  python launch/table1_cells.py --cells=with:1e-3,without:1e-3 --workdir=runs/table1_cells \
      --results=results/table1_sdl
  python launch/table1_cells.py --collect_only --results=results/table1_sdl     # rebuild cells.json / cells.md

A cell is ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]] (optim4rl_tf.eval.table1_cells.parse_cell): ROW ``with`` or
``without`` pipeline training, CLIP ``norm0.5`` (default) or ``clip1.0``, M the reset interval (72), SEED the
meta seed (0), MLP ``16x16`` for the paper-text heads (default head-free). Cells run one after another; each
resumes from its workdir and writes ``<results>/cells/<name>.json`` when it finishes, then the summary
(``cells.json``, ``cells.md``) is rebuilt.
"""
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

flags.DEFINE_list("cells", [], "Cells to run, in order (ROW:META_LR[:CLIP[:M[:SEED[:MLP]]]]).")
flags.DEFINE_string("workdir", "runs/table1_cells", "Root of the cells' run directories.")
flags.DEFINE_string("results", "results/table1_sdl", "Where cells/<name>.json, cells.json and cells.md go.")
flags.DEFINE_integer("meta_units", 512, "Units per meta-training run.")
flags.DEFINE_integer("meta_iterations", 585, "Outer iterations per meta-training run.")
flags.DEFINE_integer("num_seeds", 10, "Test seeds per cell.")
flags.DEFINE_float("test_steps", 3e7, "Env steps per test seed.")
flags.DEFINE_bool("collect_only", False, "Only rebuild cells.json / cells.md from the finished cells.")
FLAGS = flags.FLAGS


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.eval import table1_cells
  try:
    cells = [table1_cells.parse_cell(s) for s in FLAGS.cells]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for cell in [] if FLAGS.collect_only else cells:
    rec = table1_cells.run_cell(cell, FLAGS.workdir, FLAGS.results, FLAGS.meta_units, FLAGS.meta_iterations,
                                FLAGS.num_seeds, FLAGS.test_steps)
    test = rec["test"]
    print(f"[table1] {cell.name}: " + ("diverged, not tested" if test is None else f"{test['mean']:.2f}"), flush=True)
    table1_cells.collect(FLAGS.results)
  print(table1_cells.collect(FLAGS.results)["verdict"])


if __name__ == "__main__":
  runtime.configure_process()
  from optim4rl_tf.utils import cli  # noqa: E402
  cli.run(main)
