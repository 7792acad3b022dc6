"""Meta-train Optim4RL on a task of your own, without editing the package, then use it from Keras.

  .venv/bin/python examples/custom_task.py --workdir=runs/custom_task          # about a minute on 2 CPU cores
  .venv/bin/python examples/custom_task.py --units=64 --iterations=200 --mlp_dims=16,16 --workdir=...

The task: every training unit is an ordinary ``keras.Model`` (a small MLP) fitting its own sine wave
y = a sin(x + b) by regression. The units' weights are batched on a leading unit axis and the one model is
applied to each unit's weights with ``model.stateless_call`` under ``tf.vectorized_map``.
:class:`SineRegression` is an ``optim4rl_tf.meta.InnerProblem``, read top to bottom:

* its unit state (``Units``): every field with the unit axis first, ``params`` and ``opt_state`` among them;
* ``init_units``: new networks and sine waves, the optimizer's fresh state (``optimizer.init``);
* ``inner_step``: one update of every unit with the optimizer it is given, on a fresh batch;
* ``meta_loss``: the regression loss after the M updates, on a fresh batch (and its gradient w.r.t. the
  parameters, which ``meta.ReplayedVJP`` asks for).

``meta.ReplayedVJP`` (exact for Optim4RL, whose gradient input is under stop-gradient) drives the problem,
and ``meta.MetaTrainer`` runs it: pipeline resets (a unit lives ``reset_interval`` outer iterations,
staggered across units), Adam on phi, clipping, NaN guard, checkpoints, ``phi.npz`` in ``--workdir``
(started again with the same ``--workdir`` it resumes). Then a fresh Keras model is compiled with
``optim4rl_tf.Optim4RL(meta_params=<workdir>/phi.npz)`` and fitted on one sine wave with ``model.fit``.
"""

import argparse
import os
import sys
from typing import Any, NamedTuple

from optim4rl_tf.utils import runtime

if __name__ == "__main__":
  runtime.configure_process()  # faster CPU allocators; must run before TensorFlow is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import optim4rl_tf  # noqa: E402
from optim4rl_tf import meta  # noqa: E402
from optim4rl_tf.optimizers import meta_params as meta_params_lib  # noqa: E402

X_RANGE = 5.0  # inputs x ~ U[-5, 5]
AMPLITUDE = (0.1, 5.0)  # a ~ U[0.1, 5]
PHASE = (0.0, np.pi)  # b ~ U[0, pi]


def make_model(hidden):
  return keras.Sequential([
      keras.Input((1,)),
      keras.layers.Dense(hidden, activation="tanh"),
      keras.layers.Dense(hidden, activation="tanh"),
      keras.layers.Dense(1)
  ])


class Units(NamedTuple):
  params: Any  # the model's trainable weights, one copy per unit: list of [U, ...]
  opt_state: Any  # the learned optimizer's state (Optim4RL: hidden states [H, U, P], P = weights per unit)
  amplitude: Any  # [U] each unit's sine wave
  phase: Any  # [U]


class SineRegression:
  """A ``meta.InnerProblem``: U Keras MLPs, each regressing its own sine wave."""

  unit_axes = {}  # every field has the unit axis first (opt_state: the optimizer's own layout)

  def __init__(self, model, num_units, inner_steps=4, batch_size=32, learning_rate=3e-3, name="sine"):
    self.name = name
    self.model = model
    self.num_units = num_units
    self.inner_steps = inner_steps
    self.batch_size = batch_size
    self.learning_rate = learning_rate
    self.shapes = [tuple(w.shape) for w in model.trainable_weights]

  def init_units(self, optimizer, key):
    """Per-unit Glorot-uniform kernels and zero biases (Keras's Dense defaults), new sine waves."""
    keys = tf.random.experimental.stateless_split(key, len(self.shapes) + 2)
    u = self.num_units
    params = []
    for i, shape in enumerate(self.shapes):
      if len(shape) == 2:
        limit = float(np.sqrt(6.0 / (shape[0] + shape[1])))
        params.append(tf.random.stateless_uniform([u, *shape], keys[i], -limit, limit))
      else:
        params.append(tf.zeros([u, *shape]))
    return Units(params=params,
                 opt_state=optimizer.init(params),
                 amplitude=tf.random.stateless_uniform([u], keys[-2], *AMPLITUDE),
                 phase=tf.random.stateless_uniform([u], keys[-1], *PHASE))

  def losses_and_grads(self, params, units, key):
    """Each unit's mean squared error on a fresh batch ([U]) and its gradient (list like ``params``)."""
    x = tf.random.stateless_uniform([self.num_units, self.batch_size, 1], key, -X_RANGE, X_RANGE)
    y = units.amplitude[:, None, None] * tf.sin(x + units.phase[:, None, None])
    with tf.GradientTape() as tape:
      tape.watch(params)
      pred = tf.vectorized_map(lambda a: self.model.stateless_call(a[0], [], a[1])[0], (params, x))
      losses = tf.reduce_mean(tf.square(pred - y), axis=[1, 2])
      total = tf.reduce_sum(losses)  # units are independent: d total / d params = per-unit gradients
    return losses, tape.gradient(total, params)

  def inner_step(self, optimizer, units, key):
    losses, grads = self.losses_and_grads(units.params, units, key)
    updates, opt_state = optimizer.update(grads, units.opt_state, units.params, self.learning_rate)
    params = [p + d for p, d in zip(units.params, updates)]
    return meta.InnerStep(units._replace(params=params, opt_state=opt_state), {"loss": tf.reduce_mean(losses)})

  def meta_loss(self, units, key, sums, with_grads=False):
    losses, grads = self.losses_and_grads(units.params, units, tf.random.experimental.stateless_fold_in(key, -1))
    metrics = {"meta_loss": tf.reduce_mean(losses), "inner_loss": sums["loss"] / self.inner_steps}
    # The meta-loss is the mean over units: d meta-loss / d theta_M per unit is its own gradient / U.
    grads = [g / self.num_units for g in grads] if with_grads else None
    return meta.MetaLoss(tf.reduce_mean(losses), units, metrics, grads)


