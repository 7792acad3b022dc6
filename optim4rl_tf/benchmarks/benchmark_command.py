"""The benchmark command (``optim4rl-benchmark``, launch/benchmark.py): benchmarks that print figures (never
timed tests).

  python launch/benchmark.py optimizer   # Keras fit epoch: Optim4RL vs Adam
  python launch/benchmark.py envs        # env steps/s, gridworlds and Catch
  python launch/benchmark.py a2c         # A2C env steps/s, 1 and 10 seeds
  python launch/benchmark.py meta        # MetaA2C outer it/s, env steps/s, peak RSS
  python launch/benchmark.py ppo         # TF PPO on Brax (both bridges) vs Brax's own trainer

Side by side with the reference implementation (alternating pairs, each run in its own process, with the
machine's load beside every figure; optim4rl_tf/benchmarks/against.py):

  python launch/benchmark.py meta --against=official --official_dir=DIR --official_python=PY \
      --official_bench=bench_optim4rl.py [--env=small_dense_long] [--units=64] [--pairs=2] [--duration=45]
  python launch/benchmark.py a2c --against=official ...   (same flags; --envs=512)
  python launch/benchmark.py ppo --against=brax --brax_python=PY --brax_bench=bench_brax_ppo.py

  (or OPTIM4RL_OFFICIAL_DIR / _PYTHON / _BENCH, OPTIM4RL_BRAX_PYTHON / _BENCH in the environment)

Where an outer iteration of MetaA2C spends its time (optim4rl_tf/benchmarks/meta_profile.py):

  python launch/benchmark.py meta --profile [--env=small_dense_long] [--units=64]

Each name dispatches to ``optim4rl_tf.benchmarks.<name>.run(argv)``.
"""

import importlib
import sys

from optim4rl_tf.utils import runtime

NAMES = ("optimizer", "envs", "a2c", "meta", "ppo")


def main(argv):
  """``argv``: [program, NAME, args...]; runs ``optim4rl_tf.benchmarks.NAME.run(args)``; returns the exit
  status (2 for an unknown name, with the usage)."""
  if len(argv) < 2 or argv[1] not in NAMES:
    print(__doc__)
    print(f"usage: optim4rl-benchmark {{{'|'.join(NAMES)}}} [args]", file=sys.stderr)
    return 2
  try:
    module = importlib.import_module(f"optim4rl_tf.benchmarks.{argv[1]}")
  except ModuleNotFoundError as e:
    print(f"benchmark {argv[1]!r} is not available in this checkout: {e}", file=sys.stderr)
    return 2
  rc = module.run(argv[2:])
  return rc if isinstance(rc, int) else 0


def console():
  """The ``optim4rl-benchmark`` console script (and launch/benchmark.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  sys.exit(main(sys.argv))
