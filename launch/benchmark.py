"""Benchmarks that print figures (never timed tests).

  python launch/benchmark.py optimizer   # Keras fit epoch: Optim4RL vs Adam
  python launch/benchmark.py meta        # MetaA2C outer it/s, env steps/s, peak RSS
  optim4rl-benchmark meta                # the same, installed with pip

A shell around optim4rl_tf.benchmarks.benchmark_command (every benchmark and its flags: see that module).
"""
from optim4rl_tf.benchmarks import benchmark_command

if __name__ == "__main__":
  benchmark_command.console()
