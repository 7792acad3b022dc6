"""Trained learned optimizers that ship with the package, and the recipes that made them.

Each ``<name>.npz`` in this folder is a meta-parameter file (see ``optimizers/meta_params.py``) whose
``__meta__`` also carries its provenance: the recipe name, the exact meta-training config, the project
version and commit, the outer iterations and units, the seed, the final meta-loss and the command that made
it. ``launch/make_pretrained.py --name=NAME`` reruns a recipe and rewrites the file (same commit, same
arrays, same bytes). The shipped MetaPPO file (``inverted_pendulum``) was made before its meta-training became
bitwise reproducible (see the README), so a remake of it is another draw of the recipe, not the same bytes.

  >>> import optim4rl_tf as o
  >>> opt = o.Optim4RL.from_pretrained()          # RECOMMENDED ("inverted_pendulum"), at its card's lr
"""

import collections
import importlib.resources
import json
import os

# The shipped file that ``Optim4RL.from_pretrained()`` (no name) and ``model.compile(optimizer="optim4rl")``
# load: the one that generalises best (README, "How far they transfer": at >= 0.8x Adam's best on 12 of the 13
# unseen tasks of its card; catch on 10 of 12, the faithful grid6 on 2 of 6). Change it here when a better file
# ships.
RECOMMENDED = "inverted_pendulum"

# name -> (config module of optim4rl_tf.configs, its variant, field overrides, one-line description):
# MetaA2C recipes from configs/meta_a2c.py, MetaPPO recipes from configs/ppo.py. The overrides are the
# documented reductions that make a recipe fit a 2-core CPU (README, "Trained optimizers"), and the network
# of the files made before configs/meta_a2c.py defaulted to the official head-free one. A recipe may start
# from another shipped file: ``optimizer.init_meta_params="pretrained:NAME"`` (:func:`file_of`).
RECIPES = {
    "catch": ("meta_a2c", "catch", {
        "optimizer.mlp_dims": (),
        "num_units": 64,
        "num_iterations": 78
    }, "Optim4RL (head-free, as the official code) meta-trained on Catch: the main job's recipe"),
    "small_dense_long": ("meta_a2c", "small_dense_long", {
        "optimizer.mlp_dims": (16, 16),
        "num_units": 64,
        "num_iterations": 585
    }, "Optim4RL ([16,16] heads) meta-trained on small_dense_long, 64 units, 585 iterations"),
    "grid6": ("meta_a2c", "grid6", {
        "optimizer.mlp_dims": (),
        "num_units": 128,
        "num_iterations": 585
    }, "Optim4RL (head-free, as the official code) meta-trained on the six gridworlds of Table 3 by the official "
              "grid6 cell (reset interval 72, meta lr 1e-3, elementwise clip 1.0), 128 units per task instead of 512, "
              "585 iterations: the paper's general-purpose recipe"),
    "inverted_pendulum": ("ppo", "meta_inverted_pendulum", {
        "env.num_envs": 128,
        "env.episode_length": 1000,
        "num_units": 16,
        "batch_size": 8,
        "num_minibatches": 4,
        "update_epochs": 4,
        "inner_updates": 4,
        "reset_interval": 16,
        "meta_lr": 3e-4,
        "optimizer.init_meta_params": "pretrained:catch",
        "num_iterations": 400
    }, "Optim4RL (head-free) meta-trained with MetaPPO on Brax inverted_pendulum, starting from the shipped "
                          "catch file: 16 units of 8 envs, reset interval 16, meta lr 3e-4, 400 iterations"),
}

PREFIX = "pretrained:"


def names():
  """The names of the recipes (each ships a file once it has been made)."""
  return sorted(RECIPES)


def available():
  """The names whose file ships in this installation."""
  return [n for n in names() if os.path.exists(path(n))]


def path(name):
  """Filesystem path of the shipped file of ``name``; ValueError naming the valid names if unknown."""
  if name not in RECIPES:
    raise ValueError(f"unknown pretrained optimizer {name!r}; valid names: {', '.join(names())}")
  return str(importlib.resources.files(__name__).joinpath(f"{name}.npz"))


def provenance(name):
  """The ``__meta__`` dict of a shipped file (recipe, config, version, commit, iterations, ...)."""
  from optim4rl_tf.optimizers import meta_params  # pylint: disable=import-outside-toplevel
  file = path(name)
  if not os.path.exists(file):
    raise ValueError(f"pretrained optimizer {name!r} is not in this installation (made by "
                     f"launch/make_pretrained.py --name={name}); shipped: {', '.join(available()) or 'none'}")
  return meta_params.read_meta(file)


def file_of(spec):
  """The file a meta-parameter source names: ``"pretrained:NAME"`` -> :func:`path` of shipped file NAME
  (ValueError naming the shipped ones when NAME is not shipped here); anything else is returned as given."""
  spec = os.fspath(spec)
  if not spec.startswith(PREFIX):
    return spec
  name = spec[len(PREFIX):]
  if name not in available():
    raise ValueError(f"{spec!r}: no pretrained optimizer {name!r} is shipped here; shipped: "
                     f"{', '.join(available()) or 'none'}")
  return path(name)


