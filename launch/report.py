"""Writes the paper's Figure 3/4 panels and Table 1 (PNG + Markdown) from sweep workdirs.

  # Figure 3, Catch panel: one LABEL=PATH per optimizer (PATH: a workdir, a sweep dir or a glob)
  python launch/report.py --out=reports/catch \
      --panel='catch:Adam=runs/a2c_catch_adam,RMSProp=runs/a2c_catch_rmsprop,Optim4RL=runs/lopt_rl_catch,STAR=runs/lopt_star_catch,LinearOptim=runs/lopt_lin_catch,L2LGD²=runs/lopt_l2l_catch'
  # Figure 4 panels carry a prefix: --panel='figure4/ant:Optim4RL=runs/lopt_rl_grid_ant,Adam=runs/ppo_ant_adam'
  # Table 1 (pipeline ablation), one flag per task:
  python launch/report.py --out=reports/table1 \
      --table1='small_dense_long:with=runs/lopt_rl_sdl,without=runs/lopt_rlp_sdl' \
      --table1='big_dense_long:with=runs/lopt_rl_bdl,without=runs/lopt_rlp_bdl'

For every optimizer the configurations found under PATH are ranked by mean final return (ties by standard
error) and the best is shown, with a 90% percentile-bootstrap CI over runs (one run = one seed of one
workdir). Writes report.md, report.json and one PNG per panel (plus figureN.png with all panels of a figure).
See optim4rl_tf/eval/report.py.
"""
import sys

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "Output directory for report.md, report.json and the PNGs.")
_PANEL = flags.DEFINE_multi_string("panel", [], "[FIGURE/]TASK:LABEL=PATH[,LABEL=PATH...] (FIGURE defaults to "
                                   "figure3).")
_TABLE1 = flags.DEFINE_multi_string(
    "table1", [], "TASK:with=PATH,without=PATH (TASK: small_dense_long, "
    "big_dense_long, ant, humanoid).")
_AGENT = flags.DEFINE_enum(
    "agent", "auto", ["auto", "a2c", "ppo"], "Final performance: a2c = mean of the "
    "last 20 logged returns, ppo = mean of the last 2 evaluations; auto from the config.")
_CONFIDENCE = flags.DEFINE_float("confidence", 0.9, "Bootstrap CI coverage.")
_RESAMPLES = flags.DEFINE_integer("resamples", 10000, "Bootstrap resamples.")
_POINTS = flags.DEFINE_integer("num_points", 200, "Points of the common step grid of the curves.")
_SMOOTH = flags.DEFINE_integer("smooth", 1, "Moving-average window (logged returns) before plotting.")
_TOP = flags.DEFINE_integer("top", 5, "Configurations listed per optimizer in the ranking.")
_TITLE = flags.DEFINE_string("title", "Optim4RL-TF reproduction report", "Report title.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not _OUT.value:
    raise app.UsageError("--out is required")
  if not _PANEL.value and not _TABLE1.value:
    raise app.UsageError("give at least one --panel or --table1")
  from optim4rl_tf.eval import report
  try:
    path = report.write_report(_OUT.value,
                               panels=_PANEL.value,
                               table1=_TABLE1.value,
                               agent=_AGENT.value,
                               confidence=_CONFIDENCE.value,
                               num_resamples=_RESAMPLES.value,
                               num_points=_POINTS.value,
                               smooth=_SMOOTH.value,
                               top=_TOP.value,
                               title=_TITLE.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {path}")


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
