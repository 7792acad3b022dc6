"""Tables 5-7: a fixed learned optimizer under changed GAE lambda / entropy weight / discount (docs/fidelity.md §9.4).

:func:`plan` expands a ``configs/robustness.py`` config into A2C runs (one per distinct hyper-parameter
setting; the default setting shared by the three tables runs once), :func:`run_all` runs them with
:func:`optim4rl_tf.agents.a2c_train.train` (seeds as the unit axis) and :func:`report_markdown` writes each
table beside the paper's numbers.
"""

import json
import math
import os

from optim4rl_tf.optimizers import transforms

TABLES = {  # table number -> (hyper-parameter field, column title)
    5: ("gae_lambda", "GAE λ"),
    6: ("entropy_weight", "entropy weight"),
    7: ("discount", "discount γ"),
}
# Paper Tables 5/6/7 (docs/fidelity.md §9.4): {table: {task: {value: (mean, ± 90% CI half-width)}}}.
PAPER = {
    5: {
        "small_dense_short": {
            0.9: (11.51, 0.19),
            0.95: (11.25, 0.16),
            0.99: (10.81, 0.17),
            0.995: (10.66, 0.17)
        },
        "big_dense_long": {
            0.9: (23.35, 0.76),
            0.95: (23.57, 0.60),
            0.99: (21.31, 0.64),
            0.995: (20.55, 0.54)
        }
    },
    6: {
        "small_dense_short": {
            0.005: (11.01, 0.16),
            0.01: (11.13, 0.09),
            0.02: (11.29, 0.12),
            0.04: (11.25, 0.16)
        },
        "big_dense_long": {
            0.005: (22.41, 0.59),
            0.01: (22.45, 0.79),
            0.02: (22.59, 0.43),
            0.04: (19.96, 1.30)
        }
    },
    7: {
        "small_dense_short": {
            0.9: (12.47, 0.14),
            0.95: (12.32, 0.09),
            0.99: (11.48, 0.09),
            0.995: (11.01, 0.17)
        },
        "big_dense_long": {
            0.9: (18.13, 3.27),
            0.95: (25.01, 1.42),
            0.99: (25.45, 0.47),
            0.995: (22.07, 0.81)
        }
    },
}
TASK_SHORT = {"small_dense_short": "sds", "big_dense_long": "bdl"}


def parse_list(text, cast=str, name="value"):
  items = [t.strip() for t in str(text).split(",") if t.strip()]
  if not items:
    raise ValueError(f"{name} is empty")
  try:
    return [cast(t) for t in items]
  except ValueError:
    raise ValueError(f"{name}: cannot parse {text!r} as a comma-separated list") from None


def validate(rc):
  tasks = parse_list(rc.tasks, name="tasks")
  for t in tasks:
    if t not in TASK_SHORT:
      raise ValueError(f"Unknown task {t!r} in tasks; valid: {', '.join(TASK_SHORT)}")
  tables = parse_list(rc.tables, int, name="tables")
  for t in tables:
    if t not in TABLES:
      raise ValueError(f"Unknown table {t} in tables; valid: 5 (GAE lambda), 6 (entropy), 7 (discount)")
  if rc.optimizer.name not in transforms.OPTIMIZER_NAMES:
    raise ValueError(f"Unknown optimizer.name {rc.optimizer.name!r}; valid: "
                     f"{', '.join(transforms.OPTIMIZER_NAMES)}")
  learned = rc.optimizer.name not in transforms.CLASSICAL
  if learned and not rc.meta_params and not rc.allow_untrained:
    raise ValueError("meta_params is required: the .npz of the fixed learned optimizer to test (written by "
                     "launch/meta_train.py); set allow_untrained=True only for smoke tests")
  if rc.meta_params and not os.path.isfile(rc.meta_params):
    raise ValueError(f"meta_params: file not found: {rc.meta_params!r}")
  for field, _ in TABLES.values():
    for v in parse_list(rc.sweep[field], float, name=f"sweep.{field}"):
      if field == "entropy_weight" and not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"sweep.{field}: {v} is not a non-negative number")
      if field != "entropy_weight" and not 0.0 <= v <= 1.0:
        raise ValueError(f"sweep.{field}: {v} is not in [0, 1]")
  return tasks, tables


