"""PPO on Brax configs (docs/fidelity.md §7.2): the official baselines, laptop-sized CPU variants and a cheap test task.

  python launch/train.py --config=configs/ppo.py:ant_cpu --workdir=runs/ppo_ant_cpu
  python launch/meta_train.py --config=configs/ppo.py:meta_ant --workdir=runs/meta_ant   # MetaPPO
  python launch/train.py --config=configs/ppo.py:ant --config.optimizer.name=rmsprop --workdir=runs/ppo_ant
  python launch/train.py --config=configs/ppo.py:ant --config.optimizer.name=optim4rl \
      --config.optimizer.meta_params=runs/meta/phi.npz --workdir=runs/lopt_rl_ant     # docs/fidelity.md §10

Variants:
  * ant, humanoid, inverted_double_pendulum, walker2d -- every number of docs/fidelity.md §7.2 (the official
    ``ppo_*.json`` baselines; the ``lopt_*`` tests use the same settings with a learned optimizer).
    These are GPU-sized (2048-4096 envs, 2e7-1e8 steps): days on a CPU.
  * ant_cpu, humanoid_cpu, inverted_double_pendulum_cpu, walker2d_cpu -- the same agent, losses, networks
    and hyper-parameters, with 256 envs, minibatches of 256 trajectories, 8 minibatches, 16 evaluation
    envs and 1e6-3e6 env steps: tens of minutes on a 2-core laptop.
  * inverted_pendulum -- the cheap task of the tests (learns within ~1e5 env steps, a couple of minutes).
  * meta_ant, meta_humanoid -- MetaPPO (docs/fidelity.md §7.5, agent 'meta_ppo'): meta-training a learned optimizer
    (``optimizer.name``: optim4rl, linear_optim, l2lgd2, or star: MetaPPO with the full-unroll estimator's
    second-order meta-gradients); meta_ant_nopipe, meta_humanoid_nopipe: the same without pipeline training (Table 1).
    Both through PPO inner updates, with the official reduced settings (2048 envs, batch 1024,
    8 minibatches, unroll 5, 4 epochs, value (64,)x5, M = 4, 610 outer iterations);
    meta_inverted_pendulum: a tiny CPU smoke run.
    The meta-gradient runs through the simulator, the env state and the normaliser as the official
    jax.grad does (``meta_grad_through_env=True``); ``--config.meta_grad_through_env=False`` keeps only
    the value and entropy paths (a cheaper approximation; see optim4rl_tf/meta/meta_ppo.py).

    python launch/meta_train.py --config=configs/ppo.py:meta_ant --config.reset_interval=128 \
        --config.meta_lr=1e-4 --workdir=runs/meta_rl_ant          # writes runs/meta_rl_ant/phi.npz

Fields: ``env.bridge`` picks the Brax bridge ('graph': the whole rollout and update inside one
tf.function through jax2tf; 'numpy': a jitted JAX step per call driven from Python). ``num_seeds`` agents
train together as one graph (a seed axis on every parameter), with ``env.num_envs`` envs EACH.
"""

import ml_collections

FULL = ("ant", "humanoid", "inverted_double_pendulum", "walker2d")
CPU = tuple(f"{t}_cpu" for t in FULL)
META = ("meta_ant", "meta_humanoid", "meta_inverted_pendulum", "meta_ant_nopipe", "meta_humanoid_nopipe")
VARIANTS = FULL + CPU + ("inverted_pendulum",) + META

