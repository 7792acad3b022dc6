"""One command per A2C figure/table of the paper: meta-train, test the fixed optimizers, report.

  optim4rl-reproduce --experiment=figure3_catch --workdir=runs/fig3_catch                   # installed
  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch            # full budget
  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch_small \
      --meta_iterations=10 --test_steps=1e5 --num_seeds=3                                      # reduced

Experiments (docs/fidelity.md §9.1, §10):
  figure3_catch  Optim4RL, LinearOptim, L2LGD², STAR meta-trained on Catch; tested with A2C vs Adam, RMSProp
  figure3_bdl    the same on big_dense_long
  table1_sdl     Optim4RL on small_dense_long with and without pipeline training (Table 1)
  table1_bdl     the same on big_dense_long
  figure3_ant, figure3_humanoid   the four learned optimizers meta-trained with MetaPPO (STAR: its full-unroll estimator)
                 on Ant / Humanoid, tested with PPO vs Adam, RMSProp (configs/ppo.py meta_* and the task)
  table1_ant, table1_humanoid     Optim4RL with and without pipeline training, MetaPPO (Table 1)
  figure4        Optim4RL meta-trained on the six gridworlds (grid6), tested with PPO on Ant, Humanoid,
                 inverted double pendulum and Walker2d vs Adam, RMSProp
  figure4_cpu    Figure 4 at CPU scale: the SHIPPED optimizers (Optim4RL.from_pretrained "grid6", "catch" and
                 "inverted_pendulum", no meta-training) vs Adam, RMSProp, PPO on the *_cpu settings of inverted
                 double pendulum and Walker2d (always --ppo_cpu). Every optimizer runs at each rate of --test_lrs
                 (default 3e-4, 1e-3, 3e-3; workdirs test_<optimizer>_<task>_lrs/lr<lr>) and is reported at its
                 best: a fair comparison (about 3 h with --num_seeds=5 --test_steps=1e6)

The Brax experiments are GPU-sized; ``--ppo_cpu`` runs them at laptop size (PPO tests on the ``*_cpu``
variants of configs/ppo.py, MetaPPO with 256 envs and batch 256).

Each meta-training run uses the paper's setting of configs/meta_a2c.py (one configuration: the first of its
sweep, or --config-style overrides below); each test run trains A2C with the fixed phi for --num_seeds seeds
in one graph. The report (report.md + PNG) is written by optim4rl_tf.eval.report, with the paper's numbers
beside ours where the paper gives them.

Re-running with the same --workdir (locked while a reproduce.py runs in it: a second one is refused):

* a run is reused only when it is FINISHED -- a meta-training's summary.json records the requested number of
  outer iterations (or ``diverged``), a test's says ``status`` "finished"/"diverged" (PPO: all its env steps)
  -- and its config.json equals the requested config;
* an unfinished run of the same config is completed: a meta-training resumes from its checkpoint (also when
  --meta_iterations grew), a test from its ``checkpoint.npz`` if it has one; a test without one is moved aside
  to ``<dir>.stale-N``, kept, and run again -- as is a finished test of a phi that has changed since (the
  digest in its ``tested_with.json``);
* a run made with OTHER settings (--seed, --meta_units, --meta_lr, --num_seeds, --test_steps, a smaller
  --meta_iterations, ...) is never reused nor overwritten: reproduce.py stops with one line naming the
  workdir and the differing fields (exit 2). Use the same flags, or a new --workdir.

Errors are one line on stderr: exit 2 for bad flags, configs or workdirs, 1 for a failed run, 130/143 for
SIGINT/SIGTERM (a meta-training saves its last completed outer iteration, a test writes a summary with
``status`` "interrupted").

Table 1's reset-interval sweep: ``--reset_interval=144 --only=with`` in the same --workdir meta-trains and tests
the pipeline row at m = 144 (workdirs ``*_m144``) and leaves the finished runs as they are.

Divergence (--nonfinite, docs/fidelity.md §5.4): where the paper reports failure rates (App. E: STAR diverges
in most Brax settings), meta-training runs as the official code does, config ``nonfinite="stop"``: the first
non-finite or absurd meta-gradient/phi ends the run with no learned optimizer (summary.json ``diverged``);
it is not tested, and the report counts the diverged runs. ``auto`` (default) does so for STAR and for every
meta-training of a Brax experiment; the other runs keep the guard's default ("skip": skip and count).
"""
import json
import math
import os

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from optim4rl_tf.utils import config_checks as cc  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

