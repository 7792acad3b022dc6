"""examples/keras_cartpole.py: the A2C CartPole example trains a Keras model with Adam and with a shipped
learned optimizer, finishes with finite returns, and is deterministic under a seed."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from examples import keras_cartpole  # noqa: E402  pylint: disable=wrong-import-position
from examples import keras_cartpole_sweep  # noqa: E402  pylint: disable=wrong-import-position
from optim4rl_tf import pretrained  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(autouse=True)
def _restore_op_determinism():
  """The example turns on TF's op determinism for its whole process (a script's choice); the suite's
  other tests share this process, and Keras refuses jit_compile while it is on, so it is turned off
  again after each test here."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=import-outside-toplevel
  was_on = tf_config.is_op_determinism_enabled()
  yield
  if not was_on:
    tf_config.disable_op_determinism()


TINY = ["--steps=384", "--envs=4", "--rollout=16", "--hidden=16", "--log_every=0", "--seed=3"]


@pytest.mark.slow(30)
@pytest.mark.parametrize("optimizer", ["adam", "optim4rl:catch"])
def test_the_example_runs_and_is_deterministic(optimizer):
  first = keras_cartpole.main([f"--optimizer={optimizer}", "--lr=3e-3", *TINY])
  second = keras_cartpole.main([f"--optimizer={optimizer}", "--lr=3e-3", *TINY])
  assert first["steps"] == 384
  assert len(first["episode_returns"]) > 0
  assert np.all(np.isfinite(first["episode_returns"])) and np.isfinite(first["final_return"])
  assert first["episode_returns"] == second["episode_returns"]
  assert first["episode_steps"] == second["episode_steps"]


def test_an_unknown_optimizer_is_refused():
  with pytest.raises(ValueError, match="adam, optim4rl:NAME"):
    keras_cartpole.make_optimizer("sgd", 1e-3, None)


def test_a_missing_meta_parameter_file_is_refused_by_name(tmp_path):
  missing = str(tmp_path / "phi.npz")
  with pytest.raises(ValueError, match=f"no meta-parameter file '{missing}'"):
    keras_cartpole.make_optimizer(f"optim4rl:{missing}", 1e-3, None)


@pytest.mark.slow(15)
def test_a_meta_parameter_file_trains_as_the_shipped_name_of_the_same_file_does():
  """``optim4rl:PATH.npz`` loads that file's phi: the shipped catch file given by its path trains the agent
  exactly as ``optim4rl:catch`` does (same lr and clip given explicitly)."""
  by_name = keras_cartpole.main(["--optimizer=optim4rl:catch", "--lr=3e-3", "--clipvalue=none", *TINY])
  by_path = keras_cartpole.main(
      [f"--optimizer=optim4rl:{pretrained.path('catch')}", "--lr=3e-3", "--clipvalue=none", *TINY])
  assert by_path["episode_returns"] == by_name["episode_returns"]
  assert by_path["episode_steps"] == by_name["episode_steps"]
  other_lr = keras_cartpole.main(["--optimizer=optim4rl:catch", "--lr=3e-4", "--clipvalue=none", *TINY])
  assert other_lr["episode_returns"] != by_name["episode_returns"]  # the runs depend on the optimizer's settings


def test_a_sweep_cell_of_a_meta_parameter_file_stays_in_the_sweeps_folder(tmp_path):
  path = keras_cartpole_sweep.cell_file(str(tmp_path), "optim4rl:results/x/phi.npz", 1e-3, 2)
  assert os.path.dirname(path) == str(tmp_path)
  assert os.path.basename(path) == "optim4rl-results-x-phi.npz_lr0.001_seed2.json"


@pytest.mark.slow(10)
def test_another_gymnasium_task_trains_with_its_own_sizes():
  """--env=Acrobot-v1: the networks take its 6 observations and give 3 logits; with no goal reached in 512 steps
  per env every episode is cut by the 500-step limit at -500 (reward -1 per step)."""
  result = keras_cartpole.main([
      "--env=Acrobot-v1", "--optimizer=adam", "--lr=1e-3", "--steps=1024", "--envs=2", "--rollout=16", "--hidden=16",
      "--log_every=0", "--seed=0"
  ])
  assert result["env"] == "Acrobot-v1" and keras_cartpole.env_sizes("Acrobot-v1") == (6, 3)
  assert result["episode_steps"] == [1000, 1000] and result["episode_returns"] == [-500.0, -500.0]