def setting_key(s):
  return f"lam{s['gae_lambda']:g}_ent{s['entropy_weight']:g}_gam{s['discount']:g}"


def plan(rc):
  """[(task, setting dict, [(table, value), ...])]: distinct runs and the table cells each one fills."""
  tasks, tables = validate(rc)
  runs = []
  for task in tasks:
    by_key = {}
    for table in tables:
      field, _ = TABLES[table]
      for v in parse_list(rc.sweep[field], float, name=f"sweep.{field}"):
        s = dict(gae_lambda=float(rc.defaults.gae_lambda),
                 entropy_weight=float(rc.defaults.entropy_weight),
                 discount=float(rc.defaults.discount))
        s[field] = v
        key = setting_key(s)
        if key not in by_key:
          by_key[key] = (task, s, [])
          runs.append(by_key[key])
        by_key[key][2].append((table, v))
  return runs


def a2c_config(rc, task, setting, base_config_fn):
  """The A2C config of one run (``base_config_fn(task)`` = configs/a2c.py ``get_config``)."""
  c = base_config_fn(task)
  c.env.num_envs = int(rc.num_envs)
  c.env.reward_scale = float(rc.reward_scale)
  c.train_steps = float(rc.train_steps)
  c.num_seeds = int(rc.num_seeds)
  c.seed = int(rc.seed)
  c.gae_lambda = setting["gae_lambda"]
  c.entropy_weight = setting["entropy_weight"]
  c.discount = setting["discount"]
  c.optimizer.name = rc.optimizer.name
  c.optimizer.learning_rate = float(rc.optimizer.learning_rate)
  c.optimizer.grad_clip = float(rc.optimizer.grad_clip)
  c.optimizer.meta_params = rc.meta_params
  c.iterations_per_call = int(rc.iterations_per_call)
  c.chunk_secs = float(rc.chunk_secs)
  c.conv_form = rc.conv_form
  c.jit_compile = bool(rc.jit_compile)
  c.console_every_secs = float(rc.console_every_secs)
  c.save_params = False
  return c


RESULT_FILE = "robustness_run.json"