LEARNED = (("Optim4RL", "optim4rl"), ("LinearOptim", "linear_optim"), ("L2LGD²", "l2lgd2"), ("STAR", "star"))
EXPERIMENTS = {
    # name: (task, [(label, optimizer, meta variant)], baselines, kind)
    "figure3_catch": ("catch", [(lab, opt, "catch") for lab, opt in LEARNED], True, "panel"),
    "figure3_bdl": ("big_dense_long", [(lab, opt, "big_dense_long") for lab, opt in LEARNED], True, "panel"),
    "table1_sdl": ("small_dense_long", [("with", "optim4rl", "small_dense_long"),
                                        ("without", "optim4rl", "small_dense_long_nopipe")], False, "table1"),
    "table1_bdl": ("big_dense_long", [("with", "optim4rl", "big_dense_long"),
                                      ("without", "optim4rl", "big_dense_long_nopipe")], False, "table1"),
}
# Brax experiments: (test task, [(label, optimizer, MetaPPO variant or "grid6", pipeline)], baselines, kind).
PPO_EXPERIMENTS = {
    **{
        f"figure3_{t}": (t, [(lab, opt, f"meta_{t}", True) for lab, opt in LEARNED], True, "panel") for t in ("ant", "humanoid")
    },
    **{
        f"table1_{t}": (t, [("with", "optim4rl", f"meta_{t}", True), ("without", "optim4rl", f"meta_{t}", False)], False, "table1") for t in ("ant", "humanoid")
    },
}
FIGURE4_TASKS = ("ant", "humanoid", "inverted_double_pendulum", "walker2d")
# The agent lr of the grid6 Optim4RL's Brax tests (official lopt_rl_grid_{ant,humanoid,pendulum,walker2d}).
FIGURE4_LR = dict(ant=3e-4, humanoid=3e-4, inverted_double_pendulum=3e-4, walker2d=3e-5)
# Figure 4 at CPU scale: the shipped optimizers (optim4rl_tf.pretrained) tested as they are.
FIGURE4_CPU_TASKS = ("inverted_double_pendulum", "walker2d")
FIGURE4_CPU_LEARNED = tuple((f"Optim4RL {name}", name) for name in ("grid6", "catch", "inverted_pendulum"))
ALL_EXPERIMENTS = list(EXPERIMENTS) + list(PPO_EXPERIMENTS) + ["figure4", "figure4_cpu"]

TEST_SEED_OFFSET = 1000  # the test runs' seeds start at --seed + 1000 (meta-training uses --seed)


