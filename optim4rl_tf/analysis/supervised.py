"""Supervised gradient collection (docs/fidelity.md §8.1 ``SLCollect``): the §3.4 MNIST network trained with RMSProp.

Model (official ``MNIST_CNN``): Conv(16, 2x2, SAME) -> ReLU -> Flatten -> Dense(32) -> ReLU -> Dense(10), LeCun-
normal kernels (flax default = Keras ``LecunNormal``), zero biases; 401,850 parameters on 28x28x1 inputs.
Loss: softmax cross-entropy, mean over the batch; inputs / 255. Optimizer: ``keras.optimizers.RMSprop(lr,
rho=0.9, epsilon=1e-8)`` = ``optax.rmsprop(lr)`` (eps inside the sqrt, nu_0 = 0), no clipping.

Batching (official ``make_batches``): the training set is sorted by label, every class truncated to
floor(min class count / batch) * batch examples and shuffled within its class; each epoch then takes a fresh
random permutation, cut into full batches (incomplete batch dropped). MNIST: 42 * 128 per class, 420
batches per epoch, 10 epochs -> 4,200 steps.

Collected: the minibatch gradient of every step (before the optimizer), flattened in flax order
(``feature_net/layers_0/{bias,kernel}, feature_net/layers_3/{bias,kernel}, head/{bias,kernel}``) and
sub-sampled every ``every_nth`` (1000 -> 402 coordinates), streamed to ``workdir/grads``
(:mod:`optim4rl_tf.analysis.collect`).

Data (nothing is downloaded):
  * ``data.path`` set: MNIST from local files -- a directory with ``train-images-idx3-ubyte[.gz]`` and
    ``train-labels-idx1-ubyte[.gz]`` (IDX), or with ``mnist.npz`` (Keras: x_train, y_train) or ``train.npz``
    (official layout: x, y), or the path of such an .npz file. Any 28x28 IDX set in that layout works
    (e.g. Fashion-MNIST; a path containing "fashion" is labelled so).
  * ``data.path`` empty: a STAND-IN -- scikit-learn's digits (1,797 8x8 images that ship inside the
    scikit-learn wheel) scaled to 0..255, resized to 20x20 and centred in 28x28 like MNIST's digit box. It
    is labelled as a stand-in in every output. With 174 images in its smallest class it has only 10 batches
    of 128 per epoch, so ``epochs = 0`` (auto) runs as many epochs as the MNIST run has steps (4,200).
"""

import csv
import math
import os
import time
from typing import NamedTuple

import numpy as np

from optim4rl_tf.analysis import mnist_data


def class_truncate_shuffle(y, batch_size, rng):
  """Official ``make_batches``: indices of the label-sorted set, each class truncated to
  floor(min class count / batch_size) * batch_size and shuffled within the class (class order kept)."""
  y = np.asarray(y)
  order = np.argsort(y, kind="stable")
  classes, counts = np.unique(y, return_counts=True)
  per_class = int(counts.min()) // int(batch_size) * int(batch_size)
  if per_class == 0:
    raise ValueError(f"the smallest class has {counts.min()} examples, fewer than one batch of "
                     f"{batch_size}")
  out, start = [], 0
  for c in counts:
    idx = order[start:start + per_class]
    out.append(rng.permutation(idx))
    start += int(c)
  return np.concatenate(out)


def epoch_batches(num_examples, batch_size, rng):
  """One epoch: a random permutation of range(num_examples) cut into full batches -> [batches, batch]."""
  perm = rng.permutation(num_examples)
  n = num_examples // batch_size
  return perm[:n * batch_size].reshape(n, batch_size)


# ----- model -------------------------------------------------------------------------------------------
# Keras weight order of the model below -> flax paths of the official MNIST_CNN.
PARAM_NAMES = ("feature_net/layers_0/kernel", "feature_net/layers_0/bias", "feature_net/layers_3/kernel",
               "feature_net/layers_3/bias", "head/kernel", "head/bias")


