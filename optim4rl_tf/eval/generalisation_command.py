"""The generalisation command (``optim4rl-generalisation``, launch/generalisation.py): shipped Optim4RL
optimizers (grid6, catch, inverted_pendulum) vs Adam and RMSProp with A2C on the six grid6 gridworlds, the two
grid6 never saw and Catch (optim4rl_tf.eval.generalisation).

  python launch/generalisation.py --out=results/generalisation
  python launch/generalisation.py --out=/tmp/gen --num_seeds=2 --small_steps=2e4 --big_steps=2e4 \
      --catch_steps=2e4 --tasks=small_sparse_short,catch --lrs=1e-3          # a quick look
  python launch/generalisation.py --out=runs/gen_mine --optimizers='Adam,Optim4RL runs/meta_catch/phi.npz'

Writes OUT/table.md, OUT/numbers.json (with this command line), OUT/generalisation.png (runs in OUT/runs,
resumed cell by cell).

This module imports no TensorFlow (the experiment is imported by :func:`main`), so that :func:`console` sets
the process up before TensorFlow loads.
"""

from absl import flags
from absl import logging as absl_logging

from optim4rl_tf.eval import lr_choice
from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime

FLAGS = ("out", "num_seeds", "small_steps", "big_steps", "catch_steps", "tasks", "optimizers", "lrs")


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv`` unused: no config file flag)."""
  del argv
  flags.DEFINE_string("out", "results/generalisation", "Output folder.", flag_values=flag_values)
  flags.DEFINE_integer("num_seeds", 5, "Seeds per cell.", flag_values=flag_values)
  flags.DEFINE_float("small_steps", 1e6, "Env steps per seed on the small gridworlds.", flag_values=flag_values)
  flags.DEFINE_float("big_steps", 5e5, "Env steps per seed on the big gridworlds.", flag_values=flag_values)
  flags.DEFINE_float("catch_steps", 3e5, "Env steps per seed on Catch.", flag_values=flag_values)
  flags.DEFINE_list("tasks", [], "Subset of tasks (default: all nine).", flag_values=flag_values)
  flags.DEFINE_list(
      "optimizers", [],
      "Default: Optim4RL grid6, Optim4RL catch, Optim4RL inverted_pendulum, Adam, RMSProp; also 'Optim4RL NAME' "
      "for any pretrained NAME, and 'Optim4RL PATH.npz' for a phi of your own (e.g. a meta-training's phi.npz).",
      flag_values=flag_values)
  flags.DEFINE_list("lrs", [f"{lr:g}" for lr in lr_choice.LRS],
                    "Learning rates every optimizer runs at; each is reported at its best.",
                    flag_values=flag_values)


def _number(text):
  try:
    return float(text)
  except ValueError:
    return text  # check_grid names it


def command_line(flag_values):
  """The command as numbers.json records it: ``python launch/generalisation.py`` and the flags given."""
  given = [flag_values[name].serialize() for name in FLAGS if flag_values[name].present]
  return " ".join(["python launch/generalisation.py"] + given)


def main(argv, flag_values):
  """The command: checks the flags (one line ``error: ...`` and exit 2), trains every cell, writes the
  outputs and prints the table."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.eval import generalisation as gen  # pylint: disable=import-outside-toplevel  (TensorFlow)
  tasks = tuple(flag_values.tasks) or gen.TASKS
  unknown = [t for t in tasks if t not in gen.TASKS]
  if unknown:
    cli.fail(f"unknown --tasks {unknown}; valid: {', '.join(gen.TASKS)}")
  optimizers = tuple(flag_values.optimizers) or gen.OPTIMIZERS
  for optimizer in optimizers:
    try:
      gen.check_optimizer(optimizer)
    except ValueError as e:
      cli.fail(f"--optimizers: {e}")
  try:
    lrs = lr_choice.check_grid([_number(lr) for lr in flag_values.lrs], "--lrs")
  except ValueError as e:
    cli.fail(str(e))
  if flag_values.num_seeds < 1 or min(flag_values.small_steps, flag_values.big_steps, flag_values.catch_steps) <= 0:
    cli.fail("--num_seeds and the step budgets must be positive")
  try:
    numbers = gen.run(flag_values.out,
                      flag_values.small_steps,
                      flag_values.big_steps,
                      flag_values.catch_steps,
                      flag_values.num_seeds,
                      tasks=tasks,
                      optimizers=optimizers,
                      lrs=lrs,
                      command=command_line(flag_values))
  except ValueError as e:
    cli.fail(str(e))
  print(gen.table_markdown(numbers))
  print(f"wrote {flag_values.out}/table.md, numbers.json, generalisation.png")


def console():
  """The ``optim4rl-generalisation`` console script (and launch/generalisation.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
