"""Meta-training learned optimizers: the public API (loaded on first use).

  from optim4rl_tf import meta
  class MyProblem: ...                                   # a meta.InnerProblem (init_units, inner_step, meta_loss)
  trainer = meta.MetaTrainer(meta.trainer_config(num_iterations=30, pipeline=True, reset_interval=8), workdir,
                             estimators=[meta.ReplayedVJP(MyProblem(...))], core=core, phi=phi0)
  phi = trainer.train()
  meta.register("my_agent", meta.Registration(...))     # configs with agent="my_agent" for meta.meta_train

Layers: the learner (``trainer.MetaTrainer``) -> estimators (``estimators.ReplayedVJP``, ``FullUnroll``) ->
inner problems (``problem.InnerProblem``: ``meta_a2c.MetaA2C``, ``meta_ppo.MetaPPO``) -> agents, envs and
optimizer cores. Pipeline resets: ``pipeline``; which problem a config means: ``registry``.
"""

import importlib

_EXPORTS = {
    "InnerProblem": "problem",
    "InnerStep": "problem",
    "MetaLoss": "problem",
    "UnitOptimizer": "problem",
    "flatten_units": "problem",
    "unflatten_units": "problem",
    "Estimator": "estimators",
    "ReplayedVJP": "estimators",
    "FullUnroll": "estimators",
    "MetaTrainer": "trainer",
    "trainer_config": "trainer",
    "Registration": "registry",
    "register": "registry",
    "meta_train": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"optim4rl_tf.meta.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'optim4rl_tf.meta' has no attribute {name!r}")