def make_model(seed, input_shape=(28, 28, 1), num_classes=10):
  """The §3.4 MNIST network as a Keras model (weights in ``PARAM_NAMES`` order)."""
  import keras
  init = lambda i: keras.initializers.LecunNormal(seed=int(seed) * 16 + i)
  model = keras.Sequential([
      keras.Input(shape=input_shape),
      keras.layers.Conv2D(16, 2, padding="same", kernel_initializer=init(0), bias_initializer="zeros"),
      keras.layers.ReLU(),
      keras.layers.Flatten(),
      keras.layers.Dense(32, kernel_initializer=init(1), bias_initializer="zeros"),
      keras.layers.ReLU(),
      keras.layers.Dense(num_classes, kernel_initializer=init(2), bias_initializer="zeros"),
  ])
  return model


# ----- the run -----------------------------------------------------------------------------------------
def validate_config(config):
  from optim4rl_tf.utils import config_checks as cc
  cc.check_positive_int("batch_size", config.batch_size)
  cc.check_nonnegative_int("epochs", config.epochs)
  cc.check_nonnegative_int("max_steps", config.max_steps)
  cc.check_positive("optimizer.learning_rate", config.optimizer.learning_rate)
  cc.check_positive_int("collect.every_nth", config.collect.every_nth)
  cc.check_positive_int("collect.chunk_steps", config.collect.chunk_steps)
  if config.optimizer.name != "rmsprop":
    raise ValueError(f"optimizer.name must be 'rmsprop' (the §8 run), got {config.optimizer.name!r}")


class Plan(NamedTuple):
  """The batches of a run: ``batch_size`` examples per step, ``batches_per_epoch`` full batches of the
  class-truncated set, ``epochs`` epochs, ``total`` steps (``max_steps`` applied)."""
  batch_size: int
  batches_per_epoch: int
  epochs: int
  total: int