class Budget:
  """Budget overrides (0 = the paper's value)."""

  def __init__(self,
               meta_iterations=0,
               meta_units=0,
               meta_lr=0.0,
               test_steps=0.0,
               num_seeds=10,
               only=(),
               seed=0,
               ppo_cpu=False,
               nonfinite="auto",
               reset_interval=0,
               test_lrs=()):
    if reset_interval < 0:
      raise ValueError(f"reset_interval must be >= 0 (0: the config's), got {reset_interval}")
    for name, value, low in (("meta_iterations", meta_iterations, 0), ("meta_units", meta_units, 0), ("num_seeds",
                                                                                                      num_seeds, 1)):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"--{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("meta_lr", meta_lr), ("test_steps", test_steps)):
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"--{name} must be a finite number >= 0 (0: the paper's), got {value!r}")
    # Meta-training uses seed, the tests seed + TEST_SEED_OFFSET + s (s < num_seeds): all int32 RNG keys.
    top = cc.SEED_MAX - TEST_SEED_OFFSET - (num_seeds - 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= top:
      raise ValueError(f"--seed must be an integer in [0, {top:,}] (the test seeds --seed+{TEST_SEED_OFFSET} .. "
                       f"+{TEST_SEED_OFFSET}+num_seeds-1 are int32 RNG keys), got {seed!r}")
    self.meta_iterations, self.meta_units, self.meta_lr = meta_iterations, meta_units, meta_lr
    self.test_steps, self.num_seeds, self.only, self.seed = test_steps, num_seeds, tuple(only), seed
    self.ppo_cpu, self.nonfinite, self.reset_interval = ppo_cpu, nonfinite, reset_interval
    from optim4rl_tf.eval import lr_choice  # pylint: disable=import-outside-toplevel
    self.test_lrs = lr_choice.check_grid(test_lrs, "--test_lrs") if test_lrs else ()

  def run_suffix(self, pipeline):
    """The workdir suffix of a meta-training run and its test: ``_m<m>`` for a pipeline run with a set m."""
    return f"_m{self.reset_interval}" if pipeline and self.reset_interval else ""


def nonfinite_policy(optimizer, brax, budget):
  """"stop" (official: the first non-finite phi ends the run) or "skip" for one meta-training run."""
  if budget.nonfinite != "auto":
    return budget.nonfinite
  return "stop" if optimizer == "star" or brax else "skip"


def _meta_budget(config, optimizer, budget, brax=False):
  """Sets the optimizer, the divergence policy and the meta-training budget overrides on a meta-training
  config (``brax``: a meta-training run of a Brax experiment)."""
  config.optimizer.name = optimizer
  config.nonfinite = nonfinite_policy(optimizer, brax, budget)
  config.seed = budget.seed
  config.num_iterations = budget.meta_iterations
  if budget.meta_units:
    config.num_units = budget.meta_units
  if budget.meta_lr > 0:
    config.meta_lr = budget.meta_lr
  if budget.reset_interval and config.pipeline:
    config.reset_interval = budget.reset_interval
  return config


def _test_budget(config, optimizer, phi_path, learning_rate, budget):
  """Sets the optimizer (a fixed phi for a learned one) and the test budget on an agent config."""
  config.optimizer.name = optimizer
  config.optimizer.meta_params = phi_path or ""
  if learning_rate:
    config.optimizer.learning_rate = learning_rate
  config.num_seeds = budget.num_seeds
  config.seed = budget.seed + TEST_SEED_OFFSET
  if budget.test_steps > 0:
    config.train_steps = budget.test_steps
  return config


def _read_json(path):
  try:
    with open(path) as f:
      value = json.load(f)
    return value if isinstance(value, dict) else None
  except (OSError, ValueError):
    return None


def _summary(workdir):
  return _read_json(os.path.join(workdir, "summary.json")) or {}


def meta_status(config, workdir):
  """What a meta-training workdir holds for ``config``: "new" (nothing yet), "finished" (summary.json with
  the requested number of outer iterations and phi.npz), "diverged" (ended by ``nonfinite="stop"``: no phi)
  or "unfinished" (interrupted or made with a smaller --meta_iterations: resumed from its checkpoint).

  Raises ``WorkdirError`` (one line naming the workdir and the fields) when the workdir was made with another
  config (--seed, --meta_units, --meta_lr, ...: the check ``meta.run.meta_train`` applies when it resumes)
  or ran more outer iterations than requested."""
  from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  total = run.validate_config(config)
  path = os.path.join(workdir, workdir_lib.CONFIG_NAME)
  if not os.path.exists(path):
    return "new"
  old = _read_json(path)
  if old is None:
    workdir_lib.check_config(workdir, {})  # raises the unreadable-config error
  workdir_lib.raise_if_different(
      workdir,
      run._upgrade_old_config(old),
      run.resolved_config(config),  # pylint: disable=protected-access
      run.RESUMABLE_FIELDS)
  summary = _summary(workdir)
  if summary.get("diverged"):
    return "diverged"
  done = summary.get("iterations")
  if not isinstance(done, int):
    return "unfinished"
  if done > total:
    raise workdir_lib.WorkdirError(
        f"workdir {workdir} holds a meta-training run of {done} outer iterations, but {total} were requested "
        "(--meta_iterations); use the same budget or a new --workdir")
  if done < total or not os.path.exists(os.path.join(workdir, "phi.npz")):
    return "unfinished"
  return "finished"


def _meta_run(train_fn, config, workdir):
  """Runs, resumes or finds finished one meta-training (:func:`meta_status`); returns the path of phi.npz,
  or None when it diverged (``nonfinite="stop"``: no learned optimizer, recorded in its summary.json)."""
  from optim4rl_tf.meta import trainer as trainer_lib
  state = meta_status(config, workdir)
  if state == "unfinished":
    print(f"[reproduce] {workdir}: unfinished meta-training of this config; resuming it", flush=True)
  if state in ("new", "unfinished"):
    try:
      train_fn(config, workdir)
    except trainer_lib.Diverged as e:
      print(f"[reproduce] {e}", flush=True)
  if _summary(workdir).get("diverged"):
    return None
  return os.path.join(workdir, "phi.npz")


# Test-run config fields that change only speed or console output, not the results.
# optimizer.meta_params (a path) is compared by the digest of the phi it holds instead (TESTED_WITH).
TEST_IGNORED_FIELDS = ("console_every_secs", "chunk_secs", "iterations_per_call", "jit_compile", "checkpoint_every",
                       "checkpoint_every_secs", "optimizer.meta_params")
TESTED_WITH = "tested_with.json"  # in each test workdir: the digest of the phi it tested
CHECKPOINT_NAME = "checkpoint.npz"  # a test run's checkpoint (agents' run functions that resume from one)


def phi_digest(phi_path):
  """Digest of the meta-parameters in ``phi_path`` (their values, not the file's bytes); None without one."""
  if not phi_path:
    return None
  import hashlib  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.optimizers import meta_params as meta_params_lib  # pylint: disable=import-outside-toplevel
  meta, arrays = meta_params_lib.load(phi_path)
  digest = hashlib.sha256(
      json.dumps({
          k: meta.get(k) for k in ("optimizer", "mlp_dims", "hidden_size")
      }, sort_keys=True).encode())
  for key in sorted(arrays):
    digest.update(key.encode() + arrays[key].tobytes())
  return digest.hexdigest()[:16]


def _test_finished(summary):
  """A test run's summary.json says it ran its whole budget (A2C: ``status``; PPO: env steps, or aborted)."""
  if not summary:
    return False
  if "status" in summary:
    return summary["status"] in ("finished", "diverged")
  if summary.get("aborted"):
    return True
  steps, planned = summary.get("env_steps"), summary.get("planned_env_steps")
  return isinstance(steps, (int, float)) and isinstance(planned, (int, float)) and steps >= planned


def test_status(config, workdir, phi_path=None):
  """What a test workdir holds for ``config``: "new", "finished" (summary says finished, same config and,
  for a learned optimizer, the same phi), "unfinished" (interrupted, failed) or "other_phi" (a finished test
  of a phi that has changed since). Raises ``WorkdirError`` naming the workdir and the differing fields
  when its config.json differs from ``config`` (--seed, --num_seeds, --test_steps, lr ...)."""
  from optim4rl_tf.utils import logging as logging_lib  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    return "new"
  path = os.path.join(workdir, workdir_lib.CONFIG_NAME)
  if os.path.exists(path):
    old = _read_json(path)
    if old is None:
      workdir_lib.check_config(workdir, {})  # raises the unreadable-config error
    # Fields the recorded config lacks were added to configs/ later, at values that keep the old behaviour.
    diffs = [(k, a, b)
             for k, a, b in workdir_lib.config_differences(old, logging_lib.config_to_dict(config), TEST_IGNORED_FIELDS)
             if k in _flat_keys(old)]
    if diffs:
      text = ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, a, b in diffs)
      raise workdir_lib.WorkdirError(f"workdir {workdir} was made with a different config: {text}; reproduce.py "
                                     "reuses a run only with the same flags: use them, or a new --workdir")
  summary = _read_json(os.path.join(workdir, "summary.json"))
  if not os.path.exists(path) or not _test_finished(summary):
    return "unfinished"
  recorded = (_read_json(os.path.join(workdir, TESTED_WITH)) or {}).get("phi", "unknown")
  if phi_path and recorded != "unknown" and recorded != phi_digest(phi_path):
    return "other_phi"  # the meta-training it tested went on (a larger --meta_iterations): a new phi
  return "finished"


