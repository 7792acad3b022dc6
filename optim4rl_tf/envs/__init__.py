"""Native TensorFlow gridworlds and Catch (batched, in-graph) and their gymnasium faces.

Importing this package registers the gymnasium ids ``optim4rl_tf/<name>-v0`` (``gym_env.ENV_IDS``; idempotent),
so ``gymnasium.make("optim4rl_tf/catch-v0")`` and ``gymnasium.make_vec(..., num_envs=n)`` work after it.
"""

from optim4rl_tf.envs.catch import Catch, CatchState
from optim4rl_tf.envs.gridworld import GRID_SPECS, GridSpec, GridState, GridWorld
from optim4rl_tf.envs.gym_env import ENV_IDS, TFEnv, register_envs
from optim4rl_tf.envs.gym_vector import TFVectorEnv, gym_vector_env
from optim4rl_tf.envs.registry import ENV_NAMES, make

register_envs()

__all__ = [
    "ENV_IDS",
    "ENV_NAMES",
    "Catch",
    "CatchState",
    "GRID_SPECS",
    "GridSpec",
    "GridState",
    "GridWorld",
    "TFEnv",
    "TFVectorEnv",
    "gym_vector_env",
    "make",
    "register_envs",
]
