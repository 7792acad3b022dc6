"""Name -> environment registry: ``make(name, num_envs, reward_scale=1.0)``.

Gridworlds and Catch are native TF environments. Brax tasks (``BRAX_ENV_NAMES``: ant, humanoid,
inverted_double_pendulum, walker2d and the cheap inverted_pendulum; also accepted with a ``brax:`` prefix)
come from :mod:`optim4rl_tf.envs.brax_bridge`, imported only when such a name is asked for, so gridworld
users never import JAX.
"""

from __future__ import annotations

from optim4rl_tf.envs.catch import Catch
from optim4rl_tf.envs.gridworld import GRID_SPECS, GridWorld

GRID_NAMES = tuple(GRID_SPECS)
ENV_NAMES = GRID_NAMES + ("catch",)
# Continuous-control tasks behind the Brax bridge (kept in step with brax_bridge.BRAX_TASKS).
BRAX_ENV_NAMES = ("ant", "humanoid", "inverted_double_pendulum", "walker2d", "inverted_pendulum")

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

    Interface: ``env.reset(seed) -> state``, ``env.observe(state) -> obs``,
    ``env.step(state, action, seed) -> (state, obs, reward, done)`` (auto-reset; reward scaled by
    ``reward_scale``; done float32), plus ``name``, ``num_envs``, ``num_actions``, ``obs_shape``, ``horizon``.
    """
  key = ALIASES.get(name, name) if isinstance(name, str) else name
  if isinstance(key, str) and (key in BRAX_ENV_NAMES or key.startswith("brax:")):
    from optim4rl_tf.envs import brax_bridge  # JAX imported lazily

    return brax_bridge.make(key, num_envs, reward_scale=reward_scale, **brax_kwargs)
  if brax_kwargs:
    raise ValueError(f"{sorted(brax_kwargs)} apply only to Brax environments, not {name!r}")
  if key == "catch":
    return Catch(num_envs, reward_scale)
  if key in GRID_SPECS:
    return GridWorld(GRID_SPECS[key], num_envs, reward_scale)
  raise ValueError(f"Unknown environment {name!r}. Valid names: {', '.join(ENV_NAMES)} "
                   f"(aliases: {', '.join(sorted(ALIASES))}); Brax: {', '.join(BRAX_ENV_NAMES)}.")
