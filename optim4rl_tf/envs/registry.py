"""The task names, the one list of them, and ``make(name, num_envs, reward_scale=1.0)``.

Gridworlds and Catch are native TF environments. Brax tasks (``BRAX_ENV_NAMES``: ant, humanoid,
inverted_double_pendulum, walker2d and the cheap inverted_pendulum; also accepted with a ``brax:`` prefix)
come from :mod:`optim4rl_tf.envs.brax_bridge`, imported only when such a name is asked for, so gridworld
users never import JAX.

Every name list of the package is here (configs, being data one layer below, check theirs against these in
tests): ``GRID_NAMES`` (the 8 gridworlds), ``ENV_NAMES`` (+ catch), ``BRAX_ENV_NAMES``, the paper's short
names ``ALIASES`` and the paper's named subsets ``GRID6_NAMES`` (§5.6 six-gridworld meta-training set) and
``BRAX_PAPER_NAMES`` (the four Brax tasks of Figures 3-4).
"""

from __future__ import annotations

from optim4rl_tf.envs.catch import Catch
from optim4rl_tf.envs.gridworld import GRID_SPECS, GridWorld

GRID_NAMES = tuple(GRID_SPECS)
ENV_NAMES = GRID_NAMES + ("catch",)
# Continuous-control tasks behind the Brax bridge (the keys of its size table ``brax_bridge.BRAX_TASKS``,
# not imported: gridworld users never import the bridge).
BRAX_ENV_NAMES = ("ant", "humanoid", "inverted_double_pendulum", "walker2d", "inverted_pendulum")
# The paper's six-gridworld meta-training set (docs/fidelity.md §5.6), in its config order.
GRID6_NAMES = ("small_dense_long", "small_dense_short", "big_sparse_short", "big_dense_short", "big_sparse_long",
               "big_dense_long")
# The paper's Brax tasks (inverted_pendulum is this port's cheap extra).
BRAX_PAPER_NAMES = ("ant", "humanoid", "inverted_double_pendulum", "walker2d")

# Short names used in the paper / official configs (sds, sdl, bss, ...).
ALIASES = {
    "sss": "small_sparse_short",
    "ssl": "small_sparse_long",
    "sds": "small_dense_short",
    "sdl": "small_dense_long",
    "bss": "big_sparse_short",
    "bsl": "big_sparse_long",
    "bds": "big_dense_short",
    "bdl": "big_dense_long",
}


def make(name: str, num_envs: int, reward_scale: float = 1.0, **brax_kwargs):
  """A batched in-graph environment (``GridWorld`` or ``Catch``) with ``num_envs`` copies.

    For a Brax name (``BRAX_ENV_NAMES``, or ``"brax:<name>"``) returns a ``brax_bridge.BraxEnv`` instead;
    ``brax_kwargs`` (episode_length, action_repeat, backend, bridge) go to it.

    A native env satisfies ``envs.base.DiscreteEnv`` (the protocol, with shapes): ``env.reset(seed) -> state``,
    ``env.observe(state) -> obs``, ``env.step(state, action, seed) -> (state, obs, reward, done)`` (auto-reset;
    reward scaled by ``reward_scale``; done float32), plus ``name``, ``num_envs``, ``num_actions``,
    ``obs_shape``, ``horizon``. A ``BraxEnv``'s ``graph_env()`` satisfies ``envs.base.ContinuousEnv``.
    """
  key = ALIASES.get(name, name) if isinstance(name, str) else name
  if isinstance(key, str) and (key in BRAX_ENV_NAMES or key.startswith("brax:")):
    # JAX imported lazily. (Imported from the module itself, not ``from optim4rl_tf.envs import ...``, so
    # this module does not depend on the package ``__init__`` that imports it: no import cycle.)
    from optim4rl_tf.envs.brax_bridge import make as brax_make

    return brax_make(key, num_envs, reward_scale=reward_scale, **brax_kwargs)
  if brax_kwargs:
    raise ValueError(f"{sorted(brax_kwargs)} apply only to Brax environments, not {name!r}")
  if key == "catch":
    return Catch(num_envs, reward_scale)
  if key in GRID_SPECS:
    return GridWorld(GRID_SPECS[key], num_envs, reward_scale)
  raise ValueError(f"Unknown environment {name!r}. Valid names: {', '.join(ENV_NAMES)} "
                   f"(aliases: {', '.join(sorted(ALIASES))}); Brax: {', '.join(BRAX_ENV_NAMES)}.")


def native_name(name: str) -> str:
  """The canonical name (in ``ENV_NAMES``) of a native TF environment, aliases resolved; ValueError otherwise.

    The gymnasium faces (``gym_env.TFEnv``, ``gym_vector.TFVectorEnv``) accept only these; Brax tasks have
    their own bridge.
    """
  key = ALIASES.get(name, name) if isinstance(name, str) else name
  if key in ENV_NAMES:
    return key
  if isinstance(key, str) and (key in BRAX_ENV_NAMES or key.startswith("brax:")):
    raise ValueError(f"{name!r} is a Brax task: the gymnasium environments cover only the native TF ones "
                     f"({', '.join(ENV_NAMES)}); use optim4rl_tf.envs.make({name!r}, num_envs) for Brax.")
  raise ValueError(f"Unknown environment {name!r}. Valid names: {', '.join(ENV_NAMES)} "
                   f"(aliases: {', '.join(sorted(ALIASES))}).")


def check_reward_scale(reward_scale) -> float:
  """``reward_scale`` as a finite float (the factor every reward is multiplied by), or a ValueError."""
  try:
    value = float(reward_scale)
  except (TypeError, ValueError):
    value = None
  if isinstance(reward_scale, bool) or value is None or value != value or value in (float("inf"), float("-inf")):
    raise ValueError(f"reward_scale must be a finite number, got {reward_scale!r}")
  return value
