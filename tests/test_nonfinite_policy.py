"""The meta-training divergence policy (issue 18): ``nonfinite="skip"`` (default: skip and count, stop after
``max_nonfinite`` in a row) and ``nonfinite="stop"`` (official MetaPPO: the first non-finite phi ends the
run, saves nothing from it on, summary.json says ``diverged``). Divergence is injected with meta_lr=1e30 on
a tiny Catch config (2 units, rollout 5, M = 2, mlp_dims (4,))."""

import json
import os

import pytest

from optim4rl_tf.configs import meta_a2c as meta_configs
from optim4rl_tf.configs import ppo as ppo_configs
from optim4rl_tf.meta import run
from optim4rl_tf.meta import trainer as trainer_lib


def tiny_config(iterations, **overrides):
  c = meta_configs.get_config("catch")
  c.num_units = 2
  c.rollout_steps = 5
  c.inner_updates = 2
  c.reset_interval = 2
  c.optimizer.mlp_dims = (4,)
  c.num_iterations = iterations
  c.checkpoint_every = 1
  c.meta_lr = 1e30  # the first meta-update makes phi absurd (|x| ~ 1e30)
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow(9)
def test_skip_mode_is_the_default_and_skips_counts_and_finishes(tmp_path):
  assert meta_configs.get_config("catch").nonfinite == "skip"
  assert ppo_configs.get_config("meta_ant").nonfinite == "skip"
  workdir = str(tmp_path / "skip")
  applied = []
  # Two diverging iterations, fewer than max_nonfinite: both are skipped and the run finishes.
  result = run.meta_train(tiny_config(2, max_nonfinite=3),
                          workdir,
                          console=False,
                          progress_fn=lambda t, m: applied.append(m["meta/applied"]))
  assert applied == [0.0, 0.0]
  summary = _json(os.path.join(workdir, "summary.json"))
  assert summary["nonfinite"] == "skip" and summary["diverged"] is False and "diverged_at" not in summary
  assert summary["skipped"] == 2 and summary["iterations"] == 2 and result["phi_path"].endswith("phi.npz")
  assert os.path.exists(result["phi_path"])  # the last good phi (here the initial one) is kept
  # The default field is left out of config.json, so workdirs recorded before it existed still resume.
  assert "nonfinite" not in _json(os.path.join(workdir, "config.json"))


@pytest.mark.slow(5)
def test_stop_mode_ends_at_the_first_nonfinite_phi_saves_nothing_and_exits_with_one_line(tmp_path, capsys):
  workdir = str(tmp_path / "stop")
  config = tiny_config(4, nonfinite="stop", max_nonfinite=5)
  with pytest.raises(SystemExit) as exit_info:
    run.cli_call(run.meta_train, config, workdir, console=False)
  assert exit_info.value.code == run.EXIT_FAILED
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(err) == 1 and "diverged at outer iteration 1" in err[0] and "nonfinite='stop'" in err[0]
  summary = _json(os.path.join(workdir, "summary.json"))
  assert summary["diverged"] is True and summary["diverged_at"] == 1 and summary["nonfinite"] == "stop"
  assert summary["phi_path"] is None and summary["iterations"] == 1  # stopped at once, not after 5
  assert not os.path.exists(os.path.join(workdir, "phi.npz"))
  ckpts = os.path.join(workdir, "checkpoints")
  assert not os.path.isdir(ckpts) or not [n for n in os.listdir(ckpts) if n.startswith("ckpt-")]
  assert _json(os.path.join(workdir, "config.json"))["nonfinite"] == "stop"
  assert issubclass(trainer_lib.Diverged, trainer_lib.NonFiniteError)  # launchers' one-line handling
  # A bad policy name is one clear ValueError.
  with pytest.raises(ValueError, match="nonfinite 'abort'; valid values: skip, stop"):
    run.validate_config(tiny_config(1, nonfinite="abort"))


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the panel has no tested optimizer left
def test_reproduce_stops_star_and_brax_runs_and_counts_diverged_ones(tmp_path):
  from optim4rl_tf.eval import reproduce  # pylint: disable=import-outside-toplevel
  budget = reproduce.Budget(only=("STAR",))
  assert reproduce._meta_budget(meta_configs.get_config("catch"), "star", budget).nonfinite == "stop"
  assert reproduce._meta_budget(ppo_configs.get_config("meta_ant"), "optim4rl", budget, brax=True).nonfinite \
      == "stop"
  assert reproduce._meta_budget(meta_configs.get_config("catch"), "optim4rl", budget).nonfinite == "skip"
  assert reproduce.nonfinite_policy("star", False, reproduce.Budget(nonfinite="skip")) == "skip"
  # A STAR meta-training that diverged (its summary.json, as run.drive writes it): not re-run, not tested,
  # counted in the report.
  meta_dir = tmp_path / "meta_star_catch"
  meta_dir.mkdir()
  # (reproduce.py reuses a run only with the config it requests: the recorded config.json as run.meta_train
  # writes it.)
  requested = reproduce._meta_budget(meta_configs.get_config("catch"), "star", budget)
  (meta_dir / "config.json").write_text(json.dumps(run.resolved_config(requested)))
  (meta_dir / "summary.json").write_text(
      json.dumps(dict(phi_path=None, iterations=3, skipped=1, nonfinite="stop", diverged=True, diverged_at=3)))
  md = reproduce.reproduce("figure3_catch", str(tmp_path), budget)
  text = open(md).read()
  assert "1 of 1 meta-training runs diverged" in text and "diverged at outer iteration 3" in text
  assert _json(os.path.join(os.path.dirname(md), "report.json"))["meta_training"]["diverged"] == 1
  assert not (tmp_path / "test_star_catch").exists()
