"""The project's main job (README's first command): the paper's Catch experiment, end to end.

  1. Meta-train Optim4RL on Catch with pipeline training (configs/meta_a2c.py:catch: 64 units, M = 4,
     reset interval 32, 78 outer iterations, meta lr 3e-3 with global-norm clipping 0.5, docs/fidelity.md §5.7 / §12),
     with the official code's head-free Optim4RL (``--mlp_dims=16,16`` gives the paper's heads; on this CPU
     they make meta-training about 3.4x slower).
  2. Test the fixed learned optimizer with A2C on Catch against Adam and RMSProp, 10 seeds each, lr 1e-3
     (docs/fidelity.md §10), every seed in one vectorised graph.
  3. Write TensorBoard logs (each run's ``tb/``), ``learning_curves.png`` and ``final_returns.md``.

  python launch/main.py --workdir=runs/main
  tensorboard --logdir=runs/main

Re-running with the same --workdir resumes: meta-training continues from its checkpoint and finished
test runs are kept.
"""
import os
import time

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

flags.DEFINE_string("workdir", "runs/main", "Output directory.")
flags.DEFINE_integer("meta_iterations", 0, "Outer iterations of meta-training (0: the config's 78).")
flags.DEFINE_integer("meta_units", 64, "Training units of meta-training.")
flags.DEFINE_list(
    "mlp_dims", [], "Optim4RL head sizes: empty = the official code's HEAD (one linear layer "
    "after each GRU; the setting whose Catch results docs/fidelity.md §12 calibrates), 16,16 = the paper's.")
flags.DEFINE_float("test_steps", 3e5, "Env steps per seed of each test run (paper: 5e5).")
flags.DEFINE_integer("num_seeds", 10, "Seeds per tested optimizer.")
flags.DEFINE_integer("seed", 0, "Base seed.")
FLAGS = flags.FLAGS
KEY_FILE = "tested_with.json"  # in each test_* dir: the optimizer, phi digest and budget it was made with

import hashlib  # noqa: E402
import json  # noqa: E402


def meta_config():
  """The Catch meta-training config of the flags (validated)."""
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.meta import memory_estimate
  from optim4rl_tf.meta import run
  config = meta_a2c.get_config("catch")
  config.seed = FLAGS.seed
  config.tasks[0].num_units = FLAGS.meta_units
  config.num_iterations = FLAGS.meta_iterations
  config.optimizer.mlp_dims = _mlp_dims()
  # The size check first, naming this launcher's flags (run.validate_config's names the config fields).
  memory_estimate.check(config, hint="lower --meta_units or --mlp_dims")
  run.validate_config(config)
  return config


def _mlp_dims():
  text = ",".join(FLAGS.mlp_dims)
  try:
    dims = tuple(int(d) for d in FLAGS.mlp_dims)
  except ValueError:
    dims = (0,)
  if any(d <= 0 for d in dims):
    raise ValueError(f"--mlp_dims must be comma-separated positive integers (or empty), got {text!r}")
  return dims


def test_config(name, phi_path=None):
  """The A2C test config of one optimizer (validated; ``phi_path`` may not exist yet)."""
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.configs import a2c as a2c_configs
  config = a2c_configs.get_config("catch")
  config.optimizer.name = name
  config.optimizer.learning_rate = 1e-3
  config.optimizer.meta_params = ""
  config.num_seeds = FLAGS.num_seeds
  config.seed = FLAGS.seed + TEST_SEED_OFFSET
  config.train_steps = FLAGS.test_steps
  config.save_params = False
  a2c_train.validate_config(config)
  config.optimizer.meta_params = phi_path or ""
  return config


TEST_SEED_OFFSET = 1000  # the tests' seeds start at --seed + 1000 (meta-training uses --seed)


def validate_flags():
  """Every flag checked before any work starts (ValueError, one line)."""
  from optim4rl_tf.utils import config_checks as cc
  for flag, value, low in (("meta_units", FLAGS.meta_units, 1), ("meta_iterations", FLAGS.meta_iterations, 0),
                           ("num_seeds", FLAGS.num_seeds, 1), ("seed", FLAGS.seed, 0)):
    if value < low:
      raise ValueError(f"--{flag} must be an integer >= {low}, got {value}")
  top = cc.SEED_MAX - TEST_SEED_OFFSET - (FLAGS.num_seeds - 1)
  if FLAGS.seed > top:
    raise ValueError(f"--seed must be an integer in [0, {top:,}] (the test seeds --seed+{TEST_SEED_OFFSET} .. "
                     f"+{TEST_SEED_OFFSET}+num_seeds-1 are int32 RNG keys), got {FLAGS.seed}")
  if not FLAGS.test_steps > 0 or FLAGS.test_steps == float("inf"):
    raise ValueError(f"--test_steps must be a positive number, got {FLAGS.test_steps}")
  if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):  # e.g. a file: one line, no traceback
    raise ValueError(f"--workdir {FLAGS.workdir!r} exists and is not a directory")
  meta_config()
  for name in ("optim4rl", "adam", "rmsprop"):
    test_config(name)
  cc.check_writable_dir(FLAGS.workdir, "--workdir")  # (creates it: last, once everything else is valid)


