"""The project's main job (README's first command): the paper's Catch experiment, end to end.

  1. Meta-train Optim4RL on Catch with pipeline training (configs/meta_a2c.py:catch: 64 units, M = 4,
     reset interval 32, 78 outer iterations, meta lr 3e-3 with global-norm clipping 0.5, notes §5.7 / §14),
     with the official code's head-free Optim4RL (``--mlp_dims=16,16`` gives the paper's heads; on this CPU
     they make meta-training about 3.4x slower).
  2. Test the fixed learned optimizer with A2C on Catch against Adam and RMSProp, 10 seeds each, lr 1e-3
     (notes §10), every seed in one vectorised graph.
  3. Write TensorBoard logs (each run's ``tb/``), ``learning_curves.png`` and ``final_returns.md``.

  python launch/main.py --workdir=runs/main
  tensorboard --logdir=runs/main

Re-running with the same --workdir resumes: meta-training continues from its checkpoint and finished
test runs are kept.
"""
import os
import sys
import time


from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

flags.DEFINE_string("workdir", "runs/main", "Output directory.")
flags.DEFINE_integer("meta_iterations", 0, "Outer iterations of meta-training (0: the config's 78).")
flags.DEFINE_integer("meta_units", 64, "Training units of meta-training.")
flags.DEFINE_list("mlp_dims", [], "Optim4RL head sizes: empty = the official code's HEAD (one linear layer "
                  "after each GRU; the setting whose Catch results notes §14 calibrates), 16,16 = the paper's.")
flags.DEFINE_float("test_steps", 3e5, "Env steps per seed of each test run (paper: 5e5).")
flags.DEFINE_integer("num_seeds", 10, "Seeds per tested optimizer.")
flags.DEFINE_integer("seed", 0, "Base seed.")
FLAGS = flags.FLAGS


def meta_train_catch(workdir):
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.meta import run
  config = meta_a2c.get_config("catch")
  config.seed = FLAGS.seed
  config.tasks[0].num_units = FLAGS.meta_units
  config.num_iterations = FLAGS.meta_iterations
  config.optimizer.mlp_dims = tuple(int(d) for d in FLAGS.mlp_dims)
  return run.meta_train(config, workdir)


def test_optimizer(name, workdir, phi_path=None):
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.agents import a2c_train
  if os.path.exists(os.path.join(workdir, "summary.json")):
    print(f"[{name}] already tested in {workdir}; keeping it", flush=True)
    return
  config = a2c_configs.get_config("catch")
  config.optimizer.name = name
  config.optimizer.learning_rate = 1e-3
  config.optimizer.meta_params = phi_path or ""
  config.num_seeds = FLAGS.num_seeds
  config.seed = FLAGS.seed + 1000
  config.train_steps = FLAGS.test_steps
  config.save_params = False
  a2c_train.train(config, workdir)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  del argv
  from optim4rl_tf.eval import compare
  start = time.time()
  root = FLAGS.workdir
  os.makedirs(root, exist_ok=True)
  print("== 1/3 meta-training Optim4RL on Catch (pipeline training) ==", flush=True)
  meta = meta_train_catch(os.path.join(root, "meta_optim4rl_catch"))
  print("== 2/3 testing the fixed optimizer vs Adam and RMSProp on Catch ==", flush=True)
  runs = {}
  for name, phi in (("optim4rl", meta["phi_path"]), ("adam", None), ("rmsprop", None)):
    runs[name] = os.path.join(root, f"test_{name}")
    test_optimizer(name, runs[name], phi)
  print("== 3/3 report ==", flush=True)
  png, md = compare.compare_runs(runs, root, title="Catch: A2C with a fixed optimizer (lr 1e-3)")
  print(open(md).read())
  print(f"learning curves: {png}\ntable: {md}\nTensorBoard: tensorboard --logdir={root}\n"
        f"total time {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
