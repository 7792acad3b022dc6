"""One command per A2C figure/table of the paper: meta-train, test the fixed optimizers, report.

  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch            # full budget
  python launch/reproduce.py --experiment=figure3_catch --workdir=runs/fig3_catch_small \
      --meta_iterations=10 --test_steps=1e5 --num_seeds=3                                      # reduced

Experiments (docs/fidelity.md §9.1, §10):
  figure3_catch  Optim4RL, LinearOptim, L2LGD², STAR meta-trained on Catch; tested with A2C vs Adam, RMSProp
  figure3_bdl    the same on big_dense_long
  table1_sdl     Optim4RL on small_dense_long with and without pipeline training (Table 1)
  table1_bdl     the same on big_dense_long
  figure3_ant, figure3_humanoid   the four learned optimizers meta-trained with MetaPPO (STAR: MetaPPOstar)
                 on Ant / Humanoid, tested with PPO vs Adam, RMSProp (configs/ppo.py meta_* and the task)
  table1_ant, table1_humanoid     Optim4RL with and without pipeline training, MetaPPO (Table 1)
  figure4        Optim4RL meta-trained on the six gridworlds (grid6), tested with PPO on Ant, Humanoid,
                 inverted double pendulum and Walker2d vs Adam, RMSProp
  figure4_cpu    Figure 4 at CPU scale: the SHIPPED optimizers (Optim4RL.from_pretrained "grid6" and "catch",
                 no meta-training) vs Adam, RMSProp, PPO on the *_cpu settings of inverted double pendulum and
                 Walker2d (always --ppo_cpu; about an hour with --num_seeds=5 --test_steps=1e6)

The Brax experiments are GPU-sized; ``--ppo_cpu`` runs them at laptop size (PPO tests on the ``*_cpu``
variants of configs/ppo.py, MetaPPO with 256 envs and batch 256).

Each meta-training run uses the paper's setting of configs/meta_a2c.py (one configuration: the first of its
sweep, or --config-style overrides below); each test run trains A2C with the fixed phi for --num_seeds seeds
in one graph. Re-running with the same --workdir skips finished runs. The report (report.md + PNG) is written
by optim4rl_tf.eval.report, with the paper's numbers beside ours where the paper gives them.

Table 1's reset-interval sweep: ``--reset_interval=144 --only=with`` in the same --workdir meta-trains and tests
the pipeline row at m = 144 (workdirs ``*_m144``) and leaves the finished runs as they are.

Divergence (--nonfinite, docs/fidelity.md §5.4): where the paper reports failure rates (App. E: STAR diverges
in most Brax settings), meta-training runs as the official code does, config ``nonfinite="stop"``: the first
non-finite or absurd meta-gradient/phi ends the run with no learned optimizer (summary.json ``diverged``);
it is not tested, and the report counts the diverged runs. ``auto`` (default) does so for STAR and for every
meta-training of a Brax experiment; the other runs keep the guard's default ("skip": skip and count).
"""
import json
import os

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
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
FIGURE4_CPU_LEARNED = (("Optim4RL grid6", "grid6"), ("Optim4RL catch", "catch"))
ALL_EXPERIMENTS = list(EXPERIMENTS) + list(PPO_EXPERIMENTS) + ["figure4", "figure4_cpu"]

flags.DEFINE_enum("experiment", "figure3_catch", ALL_EXPERIMENTS, "What to reproduce.")
flags.DEFINE_string("workdir", None, "Output directory.")
flags.DEFINE_integer("meta_iterations", 0, "Outer iterations per meta-training run (0: the paper's).")
flags.DEFINE_integer("meta_units", 0, "Training units per meta-training run (0: the paper's).")
flags.DEFINE_integer(
    "reset_interval", 0, "Reset interval m of the pipeline-training runs (0: the config's; sdl/bdl sweep "
    "72, 144, 288, 576). Their workdirs get the suffix _m<m>; runs without pipeline training are unchanged.")
flags.DEFINE_float("meta_lr", 0.0, "Meta learning rate (0: the config's default).")
flags.DEFINE_float("test_steps", 0.0, "Env steps per seed of each test run (0: the paper's).")
flags.DEFINE_integer("num_seeds", 10, "Seeds per test run.")
flags.DEFINE_list("only", [], "Run only these labels (e.g. Optim4RL,Adam).")
flags.DEFINE_integer("seed", 0, "Base seed.")
flags.DEFINE_bool("ppo_cpu", False, "Brax experiments at laptop size (*_cpu PPO tests, 256-env MetaPPO).")
flags.DEFINE_enum(
    "nonfinite", "auto", ("auto", "stop", "skip"),
    "Meta-training divergence policy: stop at the first non-finite phi (official), skip "
    "(project default), auto (stop for STAR and Brax experiments, skip otherwise).")
