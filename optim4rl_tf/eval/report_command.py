"""The report command (``optim4rl-report``, launch/report.py): the paper's Figure 3/4 panels and Table 1 (PNG +
Markdown) from sweep workdirs (optim4rl_tf.eval.report).

  # Figure 3, Catch panel: one LABEL=PATH per optimizer (PATH: a workdir, a sweep dir or a glob)
  python launch/report.py --out=reports/catch \
      --panel='catch:Adam=runs/a2c_catch_adam,RMSProp=runs/a2c_catch_rmsprop,Optim4RL=runs/lopt_rl_catch'
  # Figure 4 panels carry a prefix: --panel='figure4/ant:Optim4RL=runs/lopt_rl_grid_ant,Adam=runs/ppo_ant_adam'
  # Table 1 (pipeline ablation), one flag per task:
  python launch/report.py --out=reports/table1 \
      --table1='small_dense_long:with=runs/lopt_rl_sdl,without=runs/lopt_rlp_sdl'

For every optimizer the configurations found under PATH are ranked by mean final return (ties by standard
error) and the best is shown, with a 90% percentile-bootstrap CI over runs (one run = one seed of one
workdir). Writes report.md, report.json and one PNG per panel (plus figureN.png with all panels of a figure).

This module imports no TensorFlow (the report is imported by :func:`main`), so that :func:`console` sets the
process up before TensorFlow loads.
"""

from absl import app
from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_string("out", None, "Output directory for report.md, report.json and the PNGs.", flag_values=flag_values)
  flags.DEFINE_multi_string("panel", [], "[FIGURE/]TASK:LABEL=PATH[,LABEL=PATH...] (FIGURE defaults to "
                            "figure3).",
                            flag_values=flag_values)
  flags.DEFINE_multi_string("table1", [], "TASK:with=PATH,without=PATH (TASK: small_dense_long, "
                            "big_dense_long, ant, humanoid).",
                            flag_values=flag_values)
  flags.DEFINE_enum("agent",
                    "auto", ["auto", "a2c", "ppo"], "Final performance: a2c = mean of the "
                    "last 20 logged returns, ppo = mean of the last 2 evaluations; auto from the config.",
                    flag_values=flag_values)
  flags.DEFINE_float("confidence", 0.9, "Bootstrap CI coverage.", flag_values=flag_values)
  flags.DEFINE_integer("resamples", 10000, "Bootstrap resamples.", flag_values=flag_values)
  flags.DEFINE_integer("num_points", 200, "Points of the common step grid of the curves.", flag_values=flag_values)
  flags.DEFINE_integer("smooth", 1, "Moving-average window (logged returns) before plotting.", flag_values=flag_values)
  flags.DEFINE_integer("top", 5, "Configurations listed per optimizer in the ranking.", flag_values=flag_values)
  flags.DEFINE_string("title", "Optim4RL-TF reproduction report", "Report title.", flag_values=flag_values)


def main(argv, flag_values):
  """The command: writes the report of the ``--panel`` and ``--table1`` specs into ``--out`` and prints its
  path. A bad spec or a PATH without runs: one line ``error: ...``, exit 2."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flag_values.out:
    raise app.UsageError("--out is required")
  if not flag_values.panel and not flag_values.table1:
    raise app.UsageError("give at least one --panel or --table1")
  from optim4rl_tf.eval import report  # pylint: disable=import-outside-toplevel  (TensorFlow)
  try:
    path = report.write_report(flag_values.out,
                               panels=flag_values.panel,
                               table1=flag_values.table1,
                               agent=flag_values.agent,
                               confidence=flag_values.confidence,
                               num_resamples=flag_values.resamples,
                               num_points=flag_values.num_points,
                               smooth=flag_values.smooth,
                               top=flag_values.top,
                               title=flag_values.title)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  print(f"wrote {path}")


def console():
  """The ``optim4rl-report`` console script (and launch/report.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
