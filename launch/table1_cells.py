"""Table 1 (small_dense_long) cell by cell: each cell meta-trains and tests one point of the official sweep.

  python launch/table1_cells.py --cells=with:1e-3,without:1e-3 --workdir=runs/table1_cells \
      --results=results/table1_sdl
  python launch/table1_cells.py --collect_only --results=results/table1_sdl     # rebuild cells.json / cells.md
  optim4rl-table1-cells ...                                               # the same, installed with pip

A shell around optim4rl_tf.eval.table1_cells_command (its flags and the cell specs: see that module).
"""
from optim4rl_tf.eval import table1_cells_command

if __name__ == "__main__":
  table1_cells_command.console()