FLAGS = flags.FLAGS


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
               reset_interval=0):
    if reset_interval < 0:
      raise ValueError(f"reset_interval must be >= 0 (0: the config's), got {reset_interval}")
    self.meta_iterations, self.meta_units, self.meta_lr = meta_iterations, meta_units, meta_lr
    self.test_steps, self.num_seeds, self.only, self.seed = test_steps, num_seeds, tuple(only), seed
    self.ppo_cpu, self.nonfinite, self.reset_interval = ppo_cpu, nonfinite, reset_interval

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
  config.seed = budget.seed + 1000
  if budget.test_steps > 0:
    config.train_steps = budget.test_steps
  return config


def _done(workdir):
  return os.path.exists(os.path.join(workdir, "summary.json"))


def _summary(workdir):
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _meta_run(train_fn, config, workdir):
  """Runs (or finds finished) one meta-training; returns the path of phi.npz, or None when it diverged
  (``nonfinite="stop"``: no learned optimizer, recorded in its summary.json)."""
  from optim4rl_tf.meta import trainer as trainer_lib
  if not _done(workdir):
    try:
      train_fn(config, workdir)
    except trainer_lib.Diverged as e:
      print(f"[reproduce] {e}", flush=True)
  if _summary(workdir).get("diverged"):
    return None
  return os.path.join(workdir, "phi.npz")


def meta_train(variant, optimizer, workdir, budget, brax=False):
  """MetaA2C (MetaA2Cstar for STAR) with configs/meta_a2c.py:``variant``; returns the path of phi.npz
  (None: the run diverged)."""
  from optim4rl_tf.configs import meta_a2c
  from optim4rl_tf.meta import run
  config = _meta_budget(meta_a2c.get_config(variant), optimizer, budget, brax=brax)
  return _meta_run(run.meta_train, config, workdir)


def test_run(task, optimizer, phi_path, learning_rate, workdir, budget):
  """An A2C test run (docs/fidelity.md §10) of ``optimizer`` on ``task``."""
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.agents import a2c_train
  if _done(workdir):
    return
  config = _test_budget(a2c_configs.get_config(task), optimizer, phi_path, learning_rate, budget)
  config.save_params = False
  a2c_train.train(config, workdir)


def meta_train_ppo(variant, optimizer, pipeline, workdir, budget):
  """MetaPPO (MetaPPOstar for STAR) with configs/ppo.py:``variant``; returns the path of phi.npz (None: the
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
  if _done(workdir):
    return
  config = ppo_configs.get_config(f"{task}_cpu" if budget.ppo_cpu else task)
  ppo_train.train(_test_budget(config, optimizer, phi_path, learning_rate, budget), workdir)


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
  """Figure 4 at CPU scale: the shipped grid6 and catch optimizers (no meta-training here) vs Adam and
  RMSProp, PPO on the ``*_cpu`` settings of FIGURE4_CPU_TASKS, the official per-task agent lr."""
  from optim4rl_tf import pretrained
  from optim4rl_tf.eval import report
  budget.ppo_cpu = True
  panels = []
  for task in FIGURE4_CPU_TASKS:
    sources = []
    for label, name in FIGURE4_CPU_LEARNED:
      if wanted(label):
        test_dir = os.path.join(root, f"test_optim4rl_{name}_{task}")
        test_run_ppo(task, "optim4rl", pretrained.path(name), FIGURE4_LR[task], test_dir, budget)
        sources.append((label, test_dir))
    panels.append(("figure4", task, sources + _ppo_baselines(task, root, budget, wanted)))
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


def reproduce(experiment, root, budget=None):
  """Runs one experiment into ``root`` with a :class:`Budget`; returns the path of its report.md."""
  budget = budget or Budget()
  if experiment not in EXPERIMENTS:
    return reproduce_ppo(experiment, root, budget)
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


def main(argv):
  logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (checkpoint saving) off the console
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  budget = Budget(FLAGS.meta_iterations, FLAGS.meta_units, FLAGS.meta_lr, FLAGS.test_steps, FLAGS.num_seeds, FLAGS.only,
                  FLAGS.seed, FLAGS.ppo_cpu, FLAGS.nonfinite, FLAGS.reset_interval)
  path = reproduce(FLAGS.experiment, FLAGS.workdir, budget)
  print(open(path).read())
  print(f"report: {path}")


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
