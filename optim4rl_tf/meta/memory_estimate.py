"""Memory of a MetaA2C meta-training config, estimated before anything is built.

``meta.run.validate_config`` calls :func:`check` so that a config too big for this machine (e.g.
``num_units=1e9``, ``rollout_steps=1e8``, a huge ``optimizer.hidden_size`` or ``optimizer.mlp_dims``) is refused
with one line giving the estimate and the machine's memory, instead of growing until the kernel kills it or
TensorFlow raises an out-of-memory traceback.

The formula (float32: 4 bytes a number), per task with U units (one env each), P agent parameters per unit,
C = U * P coordinates (the learned optimizer's inputs), H = ``optimizer.hidden_size``, S hidden states per
coordinate (Optim4RL 2, LinearOptim and L2LGD² 1), M = ``inner_updates``, T = ``rollout_steps``, O numbers per
observation, A activations per env step of the agent network (the inputs of its layers plus their outputs)::

  act    = 6 * H * S + heads * (sum(mlp_dims) + 1)       # GRU gates and head activations per coordinate update
  agents = C * (3 * S * H + M + 4)                       # hidden states (h_0 kept for the replay, current,
                                                         #   next), the M stored gradients, theta / delta /
                                                         #   cotangent / clipped gradient
         + C * act                                       # one learned-optimizer update of every coordinate
  replay = M * (act + S * H) * Cr                        # the tape of the replayed VJP: Cr coordinates at once
                                                         #   (PARALLEL chunks of ``chunk_size`` units or as fitted)
  rollout = 2 * U * (T + 1) * (2 * O + 3 * A)            # observations (buffer + stacked copy) and the network
                                                         #   activations kept for the gradient, for the current
                                                         #   rollout and the validation one
  phi    = 6 * N_phi                                     # phi, meta-Adam's two moments, the meta-gradient, the
                                                         #   per-task gradient and the checkpoint copy

  bytes = BASE_BYTES + OVERHEAD * 4 * (sum over tasks of kept + max over tasks of transient
          + OTHER_TASKS * (sum over the other tasks of transient)) + 4 * phi,
  kept = C * (S * H + 1),   transient = agents - kept + replay + rollout

(theta and the hidden states of every task's units live across iterations; the other tensors exist while
one task's outer iteration runs. The tasks run one after another, and each further task adds a small share of
its working set, OTHER_TASKS, fitted to grid6 runs, ``MULTI_TASK_CALIBRATION``: the paper's recipe at 512 units
per task peaks at 16.9 GB, estimated 19.2 GB. Before the step stopped holding folded zero constants and a
copy of the initial units, each further task kept about half its working set and that recipe was killed by
the kernel above 21.9 GB on a 24 GB machine.)

STAR (``estimators.full_unroll``, no chunking) keeps every inner update on one tape instead: per coordinate
its S = 5 accumulators, and for each of the M updates its 39 input features, its MLP activations and its 4
outputs, plus the M + 1 rollouts' activations (second-order terms): ``agents = C * (3 * 5 + M + 4) + M * C *
(39 + sum(mlp_dims) + 4)`` and ``rollout = (M + 1) * U * (T + 1) * (2 * O + 3 * A)``.

BASE_BYTES (TensorFlow, XLA's compiled code, the Python process) and OVERHEAD (XLA's temporary buffers and
copies, less what it fuses away) were fitted loosely to the peak RSS of real head-free Optim4RL runs on this
2-core CPU (H = 8, M = 4, T = 20; ``CALIBRATION``; README's cost table and 2-iteration runs of ``catch``):

  ================  =====  ==========  ==============  ==============
  task              U      mlp_dims    peak RSS (GB)   estimate (GB)
  ================  =====  ==========  ==============  ==============
  catch             16     ()          1.65            1.65
  catch             64     ()          1.98            2.00
  catch             256    ()          3.65            3.39
  small_dense_long  64     ()          1.9             1.83
  small_dense_long  512    ()          3.0             2.99
  big_dense_long    64     ()          3.0             2.96
  big_dense_long    512    ()          11.1            12.0
  small_dense_long  64     (16, 16)    2.0             2.16
  big_dense_long    64     (16, 16)    3.2             3.73
  ================  =====  ==========  ==============  ==============

The estimate is within 20% of each (tests/test_reliability_faults.py checks 2x). It is refused only above this
machine's memory, so a borderline config still runs. MetaPPO configs are not estimated here (their Brax
rollouts dominate).
"""