def train(config, workdir, console=True):
  """Runs the supervised collection; writes config.json, grads/, train_log.csv, summary.json.

  Returns a dict with ``steps``, ``epochs``, ``dataset`` (label), ``stand_in``, ``final_loss``,
  ``final_accuracy`` (mean over the last epoch's batches), ``grads_dir``, ``wall_secs`` and summary.json's
  schema (:func:`optim4rl_tf.utils.run_lifecycle.write_summary`: ``status`` "finished", or "diverged" when a
  non-finite loss stopped it; ``env_steps`` / ``planned_env_steps`` count optimizer steps here).

  SIGINT/SIGTERM stop the run after the current call of steps (a second one at once); it, a KeyboardInterrupt
  or an error writes summary.json (``status`` "interrupted" or "failed") with the gradients collected so far
  (the store marked incomplete) and is re-raised.
  """
  import tensorflow as tf

  from optim4rl_tf.utils import logging as logging_lib
  from optim4rl_tf.utils import run_lifecycle

  validate_config(config)
  run_lifecycle.prepare_workdir(workdir, console)
  t_start = time.time()
  x, y, label, stand_in = mnist_data.load_data(config)
  if stand_in and "STAND-IN" not in label:
    label = f"STAND-IN: {label}"
  logging_lib.write_json(os.path.join(workdir, "config.json"),
                         dict(logging_lib.config_to_dict(config), dataset_label=label, stand_in=stand_in))
  rng = np.random.default_rng(int(config.seed))
  x, y, plan = plan_batches(config, x, y, label, stand_in, rng)
  model, opt = make_model_and_optimizer(config, x.shape[1:])
  probe, writer = gradient_collector(config, workdir, model.trainable_variables, label, stand_in, plan)
  run_batches = make_step_fn(model, opt, probe, writer.num_coords, x, y)
  say = _Console(config, label, plan.total) if console else None
  done, epoch = 0, 0
  loss_e = acc_e = float("nan")
  error, diverged = None, False
  try:
    with run_lifecycle.deferred_signals() as stop, open(os.path.join(workdir, "train_log.csv"), "w", newline="") as f:
      log = csv.writer(f)
      log.writerow(("epoch", "steps", "loss", "accuracy", "dataset"))
      while done < plan.total:
        epoch += 1
        idx = epoch_batches(len(y), plan.batch_size, rng)[:plan.total - done]
        losses, accs = [], []
        for s in range(0, len(idx), int(config.steps_per_call)):
          part = idx[s:s + int(config.steps_per_call)]
          lo, ac, g = run_batches(tf.constant(part, tf.int32))
          writer.append(g.numpy()[:, None, :])
          losses.append(lo.numpy())
          accs.append(ac.numpy())
          done += len(part)
          if say is not None:
            say(done, epoch, lo, ac)
          if stop():
            raise run_lifecycle.interrupted(stop())
        loss_e, acc_e = float(np.mean(np.concatenate(losses))), float(np.mean(np.concatenate(accs)))
        log.writerow((epoch, done, repr(loss_e), repr(acc_e), label))
        f.flush()
        if not np.isfinite(loss_e):
          print("WARNING: non-finite loss; stopping", flush=True)
          diverged = True
          break
  except (KeyboardInterrupt, Exception) as e:  # SIGINT/SIGTERM (above), out of memory, ...: keep what exists
    error = e
  finally:
    writer.close(complete=done == plan.total)
  status = run_lifecycle.outcome(error, diverged)
  result = dict(steps=done,
                epochs=epoch,
                dataset=label,
                stand_in=bool(stand_in),
                final_loss=loss_e,
                final_accuracy=acc_e,
                grads_dir=os.path.join(workdir, config.collect.subdir),
                num_params=writer.index["num_params"],
                num_coords=writer.num_coords)
  summary = (f"{label}: {done} RMSProp steps ({epoch} epochs of {plan.batches_per_epoch} batches "
             f"of {plan.batch_size}); last-epoch loss {loss_e:.4f}, accuracy {acc_e:.3f}; collected "
             f"{writer.num_coords} of {writer.index['num_params']} gradient coordinates per step")
  if status != "finished":
    summary = f"{status.upper()} at step {done:,} of {plan.total:,}: {summary}"
  try:
    result = run_lifecycle.write_summary(workdir, status, summary,
                                         time.time() - t_start, done, plan.total, error, **result)
  except OSError as e:  # (a full disk: the run's own error, if any, is the one to report)
    if error is None:
      raise
    print(f"WARNING: no summary.json: {e}", flush=True)
  if error is not None:
    raise error
  if console:
    print(summary, flush=True)
  return result


def plan_batches(config, x, y, label, stand_in, rng):
  """Class-truncates and shuffles the set (:func:`class_truncate_shuffle`), scales x to [0, 1] and plans
  the steps: (x float32 [N', 28, 28, 1], y [N'], :class:`Plan`)."""
  bs = int(config.batch_size)
  keep = class_truncate_shuffle(y, bs, rng)
  x, y = x[keep] / np.float32(255.0), y[keep]
  batches_per_epoch = len(y) // bs
  epochs = int(config.epochs) or (10 if not stand_in or "Fashion" in label else math.ceil(mnist_data.MNIST_STEPS /
                                                                                          batches_per_epoch))
  total = epochs * batches_per_epoch
  if int(config.max_steps):
    total = min(total, int(config.max_steps))
  return x, y, Plan(batch_size=bs, batches_per_epoch=batches_per_epoch, epochs=epochs, total=total)


def make_model_and_optimizer(config, input_shape):
  """The model of ``config.seed`` (TF's global seed set to it too) and its built ``keras.optimizers.RMSprop``
  (rho 0.9, eps 1e-8: optax.rmsprop)."""
  import keras
  import tensorflow as tf
  seed = int(config.seed)
  tf.random.set_seed(seed)
  model = make_model(seed, input_shape=input_shape)
  opt = keras.optimizers.RMSprop(learning_rate=float(config.optimizer.learning_rate),
                                 rho=0.9,
                                 epsilon=1e-8,
                                 momentum=0.0,
                                 centered=False)
  opt.build(model.trainable_variables)
  return model, opt


