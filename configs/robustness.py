"""Robustness of a fixed learned optimizer to A2C hyper-parameters (paper Tables 5-7; docs/fidelity.md §9.4).

  python launch/robustness.py --config=configs/robustness.py \
      --config.meta_params=runs/meta_bdl/phi.npz --workdir=runs/robustness
  # reduced budget (3 seeds, 1e6 steps per run, only Table 5 on small_dense_short):
  python launch/robustness.py --config=configs/robustness.py:small_dense_short \
      --config.meta_params=runs/meta_bdl/phi.npz --config.num_seeds=3 --config.train_steps=1e6 \
      --config.tables=5 --workdir=runs/robustness_small

One A2C run per (task, hyper-parameter value), ``num_seeds`` seeds as the unit axis of one vectorised graph
(configs/a2c.py settings: 512 envs per seed, 3e7 steps, rollout 20, critic 0.5). Each table is a one-factor
sweep with the other two hyper-parameters at their A2C defaults (lambda 0.95, entropy 0.01, discount 0.995);
the default setting, identical in the three tables, is run once and shown in each (the paper ran separate
sets). Final performance = mean of the last 20 logged returns of a seed, reported as mean ± 90% bootstrap
CI half-width over seeds, beside the paper's numbers.

Unstated in the paper (docs/fidelity.md §9.4): which phi, the test learning rate and the reward scale. Here:
phi = ``meta_params`` (required; an .npz written by the meta-trainer), learning rate 3e-3 (the agent lr of
sds and bdl in meta_rl_grid and of lopt_rl_bdl), elementwise clip 1, reward scale 1 (baseline A2C).

Variants: ``default`` (both tasks), ``small_dense_short``, ``big_dense_long``, ``tiny`` (smoke test: sds,
2 seeds x 8 envs, 6 iterations per run, untrained phi allowed).
Fields ``tasks``, ``tables`` and ``sweep.*`` are comma-separated strings.
"""

import ml_collections

TASKS = ("small_dense_short", "big_dense_long")
VARIANTS = ("default",) + TASKS + ("tiny",)


def get_config(variant="default"):
  if variant not in VARIANTS:
    raise ValueError(f"Unknown robustness variant {variant!r}; valid: {', '.join(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.meta_params = ""  # the fixed learned optimizer (.npz); required unless allow_untrained
  c.allow_untrained = tiny  # empty meta_params: fresh random phi (smoke tests only)
  c.optimizer = ml_collections.ConfigDict(dict(name="optim4rl", learning_rate=3e-3, grad_clip=1.0))
  c.tasks = "small_dense_short" if variant in ("small_dense_short", "tiny") else (
      "big_dense_long" if variant == "big_dense_long" else ",".join(TASKS))
  c.tables = "5,6,7"  # 5: GAE lambda, 6: entropy weight, 7: discount
  c.sweep = ml_collections.ConfigDict(
      dict(gae_lambda="0.9,0.95,0.99,0.995", entropy_weight="0.005,0.01,0.02,0.04", discount="0.9,0.95,0.99,0.995"))
  c.defaults = ml_collections.ConfigDict(dict(gae_lambda=0.95, entropy_weight=0.01, discount=0.995))
  c.num_seeds = 2 if tiny else 10
  c.seed = 0
  c.train_steps = 8 * 20 * 6 if tiny else 3e7  # env steps per seed and run
  c.num_envs = 8 if tiny else 512  # per seed
  c.reward_scale = 1.0
  c.resume = True  # reuse runs already finished in workdir with the same settings
  # Machinery (passed to the A2C runs).
  c.iterations_per_call = 3 if tiny else 0
  c.chunk_secs = 2.0
  c.conv_form = "auto"
  c.jit_compile = False
  c.console_every_secs = 0.0 if tiny else 30.0
  return c
