"""The InnerProblem protocol (optim4rl_tf/meta/problem.py): MetaA2C and MetaPPO implement it for every optimizer
core, the learner composes each with its estimator for a config, and refuses what does not implement it; the
meta/ package has no import cycles and the learner imports no concrete problem."""

import ast
import os
import types

import pytest

from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_ppo
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import registry
from optim4rl_tf.meta import trainer as trainer_lib

META = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "optim4rl_tf", "meta")


class _Task(types.SimpleNamespace):
  pass


def _task(name="catch", **kw):
  return _Task(name=name, num_units=2, inner_updates=1, **kw)


def test_the_meta_training_problems_implement_the_protocol():
  for cls in (meta_a2c.MetaA2C, meta_ppo.MetaPPO):
    p = cls(_task(meta_grad_through_env=True))
    assert isinstance(p, problem_lib.InnerProblem) and p.name == "catch" and p.task.name == "catch"
  assert problem_lib.as_problems(meta_a2c.MetaA2C(_task(n)) for n in "ab")[1].task.name == "b"


def test_the_learner_picks_the_estimator():
  """Replay for stop-gradient optimizers on data that do not depend on phi; a full unroll for STAR and for
  data that do (MetaPPO through the environment)."""
  from optim4rl_tf.optimizers import meta_params
  core, _ = meta_params.resolve("optim4rl", None, mlp_dims=(), hidden_size=2, seed=0)
  star, _ = meta_params.resolve("star", None, seed=0)
  p = meta_ppo.MetaPPO(_task("ant"))
  assert isinstance(trainer_lib.estimator_for(p, core, through_data=False), estimators.ReplayedVJP)
  assert isinstance(trainer_lib.estimator_for(p, core, through_data=True), estimators.FullUnroll)
  assert isinstance(trainer_lib.estimator_for(p, star), estimators.FullUnroll)
  with pytest.raises(ValueError, match="use FullUnroll"):
    estimators.ReplayedVJP(p).optimizer(star)


def test_what_is_not_a_problem_is_refused_in_one_line():
  with pytest.raises(TypeError, match="not an InnerProblem.*inner_step, meta_loss"):
    estimators.ReplayedVJP(types.SimpleNamespace(name="x", init_units=1))
  with pytest.raises(ValueError, match="at least one inner problem"):
    problem_lib.as_problems([])
  p = meta_a2c.MetaA2C(_task("same"))
  with pytest.raises(ValueError, match="distinct names.*'same' appears more than once"):
    problem_lib.as_problems([p, meta_a2c.MetaA2C(_task("same"))])
  with pytest.raises(ValueError, match="core and initial phi"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(num_iterations=1), estimators=[estimators.ReplayedVJP(p)])
  with pytest.raises(ValueError, match="num_iterations"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(), estimators=[estimators.ReplayedVJP(p)], core=object(), phi={})
  with pytest.raises(TypeError, match="not an estimator"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(num_iterations=1), estimators=[p], core=object(), phi={})


def test_meta_agent_tells_the_configs_apart():
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
  from optim4rl_tf.configs import ppo as ppo_configs
  assert registry.meta_agent(meta_a2c_configs.get_config("grid6")) == "meta_a2c"
  assert registry.meta_agent(ppo_configs.get_config("meta_ant")) == "meta_ppo"
  for config in (a2c_configs.get_config("catch"), ppo_configs.get_config("ant_cpu")):
    with pytest.raises(ValueError, match="not a meta-training config.*launch/train.py"):
      registry.meta_agent(config)
  with pytest.raises(TypeError, match="registry.Registration"):
    registry.register("x", object())


def test_agent_params_is_the_params_field_when_there_is_one():
  assert problem_lib.agent_params(types.SimpleNamespace(params=[1], other=2)) == [1]
  assert problem_lib.agent_params((1, 2)) == (1, 2)


def _meta_imports(module):
  """The optim4rl_tf.meta modules ``module`` imports at module level (not inside functions)."""
  with open(os.path.join(META, f"{module}.py")) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and node.module == "optim4rl_tf.meta":
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optim4rl_tf.meta."):
      out.add(node.module.split(".")[2])
  return out


def test_meta_imports_have_no_cycles_and_layers_point_down():
  modules = sorted(f[:-3] for f in os.listdir(META) if f.endswith(".py") and f != "__init__.py")
  graph = {m: _meta_imports(m) & set(modules) for m in modules}

  def visit(m, path):
    assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
    for n in graph[m]:
      visit(n, path + [m])

  for m in modules:
    visit(m, [])
  concrete = {"meta_a2c", "meta_ppo", "meta_ppo_task"}
  for m in ("trainer", "run", "estimators", "problem", "pipeline", "registry"):
    assert not graph[m] & concrete, (m, graph[m])
  for m in concrete:
    assert "estimators" not in graph[m] and "trainer" not in graph[m], (m, graph[m])
