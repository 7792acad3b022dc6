"""MetaPPO workdirs are locked and refuse a run of another config, before anything is built."""

import json
import os

import pytest

from optim4rl_tf.configs import ppo as ppo_configs
from optim4rl_tf.meta import run
from optim4rl_tf.utils import workdir as workdir_lib


def test_meta_ppo_workdir_in_use_or_of_another_config_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  config = ppo_configs.get_config("meta_inverted_pendulum")
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirError, match="in use by another process"):
      run.meta_train(config, workdir, console=False)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  other = json.loads(config.to_json())
  other["seed"] = int(config.seed) + 1
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(other, f)
  with pytest.raises(workdir_lib.WorkdirError, match=f"seed {other['seed']} -> {config.seed}"):
    run.meta_train(config, workdir, console=False)
  assert json.load(open(os.path.join(workdir, "config.json")))["seed"] == other["seed"]
