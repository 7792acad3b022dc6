"""The cards of the shipped learned optimizers: the learning rate each is recommended at, the rates where it
was measured to work and its results on tasks it never saw, made from measured results and stored beside the
files (``optim4rl_tf/pretrained/cards.json``, read by ``optim4rl_tf.pretrained.card``), so that
``Optim4RL.from_pretrained(name)`` runs at the rate its card recommends.

  python launch/make_cards.py                      # from results/generalisation, keras_cartpole, figure4_cpu
  python launch/make_cards.py --names=grid6 --figure4=runs/fig4_cpu/report/report.json

Inputs (each optional; a card needs at least one measurement of an unseen task):

* ``--generalisation``: numbers.json of ``launch/generalisation.py`` (A2C on the gridworlds and Catch, every
  optimizer at its best rate of a grid: ``best[task][optimizer]`` with ``lr``, ``mean``, ``low``, ``high``,
  ``works_at``, ``ratio_to_adam_best``). The tasks a file was meta-trained on are left out of its card.
* ``--keras_cartpole``: one or more numbers.json of ``examples/keras_cartpole_sweep.py`` (a gymnasium task
  through a plain Keras model, CartPole-v1 or the sweep's ``--env``: ``best["optim4rl:NAME"]`` and
  ``best["adam"]`` with ``lr``, ``mean``, ``ci90``, ``works_at``; on a task with negative returns the ratio to
  Adam counts from the sweep's ``floor_return``, as the sweep's own report does).
  A sweep of a file given by path (``best["optim4rl:PATH.npz"]``) counts for NAME when PATH holds the same
  meta-parameters as the shipped file (same digest, ``reproduce.phi_digest``): the same optimizer.
* ``--figure4``: one or more report.json of ``launch/reproduce.py --experiment=figure4_cpu`` (PPO on Brax; the
  selected configuration of each optimizer, its rate read from the configuration's label). Per task, a file's
  entry comes from the first report that has it and Adam's from the first report that has Adam, so a file
  tested on its own (``--only='Optim4RL NAME'``) is compared with the Adam of an earlier report.

The recommended rate (:func:`recommend`): of the rates measured on every unseen task with a rate grid, the one
at which the file works on the most of them; ties go to the rate it was meta-trained with, then to the
smaller. Its gradient clip is the one it was meta-trained with (``pretrained.agent_settings``).
"""

import json
import os
import re

from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime
from optim4rl_tf.utils import stats

GENERALISATION_LABEL = "Optim4RL {name}"
CARTPOLE_LABEL = "optim4rl:{name}"
FIGURE4_LABEL = "Optim4RL {name}"
_LR_IN_LABEL = re.compile(r"optimizer\.learning_rate=([0-9.eE+-]+)")


def _entry(task, suite, lr, mean, low, high, adam_mean, adam_lr, works_at=None, floor=0.0):
  """One unseen task's entry; the ratio to Adam's best counts from ``floor`` (the return of a policy that
  learns nothing; 0 but on tasks with negative returns, where the entry records it as ``floor_return``)."""
  out = dict(task=task,
             suite=suite,
             lr=lr,
             mean=mean,
             ci90=[low, high],
             adam_best=adam_mean,
             adam_lr=adam_lr,
             ratio_to_adam_best=stats.ratio_above_floor(mean, adam_mean, floor))
  if floor:
    out["floor_return"] = floor
  if works_at is not None:
    out["works_at"] = [float(x) for x in works_at]
  return out


def from_generalisation(name, numbers, seen):
  """Entries of ``name`` on the tasks of a generalisation numbers dict it never saw (``seen``: its tasks)."""
  label = GENERALISATION_LABEL.format(name=name)
  out = []
  for task in numbers.get("tasks", []):
    best = numbers["best"][task]
    if task in seen or label not in best:
      continue
    mine, adam = best[label], best.get("Adam") or {}
    if mine["diverged"] or mine["mean"] is None:
      mine = dict(mine, mean=None, low=None, high=None)
    adam_mean = adam.get("mean") if not adam.get("diverged") else None
    suite = "catch" if task == "catch" else "gridworld"
    out.append(
        _entry(task, f"A2C, {suite}", mine["lr"], mine["mean"], mine["low"], mine["high"], adam_mean, adam.get("lr"),
               mine["works_at"]))
  return out


