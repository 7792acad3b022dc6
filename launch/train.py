"""Trains agents (all seeds in one vectorised graph) and writes logs, returns.csv and returns.png.

  python launch/train.py --config=configs/a2c.py:catch --config.optimizer.name=adam \
      --config.num_seeds=10 --config.train_steps=300000 --workdir=/tmp/a2c_catch
  python launch/train.py --config=configs/ppo.py:ant_cpu --workdir=/tmp/ppo_ant
  optim4rl-train ...                                                      # the same, installed with pip

A shell around optim4rl_tf.eval.train_command (its flags, workdir rules and exit status: see that module).
"""
from optim4rl_tf.eval import train_command

if __name__ == "__main__":
  train_command.console()
