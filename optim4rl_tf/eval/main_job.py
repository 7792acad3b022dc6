"""The project's main job (README's first command): the paper's Catch experiment, end to end.

  1. Meta-train Optim4RL on Catch with pipeline training (configs/meta_a2c.py:catch: 64 units, M = 4,
     reset interval 32, 78 outer iterations, meta lr 3e-3 with global-norm clipping 0.5, docs/fidelity.md §5.7 / §12),
     with the official code's head-free Optim4RL (``--mlp_dims=16,16`` gives the paper's heads; on this CPU
     they make meta-training about 3.4x slower).
  2. Test the fixed learned optimizer with A2C on Catch against Adam and RMSProp, 10 seeds each, lr 1e-3
     (docs/fidelity.md §10), every seed in one vectorised graph.
  3. Write TensorBoard logs (each run's ``tb/``), ``learning_curves.png`` and ``final_returns.md``.

  optim4rl-main --workdir=runs/main          # installed (pip install '.[cpu,train]')
  python launch/main.py --workdir=runs/main  # from a checkout
  tensorboard --logdir=runs/main

  from optim4rl_tf.eval import main_job
  main_job.MainJob("runs/main", num_seeds=3, test_steps=1e5).run()   # the same from Python

Re-running with the same workdir resumes: meta-training continues from its checkpoint and a finished test
run is kept when it tested the same phi with the same budget (``reproduce.run_test``, the check reproduce.py
uses too); any other is moved aside to ``<dir>.stale-N`` and run again.
"""
import os
import time

from absl import app
from absl import flags
from absl import logging

from optim4rl_tf.utils import runtime

TEST_SEED_OFFSET = 1000  # the tests' seeds start at seed + 1000 (meta-training uses seed)
TESTED = ("optim4rl", "adam", "rmsprop")
LEARNING_RATE = 1e-3


