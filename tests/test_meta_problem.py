"""The InnerProblem protocol (optim4rl_tf/meta/problem.py): MetaA2C, MetaA2Cstar, MetaPPO and MetaPPOstar
implement it, the trainer builds the right one for a config, and refuses what does not implement it."""

import types

import pytest

from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import meta_a2c_star
from optim4rl_tf.meta import meta_ppo
from optim4rl_tf.meta import meta_ppo_star
from optim4rl_tf.meta import problem as problem_lib
from optim4rl_tf.meta import trainer as trainer_lib


class _Task(types.SimpleNamespace):
  pass


def test_the_meta_training_classes_implement_the_protocol():
  for cls in (meta_a2c.MetaA2C, meta_a2c_star.MetaA2Cstar, meta_ppo.MetaPPO, meta_ppo_star.MetaPPOstar):
    p = cls(_Task(name="catch", meta_grad_through_env=True))
    assert isinstance(p, problem_lib.InnerProblem) and p.name == "catch" and p.task.name == "catch"
  assert problem_lib.as_problems(meta_a2c.MetaA2C(_Task(name=n)) for n in "ab")[1].task.name == "b"


def test_meta_ppo_names_its_estimator():
  """Through the environment is a full unroll; rollout data held constant is the replayed VJP."""
  assert meta_ppo.MetaPPO(_Task(name="ant", meta_grad_through_env=True)).estimator == "full_unroll"
  assert meta_ppo.MetaPPO(_Task(name="ant", meta_grad_through_env=False)).estimator == "replayed_vjp"
  assert meta_ppo_star.MetaPPOstar(_Task(name="ant")).estimator == "full_unroll"


def test_what_is_not_a_problem_is_refused_in_one_line():
  with pytest.raises(TypeError, match="not an InnerProblem.*outer_iteration"):
    problem_lib.as_problems([types.SimpleNamespace(name="x", fresh_units=1, reset_units=1)])
  with pytest.raises(ValueError, match="at least one inner problem"):
    problem_lib.as_problems([])
  p = meta_a2c.MetaA2C(_Task(name="same"))
  with pytest.raises(ValueError, match="distinct names.*'same' appears more than once"):
    problem_lib.as_problems([p, meta_a2c.MetaA2C(_Task(name="same"))])
  with pytest.raises(ValueError, match="core and initial phi"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(num_iterations=1), problems=[p])
  with pytest.raises(ValueError, match="num_iterations"):
    trainer_lib.MetaTrainer(trainer_lib.trainer_config(), problems=[p], core=object(), phi={})


def test_meta_agent_tells_the_configs_apart():
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
  from optim4rl_tf.configs import ppo as ppo_configs
  assert trainer_lib.meta_agent(meta_a2c_configs.get_config("grid6")) == "meta_a2c"
  assert trainer_lib.meta_agent(ppo_configs.get_config("meta_ant")) == "meta_ppo"
  for config in (a2c_configs.get_config("catch"), ppo_configs.get_config("ant_cpu")):
    with pytest.raises(ValueError, match="not a meta-training config.*launch/train.py"):
      trainer_lib.meta_agent(config)


def test_agent_params_is_the_params_field_when_there_is_one():
  assert problem_lib.agent_params(types.SimpleNamespace(params=[1], other=2)) == [1]
  assert problem_lib.agent_params((1, 2)) == (1, 2)