def gradient_collector(config, workdir, weights, label, stand_in, plan):
  """(probe, writer): ``probe(grads)`` maps the weights' gradients (each with a leading axis of 1) to the
  flax-ordered, sub-sampled [1, coords]; the :class:`optim4rl_tf.analysis.collect.GradientWriter` of
  ``workdir/<collect.subdir>`` stores them."""
  from optim4rl_tf.analysis import collect as collect_lib
  num_params = int(sum(np.prod(w.shape) for w in weights))
  every = int(config.collect.every_nth)
  probe, coords = collect_lib.make_grad_probe(PARAM_NAMES, [tuple(w.shape) for w in weights], every)
  order = collect_lib.flax_leaf_order(PARAM_NAMES)
  short = ("STAND-IN: scikit-learn digits 28x28" if label == mnist_data.STAND_IN_LABEL else
           ("STAND-IN: " if stand_in else "") + label.split(" (")[0].replace("STAND-IN: ", ""))
  writer = collect_lib.GradientWriter(
      os.path.join(workdir, config.collect.subdir),
      1,
      coords,
      chunk_steps=int(config.collect.chunk_steps),
      meta=dict(kind="supervised",
                task="MNIST" if not stand_in else "MNIST stand-in",
                dataset=label,
                dataset_short=short,
                stand_in=bool(stand_in),
                optimizer="rmsprop",
                learning_rate=float(config.optimizer.learning_rate),
                grad_clip=-1.0,
                every_nth=every,
                num_params=num_params,
                param_order=[PARAM_NAMES[i] for i in order],
                sampled_flat_indices=collect_lib.sample_indices(num_params, every).tolist(),
                units=[int(config.seed)],
                unit_name="seed",
                batch_size=plan.batch_size,
                batches_per_epoch=plan.batches_per_epoch,
                what="minibatch gradient of every step (mean softmax cross-entropy), before the optimizer"))
  return probe, writer


def make_step_fn(model, opt, probe, coords, x, y):
  """``run_batches(idx)``: idx int32 [k, batch] indexes of (x, y) -> k optimizer steps in one
  ``tf.function``; returns losses, accuracies [k] and ``probe`` of every step's gradient [k, coords]."""
  import tensorflow as tf
  weights = model.trainable_variables
  x_t, y_t = tf.constant(x), tf.constant(y)

  @tf.function(reduce_retracing=True)
  def run_batches(idx):
    k = tf.shape(idx)[0]
    tas = [tf.TensorArray(tf.float32, size=k) for _ in range(2)]
    g_ta = tf.TensorArray(tf.float32, size=k, element_shape=[coords])

    def body(i, loss_ta, acc_ta, g_ta):
      xb = tf.gather(x_t, idx[i])
      yb = tf.gather(y_t, idx[i])
      with tf.GradientTape() as tape:
        logits = model(xb, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
      grads = tape.gradient(loss, weights)
      opt.apply_gradients(zip(grads, weights))
      acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), yb), tf.float32))
      g = probe([gr[None] for gr in grads])[0]
      return i + 1, loss_ta.write(i, loss), acc_ta.write(i, acc), g_ta.write(i, g)

    _, loss_ta, acc_ta, g_ta = tf.while_loop(lambda i, *_: i < k, body, (0, tas[0], tas[1], g_ta))
    return loss_ta.stack(), acc_ta.stack(), g_ta.stack()

  return run_batches


class _Console:
  """Prints a progress line at most every ``config.console_every_secs`` seconds, and at the last step."""

  def __init__(self, config, label, total):
    self.every, self.total = float(config.console_every_secs), total
    self.tag = f"[collect {label.split(':')[0]}]"
    self.last = time.time()

  def __call__(self, done, epoch, losses, accs):
    if time.time() - self.last > self.every or done == self.total:
      self.last = time.time()
      print(
          f"{self.tag} step {done}/{self.total} epoch {epoch} loss {float(np.mean(losses)):.4f} "
          f"acc {float(np.mean(accs)):.3f}",
          flush=True)