def _flat_keys(config_dict):
  from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  return set(workdir_lib._flatten(config_dict))  # pylint: disable=protected-access


def _move_aside(workdir, why, label):
  n = 1
  while os.path.exists(f"{workdir}.stale-{n}"):
    n += 1
  os.replace(workdir, f"{workdir}.stale-{n}")
  print(f"[{label}] {workdir} holds {why}; moved it to {workdir}.stale-{n} (kept) and testing again", flush=True)


def run_test(train_fn, config, workdir, phi_path, other_config="refuse", label="reproduce"):
  """Runs one test of a fixed optimizer (``train_fn(config, workdir)``) unless ``workdir`` holds it finished
  (:func:`test_status`: the same config and phi); resumes an unfinished one from its checkpoint, moves any
  other aside (``<workdir>.stale-N``, kept) and records the phi's digest. A workdir made with another config
  raises ``WorkdirError`` (``other_config="refuse"``, reproduce.py) or is moved aside too (``"move_aside"``,
  the main job, whose flags change its tests' budget). The one check both commands use."""
  from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  if other_config not in ("refuse", "move_aside"):
    raise ValueError(f"other_config must be 'refuse' or 'move_aside', got {other_config!r}")
  try:
    state = test_status(config, workdir, phi_path)
  except workdir_lib.WorkdirError:
    if other_config == "refuse":
      raise
    state = "other_config"
  if state == "finished":
    print(f"[{label}] {workdir}: already tested with this phi and budget; keeping it", flush=True)
    return
  if state == "unfinished" and os.path.exists(os.path.join(workdir, CHECKPOINT_NAME)):
    print(f"[{label}] {workdir}: unfinished test of this config; resuming it from its checkpoint", flush=True)
  elif state == "unfinished":
    _move_aside(workdir, "an unfinished test of this config (interrupted or failed; no checkpoint to resume)", label)
  elif state == "other_phi":
    _move_aside(workdir, "a test of an earlier phi of its meta-training", label)
  elif state == "other_config":
    _move_aside(workdir, "a test of another config (seed, seeds, budget or learning rate)", label)
  train_fn(config, workdir)
  workdir_lib.atomic_write(os.path.join(workdir, TESTED_WITH), json.dumps({"phi": phi_digest(phi_path)}))


