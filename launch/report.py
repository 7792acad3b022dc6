"""Writes the paper's Figure 3/4 panels and Table 1 (PNG + Markdown) from sweep workdirs.

  # Figure 3, Catch panel: one LABEL=PATH per optimizer (PATH: a workdir, a sweep dir or a glob)
  python launch/report.py --out=reports/catch \
      --panel='catch:Adam=runs/a2c_catch_adam,RMSProp=runs/a2c_catch_rmsprop,Optim4RL=runs/lopt_rl_catch,STAR=runs/lopt_star_catch,LinearOptim=runs/lopt_lin_catch,L2LGD²=runs/lopt_l2l_catch'
  # Figure 4 panels carry a prefix: --panel='figure4/ant:Optim4RL=runs/lopt_rl_grid_ant,Adam=runs/ppo_ant_adam'
  # Table 1 (pipeline ablation), one flag per task:
  python launch/report.py --out=reports/table1 \
      --table1='small_dense_long:with=runs/lopt_rl_sdl,without=runs/lopt_rlp_sdl' \
      --table1='big_dense_long:with=runs/lopt_rl_bdl,without=runs/lopt_rlp_bdl'
  optim4rl-report ...                                                     # the same, installed with pip

A shell around optim4rl_tf.eval.report_command (its flags: see that module; the report: optim4rl_tf/eval/report.py).
"""
from optim4rl_tf.eval import report_command

if __name__ == "__main__":
  report_command.console()
