"""A2C configs (docs/fidelity.md §4.1): baselines with Adam/RMSProp and tests of fixed learned optimizers (§10).

  python launch/train.py --config=configs/a2c.py:catch --workdir=runs/a2c_catch
  python launch/train.py --config=configs/a2c.py:big_dense_long --config.optimizer.name=adam \
      --config.optimizer.learning_rate=1e-3 --config.num_seeds=10 --workdir=runs/bdl_adam
  python launch/train.py --config=configs/a2c.py:catch --config.optimizer.name=optim4rl \
      --config.optimizer.meta_params=runs/meta_catch/phi.npz --workdir=runs/lopt_catch

Variants are the task names: catch and the eight gridworlds (small_sparse_short, small_sparse_long,
small_dense_short, small_dense_long, big_sparse_short, big_sparse_long, big_dense_short, big_dense_long).
All ``num_seeds`` agents train together as one vectorised graph (the seed axis is the unit axis).
"""

import ml_collections

GRIDS = ("small_sparse_short", "small_sparse_long", "small_dense_short", "small_dense_long", "big_sparse_short",
         "big_sparse_long", "big_dense_short", "big_dense_long")
TASKS = ("catch",) + GRIDS

# §4.1 learning-rate sweep of the gridworld baselines (a2c_grid).
GRID_LR_SWEEP = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


def get_config(variant="catch"):
  if variant not in TASKS:
    raise ValueError(f"Unknown a2c variant (task) {variant!r}; valid: {', '.join(TASKS)}")
  catch = variant == "catch"
  c = ml_collections.ConfigDict()
  c.agent = "a2c"  # launch/train.py trainer (a2c | ppo | meta_ppo)
  c.variant = variant
  c.env = ml_collections.ConfigDict(
      dict(
          name=variant,
          num_envs=64 if catch else 512,  # environments PER SEED
          reward_scale=1.0))
  c.rollout_steps = 20
  c.discount = 0.995
  c.gae_lambda = 0.95
  c.critic_weight = 0.5
  c.entropy_weight = 0.01
  c.train_steps = 5e5 if catch else 3e7  # env steps per seed (a float field, so 3e5 parses)
  c.optimizer = ml_collections.ConfigDict(
      dict(
          name="adam" if catch else "rmsprop",
          learning_rate=1e-3 if catch else 3e-3,
          grad_clip=-1.0 if catch else 1.0,  # elementwise, before the optimizer; <= 0: off; must be finite
          meta_params="",  # learned optimizers: .npz written by the meta-trainer
      ))
  c.num_seeds = 10
  c.seed = 0  # seeds are seed, ..., seed+num_seeds-1, each in [0, 2**31 - 1]
  # Logging.
  c.log_every = 1  # iterations between TensorBoard loss/norm scalars
  c.console_every_secs = 10.0  # console progress at most this often
  c.plot = True  # returns.png at the end
  c.save_params = True  # final agent parameters to params.npz
  # Machinery.
  c.iterations_per_call = 0  # iterations per tf.function call; 0: adapt to ~chunk_secs
  c.chunk_secs = 2.0
  c.conv_form = "auto"  # big grids' 2x2 conv: auto | conv2d | im2col | shifted (exact)
  c.jit_compile = False  # XLA; slower on CPU in our measurements
  # Checkpoints (workdir/checkpoint.npz, also at the end and on SIGINT/SIGTERM): a run started again on its
  # workdir resumes from the latest one, bit-identical to an unbroken run. 0: off.
  c.checkpoint_every = 0  # iterations
  c.checkpoint_every_secs = 300.0
  c.sweep = ml_collections.ConfigDict(dict(learning_rate=[] if catch else list(GRID_LR_SWEEP)))
  # Gradient collection (docs/fidelity.md §8.1; optim4rl_tf.analysis.collect): every update's env-averaged gradient per
  # seed, flax order, every every_nth-th entry, streamed to workdir/<subdir>. See configs/collect.py.
  c.collect = ml_collections.ConfigDict(dict(enabled=False, every_nth=100, chunk_steps=1024, subdir="grads"))
  return c