def meta_train(variant, optimizer, workdir, budget, brax=False):
  """MetaA2C (the full-unroll estimator for STAR) with configs/meta_a2c.py:``variant``; returns the path of phi.npz
  (None: the run diverged)."""
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.meta import run
  config = _meta_budget(meta_a2c.get_config(variant), optimizer, budget, brax=brax)
  return _meta_run(run.meta_train, config, workdir)


def test_run(task, optimizer, phi_path, learning_rate, workdir, budget):
  """An A2C test run (docs/fidelity.md §10) of ``optimizer`` on ``task``."""
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.agents import a2c_train
  config = _test_budget(a2c_configs.get_config(task), optimizer, phi_path, learning_rate, budget)
  config.save_params = False
  run_test(a2c_train.train, config, workdir, phi_path)


def meta_train_ppo(variant, optimizer, pipeline, workdir, budget):
  """MetaPPO (the full-unroll estimator for STAR) with configs/ppo.py:``variant``; returns the path of phi.npz (None: the
  run diverged)."""
  from optim4rl_tf.configs import ppo as ppo_configs
  from optim4rl_tf.meta import run
  config = ppo_configs.get_config(variant)
  config.pipeline = pipeline  # before the budget: --reset_interval applies to pipeline runs only
  config = _meta_budget(config, optimizer, budget, brax=True)
  if budget.ppo_cpu:
    config.env.num_envs, config.batch_size = 256 * config.num_units, 256
  return _meta_run(run.meta_train, config, workdir)


def test_run_ppo(task, optimizer, phi_path, learning_rate, workdir, budget):
  """A PPO test run (docs/fidelity.md §10) of ``optimizer`` on ``task`` (the ``*_cpu`` variant with ``ppo_cpu``)."""
  from optim4rl_tf.configs import ppo as ppo_configs
  from optim4rl_tf.agents import ppo_train
  config = ppo_configs.get_config(f"{task}_cpu" if budget.ppo_cpu else task)
  run_test(ppo_train.train, _test_budget(config, optimizer, phi_path, learning_rate, budget), workdir, phi_path)


def _ppo_baselines(task, root, budget, wanted):
  sources = []
  for label, optimizer in (("Adam", "adam"), ("RMSProp", "rmsprop")):
    if wanted(label):
      test_dir = os.path.join(root, f"test_{optimizer}_{task}")
      test_run_ppo(task, optimizer, None, None, test_dir, budget)
      sources.append((label, test_dir))
  return sources