def config(name):
  """The meta-training config (``ConfigDict``) of a recipe, overrides applied."""
  import importlib  # pylint: disable=import-outside-toplevel
  if name not in RECIPES:
    raise ValueError(f"unknown pretrained optimizer {name!r}; valid names: {', '.join(names())}")
  module, variant, overrides, _ = RECIPES[name]
  from optim4rl_tf.utils import config_checks  # pylint: disable=import-outside-toplevel
  configs = importlib.import_module(f"optim4rl_tf.configs.{module}")
  return config_checks.set_fields(configs.get_config(variant), overrides)


def describe(name):
  return RECIPES[name][3] if name in RECIPES else json.dumps(None)


def tasks_of(recorded):
  """The env names a meta-training config (a recorded plain dict or a ``ConfigDict``) trains on: each MetaA2C
  task's ``env_name``, or MetaPPO's ``env.name``; in order, without repeats."""
  if hasattr(recorded, "to_dict"):
    recorded = recorded.to_dict()
  if recorded.get("tasks"):
    return tuple(dict.fromkeys(t["env_name"] for t in recorded["tasks"]))
  env = recorded.get("env") or {}
  return (env["name"],) if "name" in env else ()


def recommended(optimizer="optim4rl"):
  """The name of the shipped file to use for learned optimizer ``optimizer`` ("optim4rl", "linear_optim",
  "l2lgd2", "star"): ``RECOMMENDED`` if it is a file of that optimizer, else the first shipped file of that
  optimizer (alphabetically), else None (none ships)."""
  shipped = available()
  ordered = ([RECOMMENDED] if RECOMMENDED in shipped else []) + [n for n in shipped if n != RECOMMENDED]
  for name in ordered:
    if provenance(name).get("optimizer") == optimizer:
      return name
  return None


def cards_path():
  """Filesystem path of ``cards.json``, the cards of the shipped files (made by launch/make_cards.py)."""
  return str(importlib.resources.files(__name__).joinpath("cards.json"))


def card(name):
  """The card of shipped file ``name`` (a dict: ``learning_rate`` it is recommended at, ``clipvalue``,
  ``summary``, ``unseen``: its measured results on tasks it never saw with the rates where it works,
  ``sources``), or None where no card was made for it. ValueError for an unknown name."""
  if name not in RECIPES:
    raise ValueError(f"unknown pretrained optimizer {name!r}; valid names: {', '.join(names())}")
  if not os.path.exists(cards_path()):
    return None
  with open(cards_path(), encoding="utf-8") as f:
    found = json.load(f).get(name)
  if found is None:
    return None
  file_commit = provenance(name).get("commit") if os.path.exists(path(name)) else None
  if found.get("file_commit") not in (None, file_commit):
    return None  # the card of an earlier file of this name
  return found


def recommended_settings(name):
  """The Keras optimizer arguments ``Optim4RL.from_pretrained(name)`` defaults to: ``learning_rate`` and
  ``clipvalue`` of the file's card (:func:`card`) where it has one, else those it was meta-trained with
  (:func:`agent_settings`)."""
  settings = agent_settings(name)
  found = card(name)
  if found is not None:
    settings.update({k: found[k] for k in ("learning_rate", "clipvalue") if k in found})
  return settings


def agent_settings(name):
  """The agent settings a shipped file was meta-trained with, as Keras optimizer arguments:
  ``{"learning_rate": float, "clipvalue": float or None}``, from its recorded meta-training config
  (``provenance(name)["config"]``).

  ``learning_rate`` is the tasks' agent learning rate (MetaA2C: ``config.tasks[i].learning_rate``; MetaPPO:
  ``config.learning_rate``); where the tasks differ (grid6: 1e-3 on two gridworlds, 3e-3 on four) it is the
  one shared by the most tasks, a tie going to the smaller. ``clipvalue`` is the elementwise clip of the agent
  gradient during meta-training (MetaA2C: ``config.agent_grad_clip``; MetaPPO: ``config.grad_clip``; Keras's
  ``clipvalue``), or None where it was off (<= 0). An entry the file does not record is left out."""
  config = provenance(name).get("config") or {}
  settings = {}
  rates = [float(t["learning_rate"]) for t in config.get("tasks") or () if isinstance(t, dict) and "learning_rate" in t]
  if not rates and "learning_rate" in config:
    rates = [float(config["learning_rate"])]
  if rates:
    counts = collections.Counter(rates)
    settings["learning_rate"] = min(counts, key=lambda lr: (-counts[lr], lr))
  clip_field = "agent_grad_clip" if "agent_grad_clip" in config else "grad_clip"
  if clip_field in config:
    clip = float(config[clip_field])
    settings["clipvalue"] = clip if clip > 0 else None
  return settings
