"""Meta-train Optim4RL on a broader task family than the paper's: gridworlds, Catch and CartPole (#25 item 6).

  .venv/bin/python examples/broad_family.py --workdir=runs/broad_family                 # the pilot's size
  .venv/bin/python examples/broad_family.py --workdir=runs/broad_family --units=128 --iterations=585

The family: the six gridworlds of ``configs/meta_a2c.py:grid6`` (their reward scales and agent learning
rates), Catch, and CartPole-v1, gymnasium's classic-control task, written below as a batched in-graph
TensorFlow environment (:class:`CartPole`, the package's ``envs.base.DiscreteEnv`` protocol) with gymnasium's
dynamics and constants. Every task is an ordinary ``meta.MetaA2C`` problem (A2C with the official small
network, one environment per unit), each held by a ``meta.ReplayedVJP`` estimator, all driven by one
``meta.MetaTrainer`` on a shared phi: the learner names no task, so a task of your own joins the family the way
CartPole does here (the ``examples/custom_task.py`` interface). The official grid6 cell (reset interval 72,
meta lr 1e-3, elementwise meta-gradient clip 1.0, per-task max_norm 0.5) is the default; the same
``--workdir`` resumes; every outer iteration's metrics (each task's returns, meta-loss, ...) go to
``<workdir>/family_metrics.csv``. The small_sparse gridworlds are left out, so that they stay unseen tasks to measure it
on (``launch/generalisation.py``).
"""

import argparse
import csv
import math
import os
import sys
from typing import NamedTuple

from optim4rl_tf.utils import runtime

if __name__ == "__main__":
  runtime.configure_process()  # faster CPU allocators; must run before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from optim4rl_tf import meta  # noqa: E402
from optim4rl_tf.agents import a2c  # noqa: E402
from optim4rl_tf.agents import networks  # noqa: E402
from optim4rl_tf.configs import meta_a2c as meta_a2c_configs  # noqa: E402
from optim4rl_tf.meta import meta_a2c  # noqa: E402
from optim4rl_tf.optimizers import meta_params as meta_params_lib  # noqa: E402

# gymnasium's CartPole-v1 (gymnasium/envs/classic_control/cartpole.py), Euler integration.
GRAVITY, MASS_CART, MASS_POLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASS_CART + MASS_POLE
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
RESET_RANGE = 0.05  # every state variable starts uniform in (-0.05, 0.05)
MAX_STEPS = 500  # CartPole-v1's TimeLimit


class CartPoleState(NamedTuple):
  x: tf.Tensor  # [N, 4] float32: cart position, cart velocity, pole angle, pole angular velocity
  t: tf.Tensor  # [N] int32: steps taken in the current episode


