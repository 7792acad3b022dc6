"""Name -> environment registry: ``make(name, num_envs, reward_scale=1.0)``."""

from __future__ import annotations

from optim4rl_tf.envs.catch import Catch
from optim4rl_tf.envs.gridworld import GRID_SPECS, GridWorld

GRID_NAMES = tuple(GRID_SPECS)
ENV_NAMES = GRID_NAMES + ("catch",)

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


def make(name: str, num_envs: int, reward_scale: float = 1.0):
    """A batched in-graph environment (``GridWorld`` or ``Catch``) with ``num_envs`` copies.

    Interface: ``env.reset(seed) -> state``, ``env.observe(state) -> obs``,
    ``env.step(state, action, seed) -> (state, obs, reward, done)`` (auto-reset; reward scaled by
    ``reward_scale``; done float32), plus ``name``, ``num_envs``, ``num_actions``, ``obs_shape``, ``horizon``.
    """
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key == "catch":
        return Catch(num_envs, reward_scale)
    if key in GRID_SPECS:
        return GridWorld(GRID_SPECS[key], num_envs, reward_scale)
    raise ValueError(
        f"Unknown environment {name!r}. Valid names: {', '.join(ENV_NAMES)} "
        f"(aliases: {', '.join(sorted(ALIASES))})."
    )