def _same_file(label, name):
  """Whether sweep label ``optim4rl:PATH.npz`` names a file (PATH relative to the working directory) holding
  the meta-parameters of shipped file ``name``."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
  prefix = CARTPOLE_LABEL.format(name="")
  file = label[len(prefix):] if label.startswith(prefix) else ""
  if not file.endswith(".npz") or not os.path.isfile(file):
    return False
  return reproduce.phi_digest(file) == reproduce.phi_digest(pretrained.path(name))


def from_keras_sweep(name, numbers):
  """The entry of ``name`` on the sweep's task (a plain Keras model; CartPole-v1 for a sweep that names no
  ``env``), or [] when the sweep did not run it (by name, or by a path to the same meta-parameters)."""
  best = numbers.get("best", {})
  mine, adam = best.get(CARTPOLE_LABEL.format(name=name)), best.get("adam") or {}
  if mine is None:
    mine = next((best[label] for label in best if _same_file(label, name)), None)
  if mine is None:
    return []
  low, high = mine["ci90"]
  return [
      _entry(numbers.get("env", "CartPole-v1"), "A2C through a keras.Sequential model (examples/keras_cartpole.py)",
             mine["lr"], mine["mean"], low, high, adam.get("mean"), adam.get("lr"), mine["works_at"],
             float(numbers.get("floor_return", 0.0)))
  ]


_LR_IN_RUN_DIR = re.compile(r"^lr([0-9.eE+-]+)$")


def _lr_of(selected):
  """The rate of a report's selected configuration: from its label ("optimizer.learning_rate=..."), or, for an
  optimizer run at one rate (label "default"), from its run folder (figure4_cpu's ``.../lr<lr>``)."""
  m = _LR_IN_LABEL.search(selected.get("configuration") or "")
  if m:
    return float(m.group(1))
  dirs = selected.get("workdirs") or []
  m = _LR_IN_RUN_DIR.match(os.path.basename(os.path.normpath(dirs[0]))) if dirs else None
  return float(m.group(1)) if m else None


def from_figure4(name, *reports):
  """The Brax entries of ``name`` in figure4_cpu report.json dicts (PPO; no works_at: only the best is kept):
  per task, its selection in the first report that has it, Adam's in the first report that has Adam."""
  selected = {}  # task -> {label: selection}, the first report's first
  for report in reports:
    for panel in report.get("panels", []):
      for source in panel["sources"]:
        selected.setdefault(panel["task"], {}).setdefault(source["label"], source["selected"])
  out = []
  for task, sources in selected.items():
    mine, adam = sources.get(FIGURE4_LABEL.format(name=name)), sources.get("Adam")
    if mine is None:
      continue
    ci = mine.get("ci") or {}
    adam_mean = adam.get("mean") if adam else None
    out.append(
        _entry(task, "PPO on Brax", _lr_of(mine), mine.get("mean"), ci.get("low"), ci.get("high"), adam_mean,
               _lr_of(adam) if adam else None))
  return out


def recommend(entries, meta_lr):
  """(lr, how many of the grid-measured entries it works at, how many there are): see the module doc.
  None where no entry has a rate grid."""
  graded = [e for e in entries if "works_at" in e]
  if not graded:
    return None
  rates = sorted({lr for e in graded for lr in e["works_at"]} | {e["lr"] for e in graded if e["lr"] is not None})
  if not rates:
    return None
  count = {lr: sum(lr in e["works_at"] for e in graded) for lr in rates}
  best = max(count.values())
  tied = [lr for lr in rates if count[lr] == best]
  lr = meta_lr if meta_lr in tied else tied[0]
  return lr, best, len(graded)


def make_card(name, entries, meta_settings, sources, file_commit=None):
  """The card dict of shipped file ``name`` from its unseen-task ``entries`` (ValueError without any).
  ``file_commit``: the commit in the file's provenance (a file remade later does not take this card)."""
  if not entries:
    raise ValueError(f"no measurement of {name!r} on a task it never saw: nothing to write its card from")
  meta_lr = meta_settings.get("learning_rate")
  chosen = recommend(entries, meta_lr)
  lr, works, graded = chosen if chosen else (meta_lr, None, 0)
  ratios = [
      e["ratio_to_adam_best"]
      for e in entries
      if e["adam_best"] is not None and e["adam_best"] > e.get("floor_return", 0.0)
  ]
  ratios = [r if r is not None else 0.0 for r in ratios]  # a diverged file counts as 0
  good = sum(r >= 0.8 for r in ratios)
  summary = (f"{good} of {len(ratios)} unseen tasks at >= 0.8x Adam's best" +
             (f"; recommended lr {lr:g}, where it works on {works} of the {graded} tasks measured at each rate"
              if chosen else f"; lr {lr:g}, the rate it was meta-trained with (no rate grid measured)"))
  return dict(name=name,
              file_commit=file_commit,
              learning_rate=lr,
              clipvalue=meta_settings.get("clipvalue"),
              meta_training_lr=meta_lr,
              summary=summary,
              unseen=entries,
              sources=sources)


def _load(path, what):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"--{what}: cannot read {path}: {e}") from None