@pytest.mark.parametrize("env, message", [("Pendulum-v1", "needs discrete actions"),
                                          ("NoSuchTask-v0", "not a gymnasium task")])
def test_a_task_the_agent_cannot_act_in_is_refused_by_name(env, message):
  with pytest.raises(ValueError, match=f"--env={env}: .*{message}"):
    keras_cartpole.main([f"--env={env}", "--steps=128", "--log_every=0"])


def test_ratios_on_a_task_with_negative_returns_count_from_the_floor(tmp_path):
  """On Acrobot (floor -500, a policy that never swings up) the ratio to Adam is of the return above the floor:
  -180 against Adam's -100 is (500 - 180) / (500 - 100) = 0.8; a cell of another task in --out is refused."""
  out, results = tmp_path / "cells", tmp_path / "report"
  out.mkdir()
  for optimizer, values in (("adam", [-90.0, -110.0]), ("optim4rl:catch", [-170.0, -190.0])):
    for seed, final in enumerate(values):
      _fake_cell(out, optimizer, 1e-3, seed, final, env="Acrobot-v1")
  argv = [
      f"--out={out}", f"--results={results}", "--env=Acrobot-v1", "--optimizers=adam,optim4rl:catch", "--lrs=1e-3",
      "--seeds=0,1", "--steps=8000", "--report_only"
  ]
  numbers = keras_cartpole_sweep.main(argv)
  assert numbers["best"]["optim4rl:catch"]["ratio_to_adam_best"] == pytest.approx(320.0 / 400.0)
  assert numbers["floor_return"] == -500.0 and "reach 0.8x: optim4rl:catch" in numbers["status"]
  assert "--env=Acrobot-v1 " in numbers["command"] and "--floor_return" not in numbers["command"]
  _fake_cell(out, "adam", 1e-3, 2, 400.0)  # a CartPole run
  with pytest.raises(SystemExit, match="run on CartPole-v1, not --env=Acrobot-v1"):
    keras_cartpole_sweep.main(argv[:-3] + ["--seeds=0,1,2", "--steps=8000", "--report_only"])
  with pytest.raises(SystemExit):  # argparse: no floor known for this task
    keras_cartpole_sweep.parse_args(["--env=LunarLander-v3"])


def _fake_cell(out, optimizer, lr, seed, final, env=None):
  """One finished cell of examples/keras_cartpole_sweep.py, as keras_cartpole.main writes it (``env`` None: a
  cell written before --env existed, read as CartPole-v1)."""
  with open(keras_cartpole_sweep.cell_file(str(out), optimizer, lr, seed), "w", encoding="utf-8") as f:
    json.dump(
        {
            **({} if env is None else {
                   "env": env
               }), "optimizer": optimizer,
            "lr": lr,
            "seed": seed,
            "steps": 8000,
            "final_return": final,
            "episode_steps": [2000, 6000],
            "episode_returns": [final / 2, final],
            "wall_secs": 1.0
        }, f)


def test_the_sweep_report_ranks_lrs_and_records_the_command_that_wrote_it(tmp_path):
  """--report_only over finished cells: each optimizer's best lr is the one with the highest mean final
  return, its ratio is to Adam's best, and numbers.json's command names the --out and --results given."""
  out, results = tmp_path / "cells", tmp_path / "report"
  out.mkdir()
  finals = {
      ("adam", 1e-3): [100.0, 200.0],
      ("adam", 3e-3): [400.0, 400.0],
      ("optim4rl:catch", 1e-3): [300.0, 340.0],
      ("optim4rl:catch", 3e-3): [10.0, 20.0]
  }
  for (optimizer, lr), values in finals.items():
    for seed, final in enumerate(values):
      _fake_cell(out, optimizer, lr, seed, final)
  numbers = keras_cartpole_sweep.main([
      f"--out={out}", f"--results={results}", "--optimizers=adam,optim4rl:catch", "--lrs=1e-3,3e-3", "--seeds=0,1",
      "--steps=8000", "--report_only"
  ])
  assert numbers["best"]["adam"]["lr"] == 3e-3 and numbers["best"]["optim4rl:catch"]["lr"] == 1e-3
  assert abs(numbers["best"]["optim4rl:catch"]["ratio_to_adam_best"] - 320.0 / 400.0) < 1e-12
  assert numbers["cells"]["optim4rl:catch_lr0.001"]["finals"] == [300.0, 340.0]
  assert f"--out={out} --results={results} " in numbers["command"]
  assert json.load(open(results / "numbers.json"))["command"] == numbers["command"]
  assert (results / "README.md").exists() and (results / "curves.png").exists()


