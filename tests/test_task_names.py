"""One list of task names: ``envs.registry`` holds them; the configs (data, one layer below ``envs``, so they
cannot import it) and the reports name exactly those tasks."""

from optim4rl_tf.configs import a2c as a2c_configs
from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
from optim4rl_tf.configs import ppo as ppo_configs
from optim4rl_tf.envs import registry
from optim4rl_tf.eval import generalisation
from optim4rl_tf.eval import report


def test_the_configs_name_the_registry_tasks():
  assert a2c_configs.GRIDS == registry.GRID_NAMES
  assert set(a2c_configs.TASKS) == set(registry.ENV_NAMES)
  assert tuple(name for name, _, _ in meta_a2c_configs.GRID6) == registry.GRID6_NAMES
  assert ppo_configs.FULL == registry.BRAX_PAPER_NAMES
  assert set(ppo_configs.FULL) | {"inverted_pendulum"} == set(registry.BRAX_ENV_NAMES)


def test_named_subsets_are_subsets_and_aliases_resolve():
  assert set(registry.GRID6_NAMES) < set(registry.GRID_NAMES)
  assert set(registry.BRAX_PAPER_NAMES) < set(registry.BRAX_ENV_NAMES)
  assert set(registry.ALIASES.values()) == set(registry.GRID_NAMES)
  assert report.canonical_task("SSL") == "small_sparse_long"
  assert report.canonical_task("sdl") == "small_dense_long"
  assert report.canonical_task("ant") == "ant"
  # generalisation.py: grid6's tasks, the gridworlds it never saw, Catch; each once.
  assert generalisation.TASKS[:6] == registry.GRID6_NAMES
  assert sorted(generalisation.TASKS) == sorted(registry.ENV_NAMES)
