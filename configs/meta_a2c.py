"""MetaA2C configs (docs/fidelity.md §5.5-§5.8): meta-training a learned optimizer with pipeline training.

  python launch/meta_train.py --config=configs/meta_a2c.py:catch --workdir=runs/meta_catch
  python launch/meta_train.py --config=configs/meta_a2c.py:big_dense_long_nopipe --config.meta_lr=1e-4

Variants: catch, small_dense_long, big_dense_long (each also ``*_nopipe``: units never reset), grid6 (the
six-gridworld task set of §5.6, one shared phi; its 512 units per task peak at 16.9 GB, so it needs a machine
of about 20 GB or more; ``--config.num_units=128`` runs in 5.8 GB). Sweep grids of §5.7 are in ``sweep`` (lists), for
``launch/sweep.py``-style expansion.
"""

import ml_collections

# §5.6: (env, reward scale, agent lr) of the six-gridworld task set, in config order.
GRID6 = (("small_dense_long", 1e3, 1e-3), ("small_dense_short", 1e2, 3e-3), ("big_sparse_short", 1e2, 3e-3),
         ("big_dense_short", 1e1, 3e-3), ("big_sparse_long", 1e1, 1e-3), ("big_dense_long", 1e0, 3e-3))


def task(env_name, num_units, learning_rate, reward_scale=1.0):
  return ml_collections.ConfigDict(
      dict(env_name=env_name, num_units=num_units, learning_rate=learning_rate, reward_scale=reward_scale))


def get_config(variant="catch"):
  pipeline = not variant.endswith("_nopipe")
  base = variant[:-len("_nopipe")] if not pipeline else variant
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.optimizer = ml_collections.ConfigDict(
      dict(name="optim4rl", mlp_dims=(), hidden_size=8,
           init_meta_params=""))  # optional .npz to start from instead of a fresh phi
  # A2C inner loop (§4.1, §5.7).
  c.rollout_steps = 20
  c.inner_updates = 4  # M
  c.discount = 0.995
  c.gae_lambda = 0.95
  c.critic_weight = 0.5
  c.entropy_weight = 0.01
  # Meta-optimizer (§5.4): Adam(meta_lr) after elementwise clip OR global-norm clip (<= 0: off).
  c.meta_lr = 1e-3
  c.meta_grad_clip = -1.0
  c.meta_grad_norm = 0.5
  c.max_norm = -1.0  # per-task normalisation of the meta-gradient (grid6 sweep only)
  c.num_units = 0  # > 0: overrides every task's num_units (handy on the command line)
  c.pipeline = pipeline
  c.train_steps = 500_000
  c.num_iterations = 0  # 0: floor(train_steps / (n * rollout_steps * (M + 1)))
  # Machinery.
  c.chunk_size = 0  # units per meta-gradient replay chunk (0: chunks of 6,144 coordinates, the fastest here)
  c.checkpoint_every = 10
  c.max_nonfinite = 5  # consecutive skipped iterations before the run stops
  # A non-finite/absurd meta-gradient, phi or agent: "skip" the iteration (counted; max_nonfinite in a row
  # stop the run, keeping the last good checkpoint) or "stop" at the first one, saving nothing from it on
  # (the official MetaPPO; docs/fidelity.md §5.4). launch/reproduce.py uses "stop" for STAR and Brax.
  c.nonfinite = "skip"
  c.log_every = 1
  c.sweep = ml_collections.ConfigDict()

  if base == "catch":
    c.tasks = [task("catch", 64, 1e-3)]
    c.agent_grad_clip = -1.0
    c.reset_interval = 32
    c.meta_lr = 3e-3  # §12: the setting that reproduces Figure 3's Catch panel
    c.sweep.reset_interval = [32, 64]
    c.sweep.meta_lr = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
  elif base in ("small_dense_long", "big_dense_long"):
    c.tasks = [task(base, 512, 3e-2 if base == "small_dense_long" else 3e-3)]
    c.agent_grad_clip = 1.0
    c.reset_interval = 72
    c.train_steps = 30_000_000
    c.sweep.reset_interval = [72, 144, 288, 576]
    c.sweep.meta_lr = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
  elif base == "grid6":
    c.tasks = [task(name, 512, lr, scale) for name, scale, lr in GRID6]
    c.agent_grad_clip = 1.0
    c.reset_interval = 72
    c.train_steps = 30_000_000
    # §9.2: (idx-1) = r + 4*(l + 6*(c + 2*q)): reset interval, meta lr, meta-grad clip (1.0, off), max_norm.
    c.sweep.reset_interval = [72, 144, 288, 576]
    c.sweep.meta_lr = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    c.sweep.meta_grad = ["grad_clip_1.0", "none"]
    c.sweep.max_norm = [0.5, -1.0]
    # Default: one cell of that grid (elementwise meta-gradient clip 1.0, per-task max_norm 0.5).
    c.meta_grad_clip = 1.0
    c.meta_grad_norm = -1.0
    c.max_norm = 0.5
  else:
    raise ValueError(f"Unknown meta_a2c variant {variant!r}; valid: catch, small_dense_long, "
                     "big_dense_long, grid6, each optionally with the suffix _nopipe")
  if not pipeline:
    c.sweep.reset_interval = []
  if "meta_grad" not in c.sweep:
    c.sweep.meta_grad = ["grad_norm_0.5", "grad_clip_1.0"]
  return c