def _set_aside_other_config(run_dir, cfg_dict, console):
  """A run folder holding a run of another config (a changed seed or budget: the folder is named by the
  setting only) is moved to ``<run_dir>.stale-N``, kept, so the new run starts clean; the same config is left
  to ``a2c_train.train``, which resumes or finishes it."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    old = None
  if old == json.loads(json.dumps(cfg_dict, default=str)):
    return
  n = 1
  while os.path.exists(f"{run_dir}.stale-{n}"):
    n += 1
  os.replace(run_dir, f"{run_dir}.stale-{n}")
  if console:
    print(f"  {run_dir} held a run of another config: moved to {run_dir}.stale-{n}", flush=True)


def run_all(rc, workdir, base_config_fn, console=True):
  """Runs (or, with ``rc.resume``, reuses) every planned run. Returns a list of result dicts."""
  from optim4rl_tf.agents import a2c_train
  from optim4rl_tf.utils import logging as logging_lib

  runs = plan(rc)
  results = []
  for i, (task, setting, cells) in enumerate(runs):
    cfg = a2c_config(rc, task, setting, base_config_fn)
    a2c_train.validate_config(cfg)
    run_dir = os.path.join(workdir, task, setting_key(setting))
    cfg_dict = logging_lib.config_to_dict(cfg)
    res_path = os.path.join(run_dir, RESULT_FILE)
    if rc.resume and os.path.isfile(res_path):
      with open(res_path) as f:
        old = json.load(f)
      if old.get("config") == json.loads(json.dumps(cfg_dict, default=str)):
        old["cells"] = [list(c) for c in cells]
        results.append(old)
        if console:
          print(f"[robustness {i + 1}/{len(runs)}] {task} {setting_key(setting)}: reusing {run_dir}", flush=True)
        continue
    if console:
      print(f"[robustness {i + 1}/{len(runs)}] {task} {setting_key(setting)} -> {run_dir}", flush=True)
    _set_aside_other_config(run_dir, cfg_dict, console)
    out = a2c_train.train(cfg, run_dir, console=console)
    ci = out["ci"]
    finals = None if out["final"] is None else [None if not math.isfinite(x) else float(x) for x in out["final"]]
    rec = dict(task=task,
               setting=setting,
               cells=[list(c) for c in cells],
               run_dir=run_dir,
               mean=None if ci is None else ci.mean,
               half_width=None if ci is None else ci.half_width,
               ci_low=None if ci is None else ci.low,
               ci_high=None if ci is None else ci.high,
               finals=finals,
               seeds=out["labels"],
               env_steps=out["env_steps"],
               wall_secs=out["wall_secs"],
               config=json.loads(json.dumps(cfg_dict, default=str)))
    logging_lib.write_json(res_path, rec)
    results.append(rec)
  return results


def finished_results(rc, workdir):
  """The result dicts of the planned runs that have finished under ``workdir`` (their RESULT_FILE), in plan
  order, without running anything (``--report_only``); runs not finished are left out."""
  results = []
  for task, setting, cells in plan(rc):
    path = os.path.join(workdir, task, setting_key(setting), RESULT_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        result = json.load(f)
      result["cells"] = [list(c) for c in cells]
      results.append(result)
  return results


def _cell(mean, hw):
  return "n/a" if mean is None else f"{mean:.2f} ± {hw:.2f}"


def report_markdown(rc, results):
  """Tables 5-7 as Markdown: measured (mean ± 90% CI half-width over seeds) beside the paper."""
  tasks, tables = validate(rc)
  measured = {}
  for r in results:
    for table, v in r["cells"]:
      measured[(int(table), r["task"], float(v))] = r
  steps = float(rc.train_steps)
  opt = rc.optimizer.name + (f" ({rc.meta_params})" if rc.meta_params else
                             (" (UNTRAINED random phi)" if rc.optimizer.name not in transforms.CLASSICAL else ""))
  lines = [
      "# Tables 5-7 — robustness of a fixed learned optimizer to A2C hyper-parameters", "",
      f"Optimizer: {opt}, learning rate {float(rc.optimizer.learning_rate):g}, elementwise clip "
      f"{float(rc.optimizer.grad_clip):g}, reward scale {float(rc.reward_scale):g}. Per run: "
      f"{int(rc.num_seeds)} seeds (seed {int(rc.seed)}..{int(rc.seed) + int(rc.num_seeds) - 1}), "
      f"{int(rc.num_envs)} envs per seed, {steps:,.0f} env steps per seed "
      f"(paper: 10 seeds, 512 envs, 30,000,000 steps). Return = mean over seeds of each seed's mean of "
      "its last 20 logged returns, ± half-width of the 90% percentile-bootstrap CI (as the paper).", "",
      "Each table varies one hyper-parameter; the others stay at lambda "
      f"{float(rc.defaults.gae_lambda):g}, entropy {float(rc.defaults.entropy_weight):g}, discount "
      f"{float(rc.defaults.discount):g}. The default setting is one set of runs shown in every table "
      "(the paper's default rows differ across tables: separate runs).", ""
  ]
  for table in tables:
    field, title = TABLES[table]
    lines += [
        f"## Table {table} — {title}", "", f"| task | {title} | return (measured here) | return (paper) |",
        "|---|---|---|---|"
    ]
    for task in tasks:
      vals = sorted(set(list(PAPER[table][task]) + [v for (t, k, v) in measured if t == table and k == task]))
      for v in vals:
        r = measured.get((table, task, v))
        mine = "not run" if r is None else _cell(r["mean"], r["half_width"])
        paper = PAPER[table][task].get(v)
        lines.append(f"| {TASK_SHORT[task]} | {v:g} | {mine} | "
                     f"{'–' if paper is None else _cell(*paper)} |")
    lines.append("")
  lines += ["Runs:", ""]
  for r in results:
    lines.append(f"- {r['task']} {setting_key(r['setting'])}: {r['run_dir']} "
                 f"({r['env_steps']:,} steps per seed, {r['wall_secs']:.0f} s)")
  return "\n".join(lines) + "\n"


def write_report(rc, results, workdir):
  path = os.path.join(workdir, "robustness.md")
  with open(path, "w") as f:
    f.write(report_markdown(rc, results))
  with open(os.path.join(workdir, "robustness.json"), "w") as f:
    json.dump(dict(results=results,
                   paper={
                       str(k): {
                           t: {
                               str(v): p for v, p in d.items()
                           } for t, d in tv.items()
                       } for k, tv in PAPER.items()
                   }),
              f,
              indent=1,
              default=str)
  return path