import math

from optim4rl_tf import envs
from optim4rl_tf.agents import networks
from optim4rl_tf.meta import estimators
from optim4rl_tf.optimizers import cores
from optim4rl_tf.utils import config_checks as cc

FLOAT_BYTES = 4
BASE_BYTES = 1.2e9  # TensorFlow + XLA + Python, a small run's RSS before the tensors that grow with the config
OVERHEAD = 0.8  # fitted: XLA fuses away some of the tensors the formula counts (e.g. gate activations)
STAR_STATES = 5  # momentum (3), rms (1) and the factored accumulators (about 1) per coordinate
STAR_FEATURES = 39 + 4  # STAR's MLP inputs and outputs per coordinate

OTHER_TASKS = 0.15  # fitted: the share of each further task's transient memory a multi-task iteration adds

# (task, units, hidden_size, mlp_dims, measured peak RSS in GB): the runs BASE_BYTES and OVERHEAD were fitted to.
# Measured before the step stopped holding folded constants and a copy of the initial units: today's peaks are
# lower (most at 512 units), so the estimate errs high for them.
CALIBRATION = (("catch", 16, 8, (), 1.65), ("catch", 64, 8, (), 1.98), ("catch", 256, 8, (), 3.65),
               ("small_dense_long", 64, 8, (), 1.9), ("small_dense_long", 512, 8, (), 3.0),
               ("big_dense_long", 64, 8, (), 3.0), ("big_dense_long", 512, 8, (), 11.1),
               ("small_dense_long", 64, 8, (16, 16), 2.0), ("big_dense_long", 64, 8, (16, 16), 3.2))
# (tasks of configs/meta_a2c.py's grid6 (None: all six), units per task, measured peak RSS in GB), head-free, H 8:
# two outer iterations at the commit that removed the step's folded constants (OTHER_TASKS was fitted to them).
MULTI_TASK_CALIBRATION = (
    (None, 16, 2.93),
    (None, 32, 3.37),
    (None, 128, 5.84),
    (None, 512, 16.91),
)


def _network_sizes(env_name):
  """(P parameters, O observation numbers, A activations per env step) of one agent on ``env_name``."""
  probe = envs.make(env_name, 1)
  specs = networks.param_specs(networks.net_kind(env_name), probe.obs_shape, probe.num_actions)
  params = sum(math.prod(s.shape) for s in specs)
  activations = sum(s.fan_in if s.fan_in else math.prod(s.shape) for s in specs)  # layer inputs + outputs
  return params, math.prod(probe.obs_shape), activations


def _core_sizes(config):
  """(S hidden states per coordinate, H, heads, sum(mlp_dims), number of meta-parameters) of the config's
  learned optimizer (shapes only: nothing is allocated)."""
  name = config.optimizer.name
  if name == "star":
    from optim4rl_tf.optimizers import star  # pylint: disable=import-outside-toplevel
    core = star.StarCore()
    return STAR_STATES, 0, 1, sum(core.mlp_dims), sum(math.prod(s) for s in core.meta_param_shapes().values())
  mlp_dims = cores.positive_ints(config.optimizer.mlp_dims, "optimizer.mlp_dims")
  hidden = cores.positive_int(config.optimizer.hidden_size, "optimizer.hidden_size")
  core = cores.make_core(name, mlp_dims, hidden)
  heads = 2 if name == "optim4rl" else 1
  phi = sum(math.prod(s) for s in core.meta_param_shapes().values())
  return core.num_states, hidden, heads, sum(mlp_dims), phi


