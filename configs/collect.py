"""Gradient-collection configs (docs/fidelity.md §8; paper Fig. 1, Fig. 5, Table 4).

  python launch/collect_gradients.py --config=configs/collect.py:bdl --workdir=runs/collect_bdl
  python launch/collect_gradients.py --config=configs/collect.py:mnist --workdir=runs/collect_mnist
  python launch/collect_gradients.py --config=configs/collect.py:mnist \
      --config.data.path=~/data/mnist --workdir=runs/collect_mnist_real
  python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4

Variants:
  bdl           A2C on big_dense_long (collect_bdl.json config 1): 512 envs, 3e7 steps (2,929 updates),
                RMSProp lr 3e-3, elementwise clip 1, gamma .995, lambda .95, seed 42, one agent; the
                env-averaged gradient of every update (before clipping), every 100th of the 39,482
                coordinates (395 kept). About 30 min on 2 CPU cores.
  bdl_adam      the same with Adam (collect_bdl.json config 2).
  bdl_reduced   bdl for 3e6 steps (292 updates; ~3 min).
  bdl_tiny      bdl for 64 envs x 20 x 60 updates (seconds; smoke test).
  mnist         supervised run (collect_mnist.json): the §3.4 MNIST network, RMSProp lr 3e-4, batch 128,
                seed 1, every step's minibatch gradient, every 1000th of 401,850 coordinates (402 kept).
                MNIST from ``data.path`` (IDX or .npz, nothing is downloaded); empty path: the scikit-learn
                digits STAND-IN (labelled as such in every output; epochs auto = as many steps as MNIST).
  mnist_reduced mnist capped at 600 steps.

The A2C variants are configs/a2c.py configs with the ``collect`` block switched on; any A2C run can collect
the same way: ``python launch/train.py --config=configs/a2c.py:big_dense_long --config.collect.enabled=True
--config.collect.every_nth=100 --workdir=...`` (gradients in WORKDIR/grads).
"""

import ml_collections

RL_VARIANTS = ("bdl", "bdl_adam", "bdl_reduced", "bdl_tiny")
SL_VARIANTS = ("mnist", "mnist_reduced")
VARIANTS = RL_VARIANTS + SL_VARIANTS


def _a2c_configs():
  from optim4rl_tf.configs import a2c  # pylint: disable=import-outside-toplevel
  return a2c


def collect_block(every_nth):
  return ml_collections.ConfigDict(
      dict(
          enabled=True,
          every_nth=every_nth,  # official data_reduce
          chunk_steps=1024,  # steps per chunk file
          subdir="grads"))


def rl_config(variant):
  c = _a2c_configs().get_config("big_dense_long")
  c.variant = variant
  c.kind = "a2c"
  c.num_seeds = 1
  c.seed = 42
  c.optimizer.name = "adam" if variant == "bdl_adam" else "rmsprop"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.grad_clip = 1.0
  c.train_steps = {"bdl_reduced": 3e6, "bdl_tiny": 64 * 20 * 60}.get(variant, 3e7)
  if variant == "bdl_tiny":
    c.env.num_envs = 64
  c.collect = collect_block(100)
  c.save_params = False
  return c


def sl_config(variant):
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.kind = "supervised"
  c.data = ml_collections.ConfigDict(dict(path=""))  # MNIST dir/.npz; empty: scikit-learn digits stand-in
  c.batch_size = 128
  c.epochs = 0  # 0: auto (10 for MNIST; the stand-in runs the MNIST run's 4,200 steps)
  c.max_steps = 600 if variant == "mnist_reduced" else 0  # 0: no cap
  c.seed = 1
  c.optimizer = ml_collections.ConfigDict(dict(name="rmsprop", learning_rate=3e-4))
  c.collect = ml_collections.ConfigDict(dict(every_nth=1000, chunk_steps=1024, subdir="grads"))
  c.steps_per_call = 50  # optimizer steps per tf.function call
  c.console_every_secs = 10.0
  return c


def get_config(variant="bdl"):
  if variant in RL_VARIANTS:
    return rl_config(variant)
  if variant in SL_VARIANTS:
    return sl_config(variant)
  raise ValueError(f"Unknown collect variant {variant!r}; valid: {', '.join(VARIANTS)}")