# docs/fidelity.md §7.2, one row per parameter.
_TABLE = dict(
    ant=dict(train_steps=1e8,
             reward_scaling=10.0,
             num_envs=4096,
             batch_size=2048,
             unroll_length=5,
             update_epochs=4,
             entropy_cost=1e-2,
             discount=0.97,
             learning_rate=3e-4,
             num_evals=10),
    humanoid=dict(train_steps=1e8,
                  reward_scaling=0.1,
                  num_envs=2048,
                  batch_size=1024,
                  unroll_length=10,
                  update_epochs=8,
                  entropy_cost=1e-3,
                  discount=0.97,
                  learning_rate=3e-4,
                  num_evals=10),
    inverted_double_pendulum=dict(train_steps=2e7,
                                  reward_scaling=10.0,
                                  num_envs=2048,
                                  batch_size=1024,
                                  unroll_length=5,
                                  update_epochs=4,
                                  entropy_cost=1e-2,
                                  discount=0.97,
                                  learning_rate=3e-4,
                                  num_evals=20),
    walker2d=dict(train_steps=5e7,
                  reward_scaling=5.0,
                  num_envs=2048,
                  batch_size=512,
                  unroll_length=20,
                  update_epochs=8,
                  entropy_cost=1e-3,
                  discount=0.997,
                  learning_rate=3e-5,
                  num_evals=20),
)
_CPU_STEPS = dict(ant=3e6, humanoid=3e6, inverted_double_pendulum=1e6, walker2d=2e6)


def get_config(variant="ant_cpu"):
  if variant not in VARIANTS:
    raise ValueError(f"Unknown ppo variant {variant!r}; valid: {', '.join(VARIANTS)}")
  if variant in META:
    return _meta_config(variant)
  task = variant[:-4] if variant.endswith("_cpu") else variant
  row = dict(_TABLE.get(task, _TABLE["inverted_double_pendulum"]))
  c = ml_collections.ConfigDict()
  c.agent = "ppo"
  c.variant = variant
  c.env = ml_collections.ConfigDict(
      dict(
          name=task,
          num_envs=row["num_envs"],  # environments PER SEED
          episode_length=1000,
          action_repeat=1,
          backend="spring",  # the official code's Brax backend (docs/fidelity.md §7.1)
          bridge="graph",  # graph | numpy (see the module docstring)
      ))
  c.train_steps = row["train_steps"]  # env steps per seed (float field so 1e8 parses)
  c.reward_scaling = row["reward_scaling"]  # in the loss only; returns are unscaled
  c.batch_size = row["batch_size"]  # trajectories per minibatch
  c.num_minibatches = 32
  c.unroll_length = row["unroll_length"]
  c.update_epochs = row["update_epochs"]
  c.clipping_epsilon = 0.3
  c.entropy_cost = row["entropy_cost"]
  c.discount = row["discount"]
  c.gae_lambda = 0.95
  c.normalize_observations = True
  c.normalize_advantage = True
  c.optimizer = ml_collections.ConfigDict(
      dict(
          name="adam",  # adam | rmsprop | optim4rl | linear_optim | l2lgd2
          learning_rate=row["learning_rate"],
          grad_clip=1.0,  # elementwise, before the optimizer (docs/fidelity.md §7.2)
          meta_params="",  # learned optimizers: .npz of meta-parameters (docs/fidelity.md §10)
      ))
  c.network = ml_collections.ConfigDict(dict(policy_hidden=(32,) * 4, value_hidden=(256,) * 5))
  c.num_evals = row["num_evals"]  # evaluations after training epochs (plus one at step 0)
  c.num_eval_envs = 128  # evaluation episodes per seed (one per env)
  c.deterministic_eval = False  # Brax's default: stochastic evaluation policy
  c.num_seeds = 1
  c.seed = 0  # seeds are seed, seed+1, ..., seed+num_seeds-1
  c.final_last = 2  # final performance = mean of the last 2 evaluation returns
  # Logging.
  c.console_every_secs = 10.0
  c.plot = True
  c.save_params = True
  # Machinery.
  c.iterations_per_call = 0  # graph bridge: training steps per tf.function call; 0: adapt
  c.chunk_secs = 5.0
  c.jit_compile = False  # XLA for the gradient epochs

  if variant.endswith("_cpu"):
    c.env.num_envs = 256
    c.batch_size = 256
    c.num_minibatches = 8
    c.num_eval_envs = 16
    c.train_steps = _CPU_STEPS[task]
  elif variant == "inverted_pendulum":
    c.env.num_envs = 16
    c.batch_size = 16
    c.num_minibatches = 4
    c.unroll_length = 10
    c.update_epochs = 4
    c.reward_scaling = 1.0
    c.discount = 0.99
    c.optimizer.learning_rate = 1e-3
    c.num_eval_envs = 16
    c.num_evals = 5
    c.train_steps = 1e5
    c.network.value_hidden = (64,) * 2
  return c