def test_the_sweep_reports_a_meta_parameter_file_with_the_network_it_records(tmp_path):
  """A sweep over ``optim4rl:PATH.npz`` (a phi of one's own) reports it like a shipped file: its best lr,
  its ratio to Adam's best, and the network its file records."""
  out, results = tmp_path / "cells", tmp_path / "report"
  out.mkdir()
  own = f"optim4rl:{pretrained.path('catch')}"
  for optimizer, values in (("adam", [400.0, 380.0]), (own, [300.0, 320.0])):
    for seed, final in enumerate(values):
      _fake_cell(out, optimizer, 1e-3, seed, final)
  numbers = keras_cartpole_sweep.main([
      f"--out={out}", f"--results={results}", f"--optimizers=adam,{own}", "--lrs=1e-3", "--seeds=0,1", "--steps=8000",
      "--report_only"
  ])
  assert abs(numbers["best"][own]["ratio_to_adam_best"] - 310.0 / 390.0) < 1e-12
  assert numbers["networks"][own].startswith("Optim4RL, head-free")
  assert f"`{pretrained.path('catch')}`: Optim4RL, head-free" in (results / "README.md").read_text()


def test_a_sweep_without_adam_reports_its_lrs_and_no_ratio(tmp_path):
  """A sweep of learned optimizers only (no Adam in --optimizers) still writes its report: each file's best lr,
  no ratio ("no Adam") instead of a crash on the missing baseline."""
  out, results = tmp_path / "cells", tmp_path / "report"
  out.mkdir()
  for lr, values in ((1e-4, [300.0, 320.0]), (3e-5, [100.0, 120.0])):
    for seed, final in enumerate(values):
      _fake_cell(out, "optim4rl:catch", lr, seed, final)
  numbers = keras_cartpole_sweep.main([
      f"--out={out}", f"--results={results}", "--optimizers=optim4rl:catch", "--lrs=3e-5,1e-4", "--seeds=0,1",
      "--steps=8000", "--report_only"
  ])
  assert numbers["best"]["optim4rl:catch"]["lr"] == 1e-4
  assert numbers["best"]["optim4rl:catch"]["ratio_to_adam_best"] is None
  text = (results / "README.md").read_text()
  assert "catch no Adam" in text and "| optim4rl:catch | 110.0 ± " in text
  assert "No Adam in this sweep, so no verdict against it." in text and "do not:" not in text


