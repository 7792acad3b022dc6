"""TensorBoard as researchers use it (optim4rl_tf/utils/logging.py): every seed is a run ``tb/seed_<k>`` under the
same tag names as the seed mean in ``tb/`` (overlayable), A2C and meta-training share the tag names, each seed's
run (each meta-training run) carries the HParams plugin's config and its final metrics, and a resume truncates
every run's events."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from optim4rl_tf.agents import a2c_train
from optim4rl_tf.configs import a2c as a2c_configs
from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
from optim4rl_tf.meta import run as meta_run
from optim4rl_tf.utils import logging as logging_lib
from optim4rl_tf.utils import workdir as workdir_lib

SHARED = (logging_lib.SPEED_ENV_STEPS, logging_lib.SPEED_ITERATIONS, logging_lib.MEMORY_PEAK_RSS)


def _runs(tb_dir):
  """{run name ("." for tb/ itself): loaded EventAccumulator (TensorBoard's, with the plugins' data)} of every
  directory holding event files."""
  out = {}
  for folder, _, names in os.walk(tb_dir):
    if any("tfevents" in n for n in names):
      acc = plugin_event_accumulator.EventAccumulator(folder, size_guidance={"tensors": 0})
      acc.Reload()
      out[os.path.relpath(folder, tb_dir)] = acc
  return out


def _tags(acc):
  return set(acc.Tags()["tensors"])


def _values(acc, tag):
  return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def _hparams_content(acc):
  return acc.PluginTagToContent("hparams") if "hparams" in acc.ActivePlugins() else {}


def _hparams(acc):
  """The run's HParams plugin session start info: {name: python value}."""
  content = _hparams_content(acc)
  assert "_hparams_/session_start_info" in content, sorted(content)
  info = hp_metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
  out = {}
  for name, value in info.hparams.items():
    kind = value.WhichOneof("kind")
    out[name] = getattr(value, kind)
  return out


@pytest.fixture(scope="module")
def a2c_runs(tmp_path_factory):
  c = a2c_configs.get_config("catch")
  c.env.num_envs, c.num_seeds, c.seed = 8, 2, 3
  c.train_steps = 8 * 20 * 20  # 20 iterations, 3200 env steps per seed
  c.iterations_per_call, c.plot = 5, False
  wd = tmp_path_factory.mktemp("a2c")
  res = a2c_train.train(c, str(wd), console=False)
  return res, _runs(str(wd / "tb"))


@pytest.fixture(scope="module")
def meta_runs(tmp_path_factory):
  c = meta_a2c_configs.get_config("catch")
  c.num_units, c.num_iterations, c.checkpoint_every = 2, 2, 100
  c.rollout_steps, c.inner_updates, c.optimizer.mlp_dims = 5, 2, (4,)  # (a smaller graph)
  wd = tmp_path_factory.mktemp("meta")
  meta_run.meta_train(c, str(wd), console=False)
  return c, _runs(str(wd / "tb"))


def test_a2c_seeds_are_runs_under_one_tag(a2c_runs):
  res, runs = a2c_runs
  assert res["labels"] == [3, 4]
  assert set(runs) == {".", "seed_3", "seed_4"}
  for run in ("seed_3", "seed_4", "."):
    tags = _tags(runs[run])
    for tag in (logging_lib.EPISODE_RETURN, logging_lib.LOSS_TOTAL, logging_lib.NORM_GRAD):
      assert tag in tags, (run, tag)
    assert not any("seed_" in t for t in tags), tags  # no per-seed tag names any more
  # tb/ holds the mean over the seeds of each step
  per_seed = [dict(_values(runs[f"seed_{lab}"], logging_lib.EPISODE_RETURN)) for lab in (3, 4)]
  for step, mean in _values(runs["."], logging_lib.EPISODE_RETURN):
    got = [s[step] for s in per_seed if step in s]
    assert mean == pytest.approx(np.mean(got), rel=1e-5)
  assert set(SHARED) <= _tags(runs["."])


def test_a2c_hparams_row_per_seed_with_final_metrics(a2c_runs):
  res, runs = a2c_runs
  for s, lab in enumerate((3, 4)):
    acc = runs[f"seed_{lab}"]
    hp = _hparams(acc)
    assert hp["seed"] == lab and hp["agent"] == "a2c"
    assert hp["optimizer.name"] == "adam" and hp["env.name"] == "catch"
    assert hp["optimizer.learning_rate"] == pytest.approx(1e-3)
    assert hp["env.num_envs"] == 8 and hp["train_steps"] == 3200
    assert "chunk_secs" not in hp  # bookkeeping is left out
    (step, final), = _values(acc, logging_lib.FINAL_RETURN)
    assert step == res["env_steps"] and final == pytest.approx(res["final"][s], rel=1e-5)
    assert _values(acc, logging_lib.FINAL_ENV_STEPS)[0][1] == pytest.approx(res["steps_per_sec"], rel=1e-5)
  assert _values(runs["."], logging_lib.FINAL_RETURN)[0][1] == pytest.approx(res["ci"].mean, rel=1e-5)
  assert not _hparams_content(runs["."])  # the rows are the seeds


@pytest.mark.slow(11)
def test_meta_training_shares_the_tag_names(a2c_runs, meta_runs):
  _, a2c = a2c_runs
  config, meta = meta_runs
  top = _tags(meta["."])
  assert {t for t in top if t.startswith(("speed/", "memory/"))
         } == {t for t in _tags(a2c["."]) if t.startswith(("speed/", "memory/"))} == set(SHARED)
  assert {logging_lib.META_LOSS, logging_lib.META_GRAD_NORM, logging_lib.FINAL_ENV_STEPS} <= top
  assert [s for s, _ in _values(meta["."], logging_lib.META_GRAD_NORM)] == [1, 2]
  task = meta["task_catch"]  # each task is a run, with the A2C tag of the agents' return
  for tag in (logging_lib.EPISODE_RETURN, logging_lib.META_LOSS, logging_lib.OPTIMIZER_UPDATE_ABS_MEAN,
              logging_lib.FINAL_RETURN):
    assert tag in _tags(task), tag
  hp = _hparams(meta["."])
  assert hp["agent"] == "meta_a2c" and hp["optimizer.name"] == config.optimizer.name
  assert hp["meta_lr"] == pytest.approx(config.meta_lr) and hp["seed"] == config.seed
  assert hp["tasks.0.env_name"] == "catch" and hp["tasks.0.num_units"] == 2
  assert hp["optimizer.mlp_dims"] == str(tuple(config.optimizer.mlp_dims))
  assert "sweep.meta_lr" not in hp


def test_truncate_tensorboard_covers_the_seed_runs(tmp_path):
  logger = logging_lib.RunLogger(str(tmp_path), returns_csv=None)
  logger.hparams({"seed": 0}, run="seed_0")
  for step in range(5):
    logger.scalars(step, {logging_lib.EPISODE_RETURN: step})
    logger.run_scalars(step, {"seed_0": {logging_lib.EPISODE_RETURN: step}})
  logger.close()
  workdir_lib.truncate_tensorboard(str(tmp_path / "tb"), 2, drop_hparams=True)
  runs = _runs(str(tmp_path / "tb"))
  for run in (".", "seed_0"):
    assert [s for s, _ in _values(runs[run], logging_lib.EPISODE_RETURN)] == [0, 1, 2], run
  assert not _hparams_content(runs["seed_0"])