def reproduce_ppo(experiment, root, budget):
  """The Brax experiments (Figure 3 Ant/Humanoid panels, Table 1 Ant/Humanoid, Figure 4)."""
  from optim4rl_tf.configs import ppo as ppo_configs
  from optim4rl_tf.eval import report
  wanted = lambda label: not budget.only or label in budget.only
  out = os.path.join(root, "report")
  if experiment == "figure4_cpu":
    return reproduce_figure4_cpu(root, budget, wanted)
  if experiment == "figure4":
    meta_runs = [("Optim4RL",
                  os.path.join(root, "meta_optim4rl_grid6" + budget.run_suffix(True)))] if wanted("Optim4RL") else []
    phi = meta_train(  # Optim4RL meta-trained on the six gridworlds with MetaA2C (docs/fidelity.md §9.1)
        "grid6",
        "optim4rl",
        meta_runs[0][1],
        budget,
        brax=True) if meta_runs else None
    panels = []
    for task in FIGURE4_TASKS:
      sources = []
      if phi:
        test_dir = os.path.join(root, f"test_optim4rl_grid6{budget.run_suffix(True)}_{task}")
        test_run_ppo(task, "optim4rl", phi, FIGURE4_LR[task], test_dir, budget)
        sources.append(("Optim4RL", test_dir))
      panels.append(("figure4", task, sources + _ppo_baselines(task, root, budget, wanted)))
    return add_divergence(report.write_report(out, panels=panels, title=f"Reproduction: {experiment}"), meta_runs)
  task, learned, baselines, kind = PPO_EXPERIMENTS[experiment]
  sources, meta_runs = [], []
  for label, optimizer, variant, pipeline in learned:
    if not wanted(label):
      continue
    lr = ppo_configs.get_config(variant).learning_rate  # the agent lr of meta-training (docs/fidelity.md §10)
    safe = f"{optimizer}_{variant}" + ("" if pipeline else "_nopipe") + budget.run_suffix(pipeline)
    meta_runs.append((label, os.path.join(root, f"meta_{safe}")))
    phi = meta_train_ppo(variant, optimizer, pipeline, meta_runs[-1][1], budget)
    if phi is None:  # diverged: no learned optimizer to test (counted in the report)
      continue
    test_dir = os.path.join(root, f"test_{safe}")
    test_run_ppo(task, optimizer, phi, lr, test_dir, budget)
    sources.append((label, test_dir))
  if baselines:
    sources += _ppo_baselines(task, root, budget, wanted)
  return add_divergence(_write(report, out, experiment, task, kind, sources), meta_runs)


def reproduce_figure4_cpu(root, budget, wanted):
  """Figure 4 at CPU scale: the shipped optimizers (:data:`FIGURE4_CPU_LEARNED`; no meta-training here) vs
  Adam and RMSProp, PPO on the ``*_cpu`` settings of FIGURE4_CPU_TASKS. Every optimizer is tested at each rate of
  ``budget.test_lrs`` (default ``lr_choice.LRS``, the grid of issue #25's fair comparison; the official
  per-task rates, e.g. Walker2d's 3e-5, are not in it: pass them with --test_lrs) in
  ``test_<optimizer>_<task>_lrs/lr<lr>``; the report ranks these rates of each optimizer and shows its
  best."""
  from optim4rl_tf import pretrained
  from optim4rl_tf.eval import lr_choice
  from optim4rl_tf.eval import report
  budget.ppo_cpu = True
  lrs = budget.test_lrs or lr_choice.LRS
  rows = [(label, "optim4rl", name, pretrained.path(name)) for label, name in FIGURE4_CPU_LEARNED]
  rows += [("Adam", "adam", "adam", None), ("RMSProp", "rmsprop", "rmsprop", None)]
  panels = []
  for task in FIGURE4_CPU_TASKS:
    sources = []
    for label, optimizer, name, phi in rows:
      if wanted(label):
        grid_dir = os.path.join(root, f"test_{name if phi is None else 'optim4rl_' + name}_{task}_lrs")
        runs = [os.path.join(grid_dir, f"lr{lr:g}") for lr in lrs]
        for lr, run_dir in zip(lrs, runs):
          test_run_ppo(task, optimizer, phi, lr, run_dir, budget)
        sources.append((label, runs))  # only these rates: a folder of another grid's runs is not ranked
    panels.append(("figure4", task, sources))
  return report.write_report(os.path.join(root, "report"), panels=panels, title="Reproduction: figure4_cpu")


def _write(report, out, experiment, task, kind, sources):
  if kind == "panel":
    return report.write_report(out, panels=[("figure3", task, sources)], title=f"Reproduction: {experiment}")
  # Table 1 with the learning curves of its rows (table1_<task>.png).
  return report.write_report(out,
                             panels=[("table1", task, sources)],
                             table1=[(task, dict(sources))],
                             title=f"Reproduction: {experiment}")