def _as_list(numbers):
  """None, one numbers dict, or a sequence of them -> a list of dicts."""
  if numbers is None:
    return []
  return [numbers] if isinstance(numbers, dict) else list(numbers)


def build_cards(names, generalisation=None, keras_cartpole=None, figure4=None):
  """{name: card} of the shipped ``names`` from the numbers dicts given (each may be None; ``keras_cartpole``
  and ``figure4``: a dict or a list of them)."""
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  from optim4rl_tf.eval import generalisation as gen  # pylint: disable=import-outside-toplevel
  cards = {}
  for name in names:
    entries, sources = [], {}
    if generalisation is not None and "best" in generalisation:
      seen = gen.seen_tasks(GENERALISATION_LABEL.format(name=name))
      found = from_generalisation(name, generalisation, seen)
      entries += found
      if found:
        sources["generalisation"] = dict(command=generalisation.get("command"), commit=generalisation.get("commit"))
    sweeps = _as_list(keras_cartpole)
    made = []
    for sweep in sweeps:
      found = from_keras_sweep(name, sweep)
      entries += found
      if found:
        made.append(dict(command=sweep.get("command"), commit=sweep.get("commit")))
    if made:
      sources["keras_cartpole"] = made[0] if len(made) == 1 else made
    reports = _as_list(figure4)
    if reports:
      found = from_figure4(name, *reports)
      entries += found
      if found:
        # What made the numbers: each report's title, and its commands and commits where the results folder
        # recorded them beside the panels (results/figure4_cpu/report.json); a list for several reports.
        made = [{k: r[k] for k in ("title", "commands") if r.get(k) is not None} for r in reports]
        sources["figure4_cpu"] = made[0] if len(made) == 1 else made
    cards[name] = make_card(name, entries, pretrained.agent_settings(name), sources,
                            pretrained.provenance(name).get("commit"))
  return cards


def define_flags(flag_values, argv=None):
  """The command line (``argv`` unused: no config file flag)."""
  del argv
  fv = dict(flag_values=flag_values)
  flags.DEFINE_list("names", [], "Shipped files to make cards for (default: every shipped file).", **fv)
  flags.DEFINE_string("generalisation", "results/generalisation/numbers.json", "launch/generalisation.py output "
                      "('' : none).", **fv)
  flags.DEFINE_list(
      "keras_cartpole", ["results/keras_cartpole/numbers.json"],
      "numbers.json files of examples/keras_cartpole_sweep.py, one per task (CartPole-v1 or its --env; "
      "'' : none).", **fv)
  flags.DEFINE_list(
      "figure4", [], "report.json files of launch/reproduce.py --experiment=figure4_cpu (none by "
      "default); per task the first that has a file, and the first that has Adam, are used.", **fv)
  flags.DEFINE_string("out", "", "Where to write the cards (default: optim4rl_tf/pretrained/cards.json).", **fv)


def main(argv, flag_values):
  """Reads the results, writes the cards (every other file's card kept as it was) and prints each summary."""
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from optim4rl_tf import pretrained  # pylint: disable=import-outside-toplevel
  f = flag_values
  names = list(f.names) or pretrained.available()
  unknown = [n for n in names if n not in pretrained.available()]
  if unknown:
    cli.fail(f"--names: {', '.join(unknown)} not shipped here; shipped: {', '.join(pretrained.available())}")
  try:
    inputs = {"generalisation": _load(f.generalisation, "generalisation") if f.generalisation else None}
    inputs["keras_cartpole"] = [_load(p, "keras_cartpole") for p in f.keras_cartpole if p] or None
    inputs["figure4"] = [_load(p, "figure4") for p in f.figure4] or None
    cards = build_cards(names, **inputs)
  except ValueError as e:
    cli.fail(str(e))
  out = f.out or pretrained.cards_path()
  old = {}
  if os.path.exists(out):
    old = _load(out, "out")
  old.update(cards)
  tmp = out + ".tmp"
  with open(tmp, "w", encoding="utf-8") as fh:
    json.dump(dict(sorted(old.items())), fh, indent=1, ensure_ascii=False)
    fh.write("\n")
  os.replace(tmp, out)
  for name, card in cards.items():
    print(f"{name}: {card['summary']}")
  print(f"wrote {out}")


def console():
  """``launch/make_cards.py``."""
  runtime.configure_process()
  cli.run_command(define_flags, main)
