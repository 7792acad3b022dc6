"""Native TensorFlow gridworlds and Catch (batched, in-graph) and their gymnasium vector-env face."""

from optim4rl_tf.envs.catch import Catch, CatchState
from optim4rl_tf.envs.gridworld import GRID_SPECS, GridSpec, GridState, GridWorld
from optim4rl_tf.envs.registry import ENV_NAMES, make


def gym_vector_env(name: str, num_envs: int, seed=None):
  """A ``gymnasium.vector.VectorEnv`` running ``num_envs`` copies of ``name`` (numpy in and out)."""
  from optim4rl_tf.envs.gym_vector import gym_vector_env as _make  # gymnasium imported lazily

  return _make(name, num_envs, seed)


__all__ = [
    "ENV_NAMES",
    "Catch",
    "CatchState",
    "GRID_SPECS",
    "GridSpec",
    "GridState",
    "GridWorld",
    "gym_vector_env",
    "make",
]