class CartPole:
  """A batch of ``num_envs`` CartPole-v1 environments as pure in-graph functions (``envs.base.DiscreteEnv``).

  Actions int32 [N] (0 push left, 1 push right); observations float32 [N, 4] (the state); reward 1 per step
  (times ``reward_scale``), the terminating step included, as gymnasium's; ``done`` when the pole leans
  past 12 degrees or the cart leaves [-2.4, 2.4] (terminated) or after 500 steps (truncated), and the
  env then starts a new episode within the step."""

  name = "cartpole"
  num_actions = 2
  obs_shape = (4,)
  horizon = MAX_STEPS

  def __init__(self, num_envs, reward_scale=1.0):
    if int(num_envs) < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    self.num_envs = int(num_envs)
    self.reward_scale = float(reward_scale)

  def reset(self, seed):
    """Fresh episodes; ``seed`` a stateless key int32 [2] (or a Python int s, the key [0, s])."""
    seed = tf.convert_to_tensor(seed, tf.int32)
    if seed.shape.rank == 0:
      seed = tf.stack([tf.zeros_like(seed), seed])
    x = tf.random.stateless_uniform([self.num_envs, 4], seed, -RESET_RANGE, RESET_RANGE)
    return CartPoleState(x, tf.zeros([self.num_envs], tf.int32))

  def observe(self, state):
    return state.x

  @staticmethod
  def dynamics(x, action):
    """One Euler step of gymnasium's equations: x [N, 4], action [N] -> next x [N, 4]."""
    pos, vel, theta, omega = tf.unstack(x, axis=1)
    force = tf.where(tf.equal(tf.cast(action, tf.int32), 1), FORCE, -FORCE)
    cos, sin = tf.cos(theta), tf.sin(theta)
    temp = (force + POLE_MASS_LENGTH * tf.square(omega) * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * tf.square(cos) / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    return tf.stack([pos + TAU * vel, vel + TAU * x_acc, theta + TAU * omega, omega + TAU * theta_acc], axis=1)

  def step(self, state, action, seed):
    x = self.dynamics(state.x, action)
    t = state.t + 1
    terminated = (tf.abs(x[:, 0]) > X_LIMIT) | (tf.abs(x[:, 2]) > THETA_LIMIT)
    done = terminated | (t >= MAX_STEPS)
    fresh = self.reset(seed)
    nxt = CartPoleState(tf.where(done[:, None], fresh.x, x), tf.where(done, fresh.t, t))
    reward = tf.fill([self.num_envs], tf.constant(self.reward_scale, tf.float32))
    return nxt, nxt.x, reward, tf.cast(done, tf.float32)


def cartpole_task(config, num_units, learning_rate, reward_scale):
  """CartPole as a ``meta_a2c.Task`` with the config's A2C settings and the official small network
  (Dense(32) features, the network of the small gridworlds)."""
  env = CartPole(num_units, reward_scale=reward_scale)
  net = networks.ActorCriticNet("small", env.obs_shape, env.num_actions)
  hparams = a2c.A2CHParams(discount=config.discount,
                           gae_lambda=config.gae_lambda,
                           critic_weight=config.critic_weight,
                           entropy_weight=config.entropy_weight)
  return meta_a2c.Task(name=env.name,
                       env=env,
                       net=net,
                       num_units=num_units,
                       learning_rate=float(learning_rate),
                       grad_clip=float(config.agent_grad_clip),
                       hparams=hparams,
                       rollout_steps=config.rollout_steps,
                       inner_updates=config.inner_updates)


FAMILY = tuple(name for name, _, _ in meta_a2c_configs.GRID6) + ("catch", "cartpole")


def build(args):
  """(trainer config, estimators) of the family's tasks ``args.tasks`` with ``args.units`` units per task."""
  config = meta_a2c_configs.get_config("grid6")
  config.num_units = args.units
  specs = list(config.tasks) + list(meta_a2c_configs.get_config("catch").tasks)  # Catch with its own agent lr
  config.tasks = [spec for spec in specs if spec.env_name in args.tasks]
  tasks = meta_a2c.build_tasks(config) if config.tasks else []
  if "cartpole" in args.tasks:
    tasks.append(cartpole_task(config, args.units, args.cartpole_lr, args.cartpole_reward_scale))
  trainer_config = meta.trainer_config(num_iterations=args.iterations,
                                       seed=args.seed,
                                       meta_lr=args.meta_lr,
                                       meta_grad_clip=config.meta_grad_clip,
                                       meta_grad_norm=config.meta_grad_norm,
                                       max_norm=config.max_norm,
                                       pipeline=True,
                                       reset_interval=args.reset_interval,
                                       checkpoint_every=args.checkpoint_every)
  return trainer_config, [meta.ReplayedVJP(meta_a2c.MetaA2C(t)) for t in tasks]


METRICS_FILE = "family_metrics.csv"  # one row per outer iteration: "iteration" and every metric of the trainer


def keep_rows_through(path, iteration):
  """The rows of the metrics CSV at ``path`` up to ``iteration`` (the one a resumed run goes on from), the file
  rewritten to hold only those: rows of iterations after the last checkpoint, which the resumed run makes again,
  are dropped, so the file reads like one of an unbroken run. Returns the kept rows (dicts)."""
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= iteration]
  _write_rows(path, rows)
  return rows