@pytest.mark.slow(10)
def test_logged_updates_show_adam_adapting_and_the_default_moving_by_its_constant_sign_step():
  """--log_updates: Adam's first step moves each coordinate by at most lr (m_hat / sqrt(v_hat) = sign(g) but
  for gradients near its epsilon) and later steps less; the shipped default, whose gradients here lie in its sign-descent range
  (launch/optimizer_response.py), moves every coordinate with a nonzero gradient by the same step at every update.
  Logging does not change training."""
  from optim4rl_tf.analysis import response  # pylint: disable=import-outside-toplevel
  args = ["--lr=1e-4", "--steps=2048", "--envs=4", "--rollout=16", "--log_every=0", "--seed=3"]
  adam = keras_cartpole.main(["--optimizer=adam", "--log_updates", *args])
  cols = {c: i for i, c in enumerate(adam["update_columns"])}
  rows = np.array(adam["updates"])
  assert rows.shape == (2048 // 64, len(cols))
  assert 0.5e-4 < rows[0, cols["policy_update_rms"]] <= 1.0001e-4  # |g| near Adam's eps (1e-7) moves less
  assert rows[-1, cols["policy_update_rms"]] < 0.8 * rows[0, cols["policy_update_rms"]]
  assert np.all(rows[:, cols["entropy"]] <= np.log(2) + 1e-6)

  default = keras_cartpole.main(["--optimizer=optim4rl:inverted_pendulum", "--log_updates", *args])
  rows = np.array(default["updates"])
  c = response.measure("inverted_pendulum", (1e-3,), (0.0,), coords=256, steps=60, burn_in=30)["sign_step"]
  assert np.all(rows[:, cols["policy_grad_rms"]] < 0.03)
  # its GRU states settle from zero in about 20 updates; from then on every step is c * lr
  np.testing.assert_allclose(rows[-8:, cols["policy_update_rms"]], c * 1e-4, rtol=0.01)
  assert rows[0, cols["policy_update_rms"]] < 0.5 * c * 1e-4
  plain = keras_cartpole.main(["--optimizer=optim4rl:inverted_pendulum", *args])
  assert plain["episode_returns"] == default["episode_returns"] and "updates" not in plain


def test_the_update_sizes_example_writes_seed_means_per_update(tmp_path):
  from examples import cartpole_update_sizes  # pylint: disable=import-outside-toplevel
  results = tmp_path / "results"
  cartpole_update_sizes.main(
      [f"--out={tmp_path / 'runs'}", f"--results={results}", "--optimizers=adam@1e-3", "--seeds=3,4", "--steps=4096"])
  record = json.loads((results / "cartpole_updates.json").read_text())
  s = record["optimizers"]["adam @ 0.001"]
  runs = [
      keras_cartpole_sweep.load(keras_cartpole_sweep.cell_file(str(tmp_path / "runs"), "adam", 1e-3, seed))
      for seed in (3, 4)
  ]
  rows = np.mean([np.asarray(r["updates"]) for r in runs], axis=0)
  col = runs[0]["update_columns"].index("policy_update_rms")
  np.testing.assert_allclose(s["policy_update_rms_over_lr"], rows[:, col] / 1e-3, rtol=1e-3)
  assert s["final_returns"] == [r["final_return"] for r in runs] and record["seeds"] == [3, 4]
  assert len(s["env_steps"]) == 4096 // 128 and s["env_steps"][-1] == 4096
  assert (results / "cartpole_updates.png").stat().st_size > 0


def test_a_value_optimizer_trains_the_value_network_alone():
  """--value_optimizer=adam@LR: Adam steps the value network (its first step moves each coordinate by at most LR)
  while --optimizer steps the policy exactly as it does alone (the first update sees the same gradients)."""
  args = [
      "--optimizer=optim4rl:inverted_pendulum", "--lr=1e-4", "--log_updates", "--steps=128", "--envs=4", "--rollout=16",
      "--hidden=16", "--log_every=0", "--seed=3"
  ]
  alone = keras_cartpole.main(args)
  split = keras_cartpole.main([*args, "--value_optimizer=adam@1e-3"])
  cols = {c: i for i, c in enumerate(split["update_columns"])}
  first_alone, first_split = alone["updates"][0], split["updates"][0]
  assert first_split[cols["policy_update_rms"]] == pytest.approx(first_alone[cols["policy_update_rms"]], rel=1e-6)
  assert 0.5e-3 < first_split[cols["value_update_rms"]] <= 1.0001e-3
  assert first_alone[cols["value_update_rms"]] < 0.5e-3  # the default alone moves the value net by its own step
  assert split["value_optimizer"] == "adam@1e-3" and alone["value_optimizer"] is None


@pytest.mark.parametrize("text", ["adam", "adam@", "@1e-3", "adam@fast", "adam@-1e-3", "adam@0"])
def test_a_malformed_value_optimizer_is_refused(text):
  with pytest.raises(ValueError, match="--value_optimizer must be SPEC@LR"):
    keras_cartpole.parse_value_optimizer(text)


def test_the_sweeps_extra_cells_are_read_by_the_same_reader():
  assert keras_cartpole_sweep.parse_extra("optim4rl:small_dense_long@1e-2,,adam@3e-3") == [("optim4rl:small_dense_long",
                                                                                            1e-2), ("adam", 3e-3)]
  with pytest.raises(ValueError, match="every --extra item must be SPEC@LR"):
    keras_cartpole_sweep.parse_extra("adam@3e-3,adam")