def _meta_config(variant):
  """MetaPPO (docs/fidelity.md §7.5)."""
  pipeline = not variant.endswith("_nopipe")
  task = variant[len("meta_"):].replace("_nopipe", "")
  c = ml_collections.ConfigDict()
  c.agent = "meta_ppo"
  c.variant = variant
  c.seed = 0
  c.env = ml_collections.ConfigDict(
      dict(name=task, num_envs=2048, episode_length=1000, action_repeat=1, backend="spring",
           bridge="graph"))  # all units' envs together
  c.num_units = 1  # official: one unit per device, num_envs / n envs each
  c.optimizer = ml_collections.ConfigDict(dict(name="optim4rl", mlp_dims=(), hidden_size=8, init_meta_params=""))
  c.learning_rate = 3e-4  # agent lr inside the optimizer network
  c.grad_clip = 1.0  # elementwise clip of the agent gradient
  c.batch_size = 1024
  c.num_minibatches = 8
  c.unroll_length = 5
  c.update_epochs = 4
  c.inner_updates = 4  # M full PPO training steps per outer iteration
  c.reward_scaling = 0.1 if task == "humanoid" else 10.0
  c.entropy_cost = 1e-3 if task == "humanoid" else 1e-2
  c.discount = 0.97
  c.gae_lambda = 0.95
  c.clipping_epsilon = 0.3
  c.normalize_observations = True
  c.normalize_advantage = True
  c.network = ml_collections.ConfigDict(dict(policy_hidden=(32,) * 4, value_hidden=(64,) * 5))
  c.pipeline = pipeline  # False: units never reset (Table 1's "without pipeline training")
  c.reset_interval = 128  # m (outer iterations); sweep below
  c.meta_lr = 1e-4
  c.meta_grad_clip = -1.0  # elementwise (<= 0: off) ...
  c.meta_grad_norm = 0.5  # ... or global-norm clipping of the meta-gradient
  c.max_norm = -1.0
  c.train_steps = 1e8
  c.num_iterations = 0  # 0: floor(train_steps / (batch * unroll * minibatches * M)) = 610
  c.chunk_size = 0  # approximation only: units per meta-gradient replay chunk (0: auto)
  # True (default): the official meta-gradient, through the reparameterised actions, the differentiable
  # Brax step, the env state and the normaliser (docs/fidelity.md §7.5). False: a cheaper APPROXIMATION
  # with rollout data held constant (only theta_M's direct value and entropy paths).
  c.meta_grad_through_env = True
  c.checkpoint_every = 10
  c.max_nonfinite = 5
  c.nonfinite = "skip"  # "stop": end at the first non-finite phi, as the official MetaPPO (§5.4)
  c.sweep = ml_collections.ConfigDict(
      dict(reset_interval=[32, 64, 128, 256, 512],
           meta_lr=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3],
           meta_grad=["grad_norm_0.5", "grad_clip_1.0"]))
  if not pipeline:
    c.sweep.reset_interval = []
  if task == "inverted_pendulum":  # tiny smoke run on CPU
    c.env.num_envs = 32
    c.env.episode_length = 200
    c.num_units = 2
    c.batch_size = 16
    c.num_minibatches = 2
    c.update_epochs = 2
    c.inner_updates = 2
    c.reward_scaling = 1.0
    c.reset_interval = 2
    c.meta_lr = 1e-3
    c.network.value_hidden = (64,) * 2
    c.num_iterations = 4
    c.checkpoint_every = 2
  return c
