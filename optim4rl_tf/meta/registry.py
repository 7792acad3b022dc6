"""Which inner problem a meta-training config means: the registry (the learner names no problem).

A config's ``agent`` field (``"meta_a2c"`` when absent: configs/meta_a2c.py; ``"meta_ppo"``: configs/ppo.py
``meta_*``) names a :class:`Registration`: how to check the config, build its inner problems, count its env
steps per outer iteration and show it on the console. The built-in ones are imported only when a config asks
for them (MetaPPO's Brax stack stays unimported for MetaA2C runs). Add your own with :func:`register`::

  registry.register("meta_sine", registry.Registration(
      validate=lambda config: int(config.num_iterations),
      num_iterations=lambda config: int(config.num_iterations),
      build=lambda config: [SineRegression(...)],
      env_steps_per_iteration=lambda config, problems: 0))

``trainer.MetaTrainer(config, workdir)`` then builds the problems of ``config.agent == "meta_sine"``, and
``run.meta_train`` runs it with logs and checkpoints.
"""

import importlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple


class Registration(NamedTuple):
  """What the learner and ``meta.run`` need to know of a kind of meta-training config.

  validate(config) -> number of outer iterations (one clear ValueError per bad field, before anything is
  built); num_iterations(config) -> the number of outer iterations of a valid config; build(config) -> list of ``problem.InnerProblem``; env_steps_per_iteration(config, problems) ->
  env steps of one outer iteration, all problems (the console's rate); console: {label: metric} shown per
  problem (``"<name> <label>"``) besides the summed meta-loss; prefix(config, problems) -> the console prefix;
  building_message(config) -> a line printed before building (None: none); through_data(config) -> True
  when rollout data depend on phi and the meta-gradient must run through them (``estimators.FullUnroll``
  even for optimizers the replay fits); resolve_config(config, recorded) -> the config as recorded in
  config.json (``recorded``: its plain dict; default unchanged)."""
  validate: Callable[[Any], int]
  num_iterations: Callable[[Any], int]
  build: Callable[[Any], list]
  env_steps_per_iteration: Callable[[Any, list], int]
  console: Dict[str, str] = {}
  prefix: Callable[[Any, list], str] = lambda config, problems: "meta "
  building_message: Callable[[Any], Optional[str]] = lambda config: None
  through_data: Callable[[Any], bool] = lambda config: False
  resolve_config: Callable[[Any, dict], dict] = lambda config, recorded: recorded


# Built-in agents: the module whose ``REGISTRATION`` describes them, imported on first use.
_BUILTIN = {"meta_a2c": "optim4rl_tf.meta.meta_a2c", "meta_ppo": "optim4rl_tf.meta.meta_ppo"}
_REGISTERED: Dict[str, Registration] = {}


def register(agent, registration):
  """Registers (or replaces) the :class:`Registration` of configs whose ``agent`` is ``agent``."""
  if not isinstance(registration, Registration):
    raise TypeError(f"register({agent!r}, ...) needs a registry.Registration, got {type(registration).__name__}")
  _REGISTERED[agent] = registration
  return registration


def agents() -> Tuple[str, ...]:
  """The known meta-training agents (built-in first)."""
  return tuple(_BUILTIN) + tuple(a for a in _REGISTERED if a not in _BUILTIN)


def meta_agent(config):
  """The meta-training agent of a config: its ``agent`` field, "meta_a2c" when it has none
  (configs/meta_a2c.py). Raises ValueError for a config of another trainer."""
  agent = config.get("agent", "meta_a2c")
  if agent not in agents():
    raise ValueError(f"config.agent {agent!r} is not a meta-training config (valid: {', '.join(agents())}: "
                     "configs/meta_a2c.py, configs/ppo.py:meta_*); train it with launch/train.py")
  return agent


def lookup(config) -> Registration:
  """The :class:`Registration` of a meta-training config (ValueError for other configs)."""
  agent = meta_agent(config)
  if agent not in _REGISTERED:
    _REGISTERED[agent] = importlib.import_module(_BUILTIN[agent]).REGISTRATION
  return _REGISTERED[agent]