class MainJob:
  """The main job's settings (the flags of launch/main.py); :meth:`run` does the three stages."""

  def __init__(self,
               workdir="runs/main",
               meta_iterations=0,
               meta_units=64,
               mlp_dims=(),
               test_steps=3e5,
               num_seeds=10,
               seed=0):
    self.workdir, self.meta_iterations, self.meta_units = workdir, meta_iterations, meta_units
    self.mlp_dims, self.test_steps, self.num_seeds, self.seed = mlp_dims, test_steps, num_seeds, seed

  def parsed_mlp_dims(self):
    """``mlp_dims`` (ints or strings, as --mlp_dims gives them) as a tuple of positive ints (ValueError)."""
    text = ",".join(str(d) for d in self.mlp_dims)
    try:
      dims = tuple(int(d) for d in self.mlp_dims)
    except ValueError:
      dims = (0,)
    if any(d <= 0 for d in dims):
      raise ValueError(f"--mlp_dims must be comma-separated positive integers (or empty), got {text!r}")
    return dims

  def meta_config(self):
    """The Catch meta-training config (validated)."""
    from optim4rl_tf.configs import meta_a2c  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.meta import memory_estimate  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
    config = meta_a2c.get_config("catch")
    config.seed = self.seed
    config.tasks[0].num_units = self.meta_units
    config.num_iterations = self.meta_iterations
    config.optimizer.mlp_dims = self.parsed_mlp_dims()
    # The size check first, naming the main job's flags (run.validate_config's names the config fields).
    memory_estimate.check(config, hint="lower --meta_units or --mlp_dims")
    run.validate_config(config)
    return config

  def test_config(self, name, phi_path=None):
    """The A2C test config of one optimizer (validated; ``phi_path`` may not exist yet)."""
    from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.configs import a2c as a2c_configs  # pylint: disable=import-outside-toplevel
    config = a2c_configs.get_config("catch")
    config.optimizer.name = name
    config.optimizer.learning_rate = LEARNING_RATE
    config.optimizer.meta_params = ""
    config.num_seeds = self.num_seeds
    config.seed = self.seed + TEST_SEED_OFFSET
    config.train_steps = self.test_steps
    config.save_params = False
    a2c_train.validate_config(config)
    config.optimizer.meta_params = phi_path or ""
    return config

  def validate(self):
    """Every setting checked before any work starts (ValueError, one line); creates the workdir last."""
    from optim4rl_tf.utils import config_checks as cc  # pylint: disable=import-outside-toplevel
    for flag, value, low in (("meta_units", self.meta_units, 1), ("meta_iterations", self.meta_iterations, 0),
                             ("num_seeds", self.num_seeds, 1), ("seed", self.seed, 0)):
      if value < low:
        raise ValueError(f"--{flag} must be an integer >= {low}, got {value}")
    top = cc.SEED_MAX - TEST_SEED_OFFSET - (self.num_seeds - 1)
    if self.seed > top:
      raise ValueError(f"--seed must be an integer in [0, {top:,}] (the test seeds --seed+{TEST_SEED_OFFSET} .. "
                       f"+{TEST_SEED_OFFSET}+num_seeds-1 are int32 RNG keys), got {self.seed}")
    if not self.test_steps > 0 or self.test_steps == float("inf"):
      raise ValueError(f"--test_steps must be a positive number, got {self.test_steps}")
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):  # e.g. a file: one line, no traceback
      raise ValueError(f"--workdir {self.workdir!r} exists and is not a directory")
    self.meta_config()
    for name in TESTED:
      self.test_config(name)
    cc.check_writable_dir(self.workdir, "--workdir")  # (creates it: last, once everything else is valid)

  def test_optimizer(self, name, workdir, phi_path=None):
    """Tests one optimizer unless ``workdir`` holds a finished test of the same phi and budget."""
    from optim4rl_tf.agents import a2c_train  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
    reproduce.run_test(a2c_train.train,
                       self.test_config(name, phi_path),
                       workdir,
                       phi_path,
                       other_config="move_aside",
                       label=name)

  def run(self):
    """Validates, then the three stages under the workdir's lock (a second job on it is refused with one
    line naming the holder). Returns the path of final_returns.md."""
    from optim4rl_tf.eval import compare  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
    from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
    start, root = time.time(), self.workdir
    self.validate()
    with workdir_lib.lock(root):
      print("== 1/3 meta-training Optim4RL on Catch (pipeline training) ==", flush=True)
      meta = run.cli_call(run.meta_train, self.meta_config(), os.path.join(root, "meta_optim4rl_catch"))
      print("== 2/3 testing the fixed optimizer vs Adam and RMSProp on Catch ==", flush=True)
      runs = {}
      for name, phi in zip(TESTED, (meta["phi_path"], None, None)):
        runs[name] = os.path.join(root, f"test_{name}")
        run.cli_call(self.test_optimizer, name, runs[name], phi)
      print("== 3/3 report ==", flush=True)
      png, md = compare.compare_runs(runs, root, title="Catch: A2C with a fixed optimizer (lr 1e-3)")
      print(open(md).read())
      print(
          f"learning curves: {png}\ntable: {md}\nTensorBoard: tensorboard --logdir={root}\n"
          f"total time {time.time() - start:.0f} s",
          flush=True)
    return md


def define_flags(flag_values, argv=None):
  """The command line of ``optim4rl-main`` / ``launch/main.py``, defined on ``flag_values``."""
  del argv
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string("workdir", "runs/main", "Output directory.", **fv)
  flags.DEFINE_integer("meta_iterations", 0, "Outer iterations of meta-training (0: the config's 78).", **fv)
  flags.DEFINE_integer("meta_units", 64, "Training units of meta-training.", **fv)
  flags.DEFINE_list(
      "mlp_dims", [], "Optim4RL head sizes: empty = the official code's HEAD (one linear layer "
      "after each GRU; the setting whose Catch results docs/fidelity.md §12 calibrates), 16,16 = the paper's.", **fv)
  flags.DEFINE_float("test_steps", 3e5, "Env steps per seed of each test run (paper: 5e5).", **fv)
  flags.DEFINE_integer("num_seeds", 10, "Seeds per tested optimizer.", **fv)
  flags.DEFINE_integer("seed", 0, "Base seed.", **fv)


def job_of_flags(flag_values):
  """The :class:`MainJob` of parsed flags."""
  f = flag_values
  return MainJob(f.workdir, f.meta_iterations, f.meta_units, list(f.mlp_dims), f.test_steps, f.num_seeds, f.seed)


def main(argv, flag_values):
  """The command: flags -> :meth:`MainJob.run`; a bad setting or a workdir in use is one line, exit 2."""
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  try:
    job_of_flags(flag_values).run()
  except ValueError as e:  # a bad setting, or the workdir in use (WorkdirError is a ValueError)
    cli.fail(e)


def console():
  """The ``optim4rl-main`` console script (and launch/main.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  cli.run_command(define_flags, main)
