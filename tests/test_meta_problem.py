"""The InnerProblem protocol (optim4rl_tf/meta/problem.py): MetaA2C and MetaA2Cstar implement it, algorithm
modules of functions (MetaPPO's) are adapted, and the trainer refuses what does not implement it."""

import types

import pytest

from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_a2c_star
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import trainer as trainer_lib


class _Task(types.SimpleNamespace):
  pass


def test_meta_a2c_classes_implement_the_protocol():
  for cls in (meta_a2c.MetaA2C, meta_a2c_star.MetaA2Cstar):
    p = cls(_Task(name="catch"))
    assert isinstance(p, problem_lib.InnerProblem) and p.name == "catch"
  assert problem_lib.as_problems(meta_a2c.MetaA2C, [_Task(name="a"), _Task(name="b")])[1].task.name == "b"


def test_an_algorithm_module_is_adapted_with_the_task_bound():
  calls = []
  module = types.ModuleType("fake_algorithm")
  module.fresh_units = lambda task, core, key: calls.append(("fresh", task.name, core, key)) or "units"
  module.reset_units = lambda task, core, units, t, key: calls.append(("reset", task.name, units, t)) or units
  module.outer_iteration = lambda task, core, phi, units, t, key: (units, phi, {"meta_loss": 0.0})
  [p] = problem_lib.as_problems(module, [_Task(name="ant")])
  assert isinstance(p, problem_lib.ModuleProblem) and isinstance(p, problem_lib.InnerProblem)
  assert p.name == "ant" and p.task.name == "ant"
  assert p.fresh_units("core", "key") == "units"
  assert p.reset_units("core", "u", 3, "key") == "u"
  assert p.outer_iteration("core", {"w": 1}, "u", 1, "key") == ("u", {"w": 1}, {"meta_loss": 0.0})
  assert calls == [("fresh", "ant", "core", "key"), ("reset", "ant", "u", 3)]


def test_what_is_not_a_problem_is_refused_in_one_line():
  with pytest.raises(TypeError, match="not an InnerProblem.*outer_iteration"):
    problem_lib.as_problems(None, [types.SimpleNamespace(name="x", fresh_units=1, reset_units=1)])
  p = meta_a2c.MetaA2C(_Task(name="same"))
  with pytest.raises(ValueError, match="distinct names"):
    problem_lib.as_problems(None, [p, meta_a2c.MetaA2C(_Task(name="same"))])
  with pytest.raises(ValueError, match="core and initial phi"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(num_iterations=1), problems=[p])
  with pytest.raises(ValueError, match="num_iterations"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(), problems=[p], core=object(), phi={})


def test_agent_params_is_the_params_field_when_there_is_one():
  assert problem_lib.agent_params(types.SimpleNamespace(params=[1], other=2)) == [1]
  assert problem_lib.agent_params((1, 2)) == (1, 2)