# The replay's chunks when CALIBRATION was measured: the largest divisor of the units holding at most
# FITTED_CHUNK_COORDS / PARALLEL coordinates. The replay now works in much smaller chunks
# (estimators.REPLAY_CHUNK_COORDS) and peaks lower (2026-12-06, 2 iterations, head-free: catch 64 units 1.98 ->
# 1.74 GB, small_dense_long 64 1.9 -> 1.41 GB, big_dense_long 64 3.0 -> 2.83 GB), so the estimate keeps the
# tapes of the fitted chunks: an upper bound until it is refitted to the new peaks.
FITTED_CHUNK_COORDS = 400_000


def replay_coordinates(units, params_per_unit, chunk_size):
  """Coordinates the replayed VJP holds on its tapes at once, as fitted: PARALLEL chunks of ``chunk_size``
  units (0: the fitted chunks, above), never more than all of them."""
  if chunk_size <= 0:
    per_chunk = params_per_unit * estimators.PARALLEL
    largest = units if per_chunk <= 0 else max(1, min(units, FITTED_CHUNK_COORDS // per_chunk))
    chunk_size = max(c for c in range(1, largest + 1) if units % c == 0)
  return min(units, estimators.PARALLEL * min(chunk_size, units)) * params_per_unit


def estimate(config):
  """(bytes, one-line description) of a validated MetaA2C config (``meta_a2c.validate_config``)."""
  states, hidden, heads, mlp_sum, num_phi = _core_sizes(config)
  star = config.optimizer.name == "star"
  m, t = int(config.inner_updates), int(config.rollout_steps)
  persistent, transients, parts = 0, [], []
  for i, spec in enumerate(config.tasks):
    # A task's units, as meta_a2c.task_units counts them (not imported: meta_a2c calls this module).
    units = int(config.num_units) if config.get("num_units", 0) > 0 else int(spec.num_units)
    params, obs, acts = _network_sizes(spec.env_name)
    coords = units * params
    per_step = units * (t + 1) * (2 * obs + 3 * acts)
    kept = coords * (states * hidden + 1)  # theta and the hidden states, carried across iterations
    if star:
      agents = coords * (3 * states + m + 4) + m * coords * (STAR_FEATURES + mlp_sum)
      rollout, replay = (m + 1) * per_step, 0
    else:
      act = 6 * hidden * states + heads * (mlp_sum + 1)
      agents = coords * (3 * states * hidden + m + 4) + coords * act
      replay = m * (act + states * hidden) * replay_coordinates(units, params, int(config.chunk_size))
      rollout = 2 * per_step
    persistent += kept
    transients.append(agents - kept + replay + rollout)
    parts.append(f"tasks[{i}] {spec.env_name}: {units:,} units x {params:,} params, rollout_steps {t:,}")
  transient = max(transients) + OTHER_TASKS * (sum(transients) - max(transients))
  total = BASE_BYTES + OVERHEAD * FLOAT_BYTES * (persistent + transient) + FLOAT_BYTES * 6 * num_phi
  what = "; ".join(parts)
  if star:
    what += f"; STAR, inner_updates {m}"
  else:
    what += (f"; {config.optimizer.name} hidden_size {hidden:,}, mlp_dims {tuple(config.optimizer.mlp_dims)}, "
             f"inner_updates {m}, {num_phi:,} meta-parameters")
  return int(total), what


HINT = "lower num_units, rollout_steps, inner_updates, optimizer.hidden_size or optimizer.mlp_dims"


def check(config, limit_bytes=None, hint=HINT):
  """Raises one-line ValueError when :func:`estimate` exceeds this machine's memory (``limit_bytes``, default
  ``config_checks.memory_limit_bytes()``: physical memory, capped by a cgroup limit); returns the estimate.
  ``hint``: what to change (a launcher names its own flags)."""
  needed, what = estimate(config)
  limit = cc.memory_limit_bytes() if limit_bytes is None else limit_bytes
  if limit and needed > limit:
    raise ValueError(f"meta-training this config needs about {cc.format_bytes(needed)} of memory (estimate, "
                     f"optim4rl_tf/meta/memory_estimate.py; {what}), but this machine has "
                     f"{cc.format_bytes(limit)}; {hint}")
  return needed