def add_divergence(md_path, meta_runs):
  """Adds the meta-training outcomes of ``meta_runs`` [(label, workdir)] to report.md and report.json:
  how many diverged (``nonfinite="stop"``, no learned optimizer, not tested), and where."""
  if not meta_runs or not os.path.isfile(md_path):
    return md_path
  rows, diverged = [], 0
  for label, workdir in meta_runs:
    s = _summary(workdir)
    if s.get("diverged"):
      diverged += 1
      outcome = f"diverged at outer iteration {s.get('diverged_at')}: no learned optimizer, not tested"
    else:
      outcome = f"finished, {s.get('iterations', '?')} outer iterations ({s.get('skipped', 0)} skipped)"
    rows.append(
        dict(label=label,
             workdir=os.path.basename(workdir),
             nonfinite=s.get("nonfinite", "skip"),
             diverged=bool(s.get("diverged")),
             diverged_at=s.get("diverged_at"),
             outcome=outcome))
  lines = [
      "", "### Meta-training divergence", "",
      f"**{diverged} of {len(rows)} meta-training runs diverged.** With `nonfinite=stop` (the official "
      "MetaPPO) the first non-finite or absurd meta-gradient/phi ends a run with no learned optimizer; the "
      "paper reports STAR diverging in most Brax settings (App. E).", "",
      "| optimizer | meta-training workdir | nonfinite | outcome |", "|---|---|---|---|"
  ]
  lines += [f"| {r['label']} | {r['workdir']} | {r['nonfinite']} | {r['outcome']} |" for r in rows]
  with open(md_path, "a") as f:
    f.write("\n".join(lines) + "\n")
  json_path = os.path.join(os.path.dirname(md_path), "report.json")
  data = {}
  if os.path.exists(json_path):
    with open(json_path) as f:
      data = json.load(f)
  data["meta_training"] = dict(runs=len(rows), diverged=diverged, details=rows)
  with open(json_path, "w") as f:
    json.dump(data, f, indent=2, default=str)
  return md_path


def experiment_labels(experiment):
  """The labels (rows/curves) of ``experiment`` that --only may name."""
  if experiment == "figure4":
    return ["Optim4RL", "Adam", "RMSProp"]
  if experiment == "figure4_cpu":
    return [label for label, _ in FIGURE4_CPU_LEARNED] + ["Adam", "RMSProp"]
  table = EXPERIMENTS if experiment in EXPERIMENTS else PPO_EXPERIMENTS
  _, learned, baselines, _ = table[experiment]
  return [row[0] for row in learned] + (["Adam", "RMSProp"] if baselines else [])


def check_only(experiment, only):
  """--only must name labels of ``experiment`` (else it silently ran nothing)."""
  valid = experiment_labels(experiment)
  unknown = [label for label in only if label not in valid]
  if unknown:
    raise ValueError(f"--only={','.join(only)}: {', '.join(map(repr, unknown))} is not a label of {experiment}; "
                     f"valid: {', '.join(valid)}")


def reproduce(experiment, root, budget=None):
  """Runs one experiment into ``root`` with a :class:`Budget`; returns the path of its report.md. ``root`` is
  locked while it runs (a second process on it is refused: ``WorkdirError``)."""
  from optim4rl_tf.utils import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  budget = budget or Budget()
  if experiment not in ALL_EXPERIMENTS and experiment not in EXPERIMENTS and experiment not in PPO_EXPERIMENTS:
    raise KeyError(experiment)
  with workdir_lib.lock(root):
    if experiment not in EXPERIMENTS:
      return reproduce_ppo(experiment, root, budget)
    return _reproduce_a2c(experiment, root, budget)


def _reproduce_a2c(experiment, root, budget):
  """The MetaA2C experiments (Figure 3 Catch / big_dense_long panels, Table 1 gridworld rows)."""
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.eval import report
  task, learned, baselines, kind = EXPERIMENTS[experiment]
  wanted = lambda label: not budget.only or label in budget.only
  sources, meta_runs = [], []
  for label, optimizer, variant in learned:
    if not wanted(label):
      continue
    lr = meta_a2c.get_config(variant).tasks[0].learning_rate  # the agent lr of meta-training (§10)
    safe = f"{optimizer}_{variant}" + budget.run_suffix(not variant.endswith("_nopipe"))
    meta_runs.append((label, os.path.join(root, f"meta_{safe}")))
    phi = meta_train(variant, optimizer, meta_runs[-1][1], budget)
    if phi is None:  # diverged: no learned optimizer to test (counted in the report)
      continue
    test_dir = os.path.join(root, f"test_{safe}")
    test_run(task, optimizer, phi, lr, test_dir, budget)
    sources.append((label, test_dir))
  if baselines:
    for label, optimizer in (("Adam", "adam"), ("RMSProp", "rmsprop")):
      if wanted(label):
        test_dir = os.path.join(root, f"test_{optimizer}")
        test_run(task, optimizer, None, None, test_dir, budget)
        sources.append((label, test_dir))
  return add_divergence(_write(report, os.path.join(root, "report"), experiment, task, kind, sources), meta_runs)


