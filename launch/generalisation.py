"""Generalisation table: shipped Optim4RL optimizers (grid6, catch) vs Adam and RMSProp with A2C on the six
grid6 gridworlds, the two it never saw and Catch.

  python launch/generalisation.py --out=results/generalisation
  python launch/generalisation.py --out=/tmp/gen --num_seeds=2 --small_steps=2e4 --big_steps=2e4 \
      --catch_steps=2e4 --tasks=small_sparse_short,catch          # a quick look

Writes OUT/table.md, OUT/numbers.json, OUT/generalisation.png (runs in OUT/runs, resumed cell by cell).
"""
import sys

from absl import flags
from absl import logging
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime

_OUT = flags.DEFINE_string("out", "results/generalisation", "Output folder.")
_SEEDS = flags.DEFINE_integer("num_seeds", 5, "Seeds per cell.")
_SMALL = flags.DEFINE_float("small_steps", 1e6, "Env steps per seed on the small gridworlds.")
_BIG = flags.DEFINE_float("big_steps", 5e5, "Env steps per seed on the big gridworlds.")
_CATCH = flags.DEFINE_float("catch_steps", 3e5, "Env steps per seed on Catch.")
_TASKS = flags.DEFINE_list("tasks", [], "Subset of tasks (default: all nine).")
_OPTS = flags.DEFINE_list("optimizers", [], "Subset of: Optim4RL grid6, Optim4RL catch, Adam, RMSProp.")


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.eval import generalisation as gen
  tasks = tuple(_TASKS.value) or gen.TASKS
  unknown = [t for t in tasks if t not in gen.TASKS]
  if unknown:
    cli.fail(f"unknown --tasks {unknown}; valid: {', '.join(gen.TASKS)}")
  optimizers = tuple(_OPTS.value) or gen.OPTIMIZERS
  if any(o not in gen.OPTIMIZERS for o in optimizers):
    cli.fail(f"unknown --optimizers {list(optimizers)}; valid: {', '.join(gen.OPTIMIZERS)}")
  if _SEEDS.value < 1 or min(_SMALL.value, _BIG.value, _CATCH.value) <= 0:
    cli.fail("--num_seeds and the step budgets must be positive")
  try:
    numbers = gen.run(_OUT.value,
                      _SMALL.value,
                      _BIG.value,
                      _CATCH.value,
                      _SEEDS.value,
                      tasks=tasks,
                      optimizers=optimizers,
                      command="python launch/generalisation.py " + " ".join(sys.argv[1:]))
  except ValueError as e:
    cli.fail(str(e))
  print(gen.table_markdown(numbers))
  print(f"wrote {_OUT.value}/table.md, numbers.json, generalisation.png")


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run(main)