def sine_data(n, seed):
  rng = np.random.default_rng(seed)
  a, b = rng.uniform(*AMPLITUDE), rng.uniform(*PHASE)
  x = rng.uniform(-X_RANGE, X_RANGE, size=(n, 1)).astype(np.float32)
  return x, (a * np.sin(x + b)).astype(np.float32)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="runs/custom_task", help="checkpoints, meta_metrics and phi.npz")
  p.add_argument("--units", type=int, default=16, help="training units (agents) meta-trained in parallel")
  p.add_argument("--iterations", type=int, default=30, help="outer iterations (meta-updates of phi)")
  p.add_argument("--inner_updates", type=int, default=4, help="M: learned-optimizer updates per iteration")
  p.add_argument("--batch_size", type=int, default=32, help="regression points per inner update")
  p.add_argument("--hidden", type=int, default=32, help="width of the MLP's two hidden layers")
  p.add_argument("--lr", type=float, default=3e-3, help="learning rate (the optimizer's output multiplier)")
  p.add_argument("--meta_lr", type=float, default=3e-3, help="Adam learning rate on phi")
  p.add_argument("--reset_interval", type=int, default=8, help="outer iterations a unit lives")
  p.add_argument("--mlp_dims", default="", help="Optim4RL's MLP heads, e.g. 16,16 (empty: head-free)")
  p.add_argument("--fit_epochs", type=int, default=20, help="epochs of the final Keras fit")
  p.add_argument("--fit_points", type=int, default=512, help="points of the sine wave the final fit sees")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def main(argv=None):
  """Meta-trains, then fits a Keras model with the result; returns a dict of what happened."""
  args = parse_args(argv)
  mlp_dims = tuple(int(d) for d in args.mlp_dims.split(",") if d.strip())
  core, phi0 = meta_params_lib.resolve("optim4rl", None, mlp_dims=mlp_dims, hidden_size=8, seed=args.seed)
  problem = SineRegression(make_model(args.hidden),
                           args.units,
                           inner_steps=args.inner_updates,
                           batch_size=args.batch_size,
                           learning_rate=args.lr)
  config = meta.trainer_config(num_iterations=args.iterations,
                               meta_lr=args.meta_lr,
                               seed=args.seed,
                               checkpoint_every=max(args.iterations // 3, 1),
                               pipeline=True,
                               reset_interval=args.reset_interval)
  os.makedirs(args.workdir, exist_ok=True)
  trainer = meta.MetaTrainer(config, args.workdir, estimators=[meta.ReplayedVJP(problem)], core=core, phi=phi0)
  meta_losses = []

  def progress(t, metrics):
    meta_losses.append(metrics["sine/meta_loss"])
    if t == 1 or t % 10 == 0 or t == args.iterations:
      print(
          f"outer iteration {t}/{args.iterations}: meta-loss {metrics['sine/meta_loss']:.3f} "
          f"(mean loss during the {args.inner_updates} updates {metrics['sine/inner_loss']:.3f})",
          flush=True)

  phi = trainer.train(progress)
  phi_path = os.path.join(args.workdir, "phi.npz")
  phi_change = max(float(np.max(np.abs(phi[k] - phi0[k]))) for k in phi)
  print(
      f"meta-training done: {trainer.applied_through} applied outer iterations, max |phi - phi0| = "
      f"{phi_change:.3g} -> {phi_path}",
      flush=True)

  # The learned optimizer from Keras: a fresh model, one new sine wave, model.fit.
  keras.utils.set_random_seed(args.seed)
  x, y = sine_data(args.fit_points, args.seed + 1)
  model = make_model(args.hidden)
  model.compile(optimizer=optim4rl_tf.Optim4RL(learning_rate=args.lr, meta_params=phi_path), loss="mse")
  history = model.fit(x, y, batch_size=args.batch_size, epochs=args.fit_epochs, verbose=0)
  fit_losses = [float(v) for v in history.history["loss"]]
  print(
      f"Keras fit with Optim4RL(meta_params={phi_path!r}): loss {fit_losses[0]:.3f} (epoch 1) -> "
      f"{fit_losses[-1]:.3f} (epoch {len(fit_losses)})",
      flush=True)
  return {
      "phi_path": phi_path,
      "iterations": trainer.applied_through,
      "meta_losses": meta_losses,
      "phi_change": phi_change,
      "fit_losses": fit_losses
  }


if __name__ == "__main__":
  main(sys.argv[1:])