def append_row(path, rows, iteration, metrics):
  """``rows`` plus this iteration's metrics, written to ``path`` (atomically, the whole file: new metrics
  keys add columns). Returns the new rows."""
  rows = rows + [{"iteration": iteration, **{k: f"{float(v):.6g}" for k, v in sorted(metrics.items())}}]
  _write_rows(path, rows)
  return rows


def _write_rows(path, rows):
  fields = ["iteration"] + sorted({k for r in rows for k in r} - {"iteration"})
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="run folder (resumed when it holds a run)")
  p.add_argument("--units", type=int, default=32, help="units per task")
  p.add_argument("--iterations", type=int, default=150, help="outer iterations")
  p.add_argument("--meta_lr", type=float, default=1e-3, help="Adam learning rate on phi")
  p.add_argument("--reset_interval", type=int, default=72, help="outer iterations a unit lives")
  p.add_argument("--cartpole_lr", type=float, default=3e-3, help="CartPole's agent learning rate")
  p.add_argument("--cartpole_reward_scale", type=float, default=0.1, help="CartPole's reward scale")
  p.add_argument("--checkpoint_every", type=int, default=10, help="outer iterations between checkpoints")
  p.add_argument("--mlp_dims", default="", help="Optim4RL's MLP heads, e.g. 16,16 (empty: head-free, official)")
  p.add_argument("--seed", type=int, default=0, help="meta seed")
  p.add_argument("--tasks", default=",".join(FAMILY), help="comma-separated tasks of the family to meta-train on")
  args = p.parse_args(argv)
  args.tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
  unknown = [t for t in args.tasks if t not in FAMILY]
  if unknown or not args.tasks:
    p.error(f"--tasks must name tasks of the family ({', '.join(FAMILY)}), got {unknown or 'none'}")
  for name in ("units", "iterations", "reset_interval", "checkpoint_every"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
  for name in ("meta_lr", "cartpole_lr", "cartpole_reward_scale"):
    if not getattr(args, name) > 0:
      p.error(f"--{name} must be positive, got {getattr(args, name)}")
  return args


def main(argv=None):
  """Meta-trains the family; returns a dict with phi's path, the applied iterations and each task's return."""
  args = parse_args(argv)
  mlp_dims = tuple(int(d) for d in args.mlp_dims.split(",") if d.strip())
  core, phi0 = meta_params_lib.resolve("optim4rl", None, mlp_dims=mlp_dims, hidden_size=8, seed=args.seed)
  config, estimators = build(args)
  names = [e.name for e in estimators]
  os.makedirs(args.workdir, exist_ok=True)
  trainer = meta.MetaTrainer(config, args.workdir, estimators=estimators, core=core, phi=phi0)
  metrics_path = os.path.join(args.workdir, METRICS_FILE)
  rows = keep_rows_through(metrics_path, int(trainer.iteration.numpy()))
  returns = {}

  def progress(t, metrics):
    nonlocal rows
    for name in names:
      if f"{name}/agent_return" in metrics:
        returns.setdefault(name, []).append(metrics[f"{name}/agent_return"])
    rows = append_row(metrics_path, rows, t, metrics)
    if t == 1 or t % 10 == 0 or t == args.iterations:
      shown = " | ".join(f"{n} {metrics[f'{n}/agent_return']:.3g}" for n in names if f"{n}/agent_return" in metrics)
      print(f"outer iteration {t}/{args.iterations}: returns {shown}", flush=True)

  phi = trainer.train(progress)
  phi_path = os.path.join(args.workdir, "phi.npz")
  change = max(float(np.max(np.abs(phi[k] - phi0[k]))) for k in phi)
  print(
      f"meta-training done: {trainer.applied_through} applied outer iterations, max |phi - phi0| = {change:.3g} "
      f"-> {phi_path}",
      flush=True)
  return {"phi_path": phi_path, "iterations": trainer.applied_through, "returns": returns, "tasks": names}


if __name__ == "__main__":
  main(sys.argv[1:])