def phi_fingerprint(phi_path):
  """Digest of the meta-parameters in ``phi_path`` (their values, not the file's bytes)."""
  from optim4rl_tf.optimizers import meta_params as meta_params_lib
  meta, arrays = meta_params_lib.load(phi_path)
  digest = hashlib.sha256(
      json.dumps({
          k: meta.get(k) for k in ("optimizer", "mlp_dims", "hidden_size")
      }, sort_keys=True).encode())
  for key in sorted(arrays):
    digest.update(key.encode() + arrays[key].tobytes())
  return digest.hexdigest()[:16]


def _read_json(path):
  try:
    with open(path) as f:
      value = json.load(f)
    return value if isinstance(value, dict) else None
  except (OSError, ValueError):
    return None


def test_optimizer(name, workdir, phi_path=None):
  """Tests one optimizer unless ``workdir`` holds a finished test made with the same phi and budget
  (``tested_with.json``); a test made with anything else is moved aside (kept) and redone."""
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.utils import workdir as workdir_lib
  config = test_config(name, phi_path)
  key = {
      "optimizer": name,
      "learning_rate": 1e-3,
      "num_seeds": int(FLAGS.num_seeds),
      "seed": int(config.seed),
      "test_steps": float(FLAGS.test_steps),
      "phi": phi_fingerprint(phi_path) if phi_path else None
  }
  summary = _read_json(os.path.join(workdir, "summary.json"))
  finished = summary is not None and summary.get("status", "finished") in ("finished", "diverged")
  if finished and _read_json(os.path.join(workdir, KEY_FILE)) == key:
    print(f"[{name}] already tested with this phi and budget in {workdir}; keeping it", flush=True)
    return
  if os.path.isdir(workdir) and os.listdir(workdir):
    n = 1
    while os.path.exists(f"{workdir}.stale-{n}"):
      n += 1
    os.replace(workdir, f"{workdir}.stale-{n}")
    print(
        f"[{name}] {workdir} holds a test of another phi or budget (or an unfinished one); moved it to "
        f"{workdir}.stale-{n} and testing again",
        flush=True)
  a2c_train.train(config, workdir)
  workdir_lib.atomic_write(os.path.join(workdir, KEY_FILE), json.dumps(key, indent=2, sort_keys=True))


def main(argv):
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf.utils import cli
  from optim4rl_tf.utils import workdir as workdir_lib
  start = time.time()
  root = FLAGS.workdir
  try:
    validate_flags()
  except ValueError as e:
    cli.fail(e)
  # The whole job holds the workdir's lock: a second main.py on it is refused with one line naming the holder
  # (it used to move the running tests aside as stale and write the same folders).
  try:
    with workdir_lib.lock(root):
      _run(root, start)
  except workdir_lib.WorkdirError as e:
    cli.fail(e)


def _run(root, start):
  """The three stages (under the workdir lock)."""
  from optim4rl_tf.eval import compare
  from optim4rl_tf.meta import run
  print("== 1/3 meta-training Optim4RL on Catch (pipeline training) ==", flush=True)
  meta = run.cli_call(run.meta_train, meta_config(), os.path.join(root, "meta_optim4rl_catch"))
  print("== 2/3 testing the fixed optimizer vs Adam and RMSProp on Catch ==", flush=True)
  runs = {}
  for name, phi in (("optim4rl", meta["phi_path"]), ("adam", None), ("rmsprop", None)):
    runs[name] = os.path.join(root, f"test_{name}")
    run.cli_call(test_optimizer, name, runs[name], phi)
  print("== 3/3 report ==", flush=True)
  png, md = compare.compare_runs(runs, root, title="Catch: A2C with a fixed optimizer (lr 1e-3)")
  print(open(md).read())
  print(
      f"learning curves: {png}\ntable: {md}\nTensorBoard: tensorboard --logdir={root}\n"
      f"total time {time.time() - start:.0f} s",
      flush=True)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  from optim4rl_tf.utils import cli  # noqa: E402  one-line flag errors (exit 2), SIGINT/SIGTERM handling
  cli.run(main)