def define_flags(flag_values, argv=None):
  """The command line of ``optim4rl-reproduce`` / ``launch/reproduce.py``, defined on ``flag_values`` (a
  ``flags.FlagValues``; ``argv`` unused: no config file flag)."""
  del argv
  fv = dict(flag_values=flag_values)
  flags.DEFINE_enum("experiment", "figure3_catch", ALL_EXPERIMENTS, "What to reproduce.", **fv)
  flags.DEFINE_string("workdir", None, "Output directory.", **fv)
  flags.DEFINE_integer("meta_iterations", 0, "Outer iterations per meta-training run (0: the paper's).", **fv)
  flags.DEFINE_integer("meta_units", 0, "Training units per meta-training run (0: the paper's).", **fv)
  flags.DEFINE_integer(
      "reset_interval", 0, "Reset interval m of the pipeline-training runs (0: the config's; sdl/bdl sweep "
      "72, 144, 288, 576). Their workdirs get the suffix _m<m>; runs without pipeline training are unchanged.", **fv)
  flags.DEFINE_float("meta_lr", 0.0, "Meta learning rate (0: the config's default).", **fv)
  flags.DEFINE_float("test_steps", 0.0, "Env steps per seed of each test run (0: the paper's).", **fv)
  flags.DEFINE_integer("num_seeds", 10, "Seeds per test run.", **fv)
  flags.DEFINE_list("only", [], "Run only these labels (e.g. Optim4RL,Adam).", **fv)
  flags.DEFINE_integer("seed", 0, "Base seed.", **fv)
  flags.DEFINE_bool("ppo_cpu", False, "Brax experiments at laptop size (*_cpu PPO tests, 256-env MetaPPO).", **fv)
  flags.DEFINE_list(
      "test_lrs", [], "figure4_cpu only: learning rates every optimizer is tested at, each reported at its best "
      "(default 3e-4,1e-3,3e-3).", **fv)
  flags.DEFINE_enum(
      "nonfinite", "auto", ("auto", "stop", "skip"),
      "Meta-training divergence policy: stop at the first non-finite phi (official), skip "
      "(project default), auto (stop for STAR and Brax experiments, skip otherwise).", **fv)


def main(argv, flag_values):
  """The command: flags -> :class:`Budget` (checked before TensorFlow loads) -> :func:`reproduce`; prints
  the report. One line and an exit status for a bad flag, config or workdir (2), a failed run (1),
  SIGINT/SIGTERM (130/143)."""
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flag_values
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  try:  # (before TensorFlow loads)
    if f.test_lrs and f.experiment != "figure4_cpu":
      raise ValueError(f"--test_lrs applies to figure4_cpu only, not {f.experiment}")
    try:
      test_lrs = tuple(float(lr) for lr in f.test_lrs)
    except ValueError:
      raise ValueError(f"--test_lrs must be positive numbers, got {f.test_lrs}") from None
    budget = Budget(f.meta_iterations, f.meta_units, f.meta_lr, f.test_steps, f.num_seeds, f.only, f.seed, f.ppo_cpu,
                    f.nonfinite, f.reset_interval, test_lrs)
    check_only(f.experiment, budget.only)
    cc.check_writable_dir(f.workdir, "--workdir")
  except ValueError as e:
    cli.fail(e)
  from optim4rl_tf.meta import run  # pylint: disable=import-outside-toplevel
  path = run.cli_call(reproduce, f.experiment, f.workdir, budget)
  print(open(path).read())
  print(f"report: {path}")


def console():
  """The ``optim4rl-reproduce`` console script (and launch/reproduce.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  from optim4rl_tf.utils import cli  # pylint: disable=import-outside-toplevel
  cli.run_command(define_flags, main)
