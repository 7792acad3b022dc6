"""Sweep expansion and the index mapping of docs/fidelity.md §9.2, the local process pool, skipping, and the CLI."""

import functools
import json
import os
import sys
import textwrap

import ml_collections
import pytest

from conftest import run_command
from optim4rl_tf.eval import sweep
from optim4rl_tf.eval import sweep_command
from optim4rl_tf.eval import sweep_runner

META_LRS_CATCH = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
META_LRS_GRID = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


def meta_config(reset_intervals, meta_lrs, meta_grad=("grad_norm_0.5", "grad_clip_1.0"), max_norm=None):
  """A config shaped like configs/meta_a2c.py, with the §5.7 sweep in file order."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.optimizer = ml_collections.ConfigDict(dict(name="optim4rl", learning_rate=1e-3, meta_params=""))
  c.reset_interval = reset_intervals[0] if reset_intervals else 32
  c.meta_lr = 1e-3
  c.meta_grad_clip = -1.0
  c.meta_grad_norm = 0.5
  c.max_norm = -1.0
  c.sweep = ml_collections.ConfigDict()
  c.sweep.reset_interval = list(reset_intervals)
  c.sweep.meta_lr = list(meta_lrs)
  c.sweep.meta_grad = list(meta_grad)
  if max_norm is not None:
    c.sweep.max_norm = list(max_norm)
  return c


def resolved(config, run):
  return sweep.apply_overrides(config, run.overrides)


# ---------------------------------------------------------------------------------------------------
# §9.2 index mapping.


def test_catch_index_mapping():
  """meta_*_catch: (idx-1) = r + 2j, m in (32, 64); j = 0..4 grad_norm 0.5 with meta lr[j], 5..9 grad_clip."""
  config = meta_config([32, 64], META_LRS_CATCH)
  runs = sweep.expand(config, "/tmp/x")
  assert len(runs) == 20
  for run in runs:
    r, j = (run.index - 1) % 2, (run.index - 1) // 2
    c = resolved(config, run)
    assert c.reset_interval == (32, 64)[r]
    assert c.meta_lr == META_LRS_CATCH[j % 5]
    if j < 5:
      assert (c.meta_grad_norm, c.meta_grad_clip) == (0.5, -1.0)
    else:
      assert (c.meta_grad_clip, c.meta_grad_norm) == (1.0, -1.0)
    assert run.config_index == run.index and run.repeat == 0


def test_bdl_index_mapping_and_repeats():
  """meta_*_bdl: (idx-1) = r + 4j; index k and k + 40 share the configuration with another seed."""
  config = meta_config([72, 144, 288, 576], META_LRS_GRID)
  runs = sweep.expand(config, "/tmp/x", repeats=2)
  assert len(runs) == 80
  for run in runs:
    idx = run.config_index
    r, j = (idx - 1) % 4, (idx - 1) // 4
    c = resolved(config, run)
    assert c.reset_interval == (72, 144, 288, 576)[r]
    assert c.meta_lr == META_LRS_GRID[j % 5]
    assert c.meta_grad_norm == (0.5 if j < 5 else -1.0) and c.meta_grad_clip == (-1.0 if j < 5 else 1.0)
    assert run.config_index == (run.index - 1) % 40 + 1 and run.repeat == (run.index - 1) // 40
  for k in range(1, 41):
    a, b = runs[k - 1], runs[k + 40 - 1]
    assert a.values == b.values and a.seed != b.seed
    assert {kk: v for kk, v in a.overrides.items() if kk != "seed"} == \
        {kk: v for kk, v in b.overrides.items() if kk != "seed"}
  assert sweep.config_index_of(sweep.sweep_grid(config), runs[17].values) == 18


def test_brax_and_grid_index_mapping():
  brax = meta_config([32, 64, 128, 256, 512], META_LRS_GRID)
  for run in sweep.expand(brax, "/tmp/x"):
    r, j = (run.index - 1) % 5, (run.index - 1) // 5
    assert resolved(brax, run).reset_interval == (32, 64, 128, 256, 512)[r]
    assert resolved(brax, run).meta_lr == META_LRS_GRID[j % 5]
  # meta_rl_grid: (idx-1) = r + 4(l + 6(c + 2q)), grad_clip c over (1.0, off), max_norm q over (0.5, off).
  lrs = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
  grid_cfg = meta_config([72, 144, 288, 576], lrs, meta_grad=("grad_clip_1.0", "none"), max_norm=[0.5, -1.0])
  runs = sweep.expand(grid_cfg, "/tmp/x")
  assert len(runs) == 96
  for run in runs:
    rest = run.index - 1
    r, l, c, q = rest % 4, (rest // 4) % 6, (rest // 24) % 2, rest // 48
    cfg = resolved(grid_cfg, run)
    assert (cfg.reset_interval, cfg.meta_lr) == ((72, 144, 288, 576)[r], lrs[l])
    assert cfg.meta_grad_clip == (1.0, -1.0)[c] and cfg.meta_grad_norm == -1.0
    assert cfg.max_norm == (0.5, -1.0)[q]


def test_lopt_index_mapping_over_phi_files(tmp_path):
  """lopt_*: phi file p = (idx-1) mod P, seed repeat = (idx-1) // P."""
  files = []
  for i in (1, 2, 10):  # natural order: 1, 2, 10 (not 1, 10, 2)
    d = tmp_path / "meta" / str(i)
    d.mkdir(parents=True)
    (d / "phi.npz").write_text("x")
    files.append(str(d / "phi.npz"))
  key, values = sweep.parse_grid_arg(f"optimizer.meta_params=glob:{tmp_path}/meta/*/phi.npz")
  assert key == "optimizer.meta_params" and values == files
  config = meta_config([], [], meta_grad=())
  config.num_seeds = 10
  grid = sweep.sweep_grid(config, [(key, values)], use_config_sweep=False)
  runs = sweep.expand(config, str(tmp_path / "lopt"), grid=grid, repeats=3)
  assert len(runs) == 9
  for run in runs:
    p, rep = (run.index - 1) % 3, (run.index - 1) // 3
    assert run.overrides["optimizer.meta_params"] == files[p] and run.repeat == rep
    assert run.seed == 10 * rep  # seed stride = num_seeds: the repeats' seed blocks do not overlap


def test_empty_lists_are_not_swept_and_first_key_is_fastest():
  config = meta_config([], META_LRS_CATCH, meta_grad=["grad_norm_0.5"])
  grid = sweep.sweep_grid(config)
  assert [k for k, _ in grid] == ["meta_lr", "meta_grad"]
  assert sweep.config_values(grid, 2) == {"meta_lr": 3e-4, "meta_grad": "grad_norm_0.5"}
  assert sweep.num_configs([]) == 1 and len(sweep.expand(meta_config([], [], meta_grad=[]), "/x")) == 1


def test_key_resolution_and_errors():
  config = meta_config([32], [1e-3])
  assert sweep.resolve_key(config, "learning_rate") == "optimizer.learning_rate"  # unique leaf name
  assert sweep.resolve_key(config, "optimizer__learning_rate") == "optimizer.learning_rate"
  assert sweep.expand_value(config, "meta_grad", "none") == {"meta_grad_norm": -1.0, "meta_grad_clip": -1.0}
  assert sweep.expand_value(config, "x", {"meta_lr": 0.1, "max_norm": 0.5}) == {"meta_lr": 0.1, "max_norm": 0.5}
  with pytest.raises(ValueError, match="names no field"):
    sweep.resolve_key(config, "no_such_field")
  config.other = ml_collections.ConfigDict(dict(learning_rate=0.1))
  with pytest.raises(ValueError, match="ambiguous"):
    sweep.resolve_key(config, "learning_rate")
  with pytest.raises(ValueError, match="grad_norm_<x>"):
    sweep.expand_value(config, "meta_grad", "clip_everything")
  config.sweep.meta_grad = ["grad_norm_0.5", "bogus"]
  with pytest.raises(ValueError, match="bogus"):
    sweep.expand(config, "/x")
  assert sweep.parse_ranges("1-3,5", 10) == [1, 2, 3, 5]
  with pytest.raises(ValueError, match="out of range"):
    sweep.parse_ranges("9-12", 10)


def test_command_line_of_a_run():
  config = meta_config([32, 64], [1e-3])
  run = sweep.expand(config, "/s")[1]
  cmd = sweep.command(run,
                      launcher="launch/meta_train.py",
                      config_spec="configs/meta_a2c.py:catch",
                      base_args=["--config.train_steps=1000"],
                      python="python")
  assert cmd == [
      "python", "launch/meta_train.py", "--config=configs/meta_a2c.py:catch", "--config.train_steps=1000",
      "--config.reset_interval=64", "--config.meta_lr=0.001", "--config.meta_grad_norm=0.5",
      "--config.meta_grad_clip=-1.0", "--config.seed=0", "--workdir=/s/2"
  ]


# ---------------------------------------------------------------------------------------------------
# Running: local pool with a tiny dummy launcher.

DUMMY = textwrap.dedent("""
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    workdir = args["workdir"]
    if args.get("config.meta_lr") == "0.003":
      print("boom: this configuration fails", file=sys.stderr)
      sys.exit(3)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({k: v for k, v in args.items() if k.startswith("config.")}, f)
    print("trained", workdir)
""")


def _dummy(tmp_path):
  path = tmp_path / "dummy_launcher.py"
  path.write_text(DUMMY)
  return str(path)


def test_local_pool_runs_skips_and_records(tmp_path, capsys):
  launcher = _dummy(tmp_path)
  config = meta_config([32, 64], [1e-3, 3e-3])
  sweep_dir = str(tmp_path / "sweep")
  runs = sweep.expand(config, sweep_dir)
  cmd_fn = functools.partial(sweep.command, launcher=launcher, config_spec="unused.py")
  result = sweep_runner.run_sweep(runs, config, cmd_fn, sweep_dir, workers=2)
  out = capsys.readouterr().out
  assert result.ok == [1, 2, 5, 6] and result.failed == [3, 4, 7, 8] and result.skipped == []
  progress = [line for line in out.splitlines() if line.startswith("[sweep ")]
  assert len(progress) == 8 and all(" run " in line for line in progress)  # one line per run
  assert "FAILED (rc=3)" in out and "boom: this configuration fails" in out
  for run in runs:
    rec = json.load(open(os.path.join(run.workdir, sweep_runner.RUN_FILE)))
    assert rec["index"] == run.index and rec["config"]["meta_lr"] == resolved(config, run).meta_lr
    assert rec["config"]["reset_interval"] == (32, 64)[(run.index - 1) % 2]
    assert rec["command"][-1] == f"--workdir={run.workdir}"
    done = os.path.exists(os.path.join(run.workdir, sweep_runner.DONE_FILE))
    assert done == (run.index in result.ok)
    assert os.path.exists(os.path.join(run.workdir, sweep_runner.FAILED_FILE)) == (not done)
  summary = json.load(open(os.path.join(runs[0].workdir, "summary.json")))
  assert summary["config.meta_grad_norm"] == "0.5" and summary["config.seed"] == "0"
  index = json.load(open(os.path.join(sweep_dir, "sweep.json")))
  assert index["num_runs"] == 8 and index["runs"][4]["values"]["meta_grad"] == "grad_clip_1.0"

  # Resume: finished runs are skipped, failed ones run again.
  result2 = sweep_runner.run_sweep(runs, config, cmd_fn, sweep_dir, workers=1)
  out = capsys.readouterr().out
  assert result2.skipped == [1, 2, 5, 6] and result2.failed == [3, 4, 7, 8]
  assert "4 of 8 runs already have results, skipped: 1-2,5-6" in out
  # A result file alone (e.g. the run finished but the sweep process died) also counts as done.
  os.remove(os.path.join(runs[0].workdir, sweep_runner.DONE_FILE))
  assert sweep_runner.is_done(runs[0].workdir)
  assert not sweep_runner.is_done(runs[2].workdir)


def test_ray_backend_error_is_clear(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
  config = meta_config([32], [1e-3])
  runs = sweep.expand(config, str(tmp_path / "s"))
  cmd_fn = functools.partial(sweep.command, launcher=_dummy(tmp_path), config_spec="unused.py")
  with pytest.raises(RuntimeError, match="needs the 'ray' package"):
    sweep_runner.run_sweep(runs, config, cmd_fn, str(tmp_path / "s"), backend="ray")


CONFIG_FILE = textwrap.dedent("""
    import ml_collections
    def get_config(variant="a"):
      c = ml_collections.ConfigDict()
      c.seed = 0
      c.num_seeds = 2
      c.meta_lr = 1e-3
      c.meta_grad_norm = 0.5
      c.meta_grad_clip = -1.0
      c.train_steps = 100
      c.sweep = ml_collections.ConfigDict()
      c.sweep.meta_lr = [1e-4, 1e-3]
      c.sweep.meta_grad = ["grad_norm_0.5", "grad_clip_1.0"]
      return c
""")


def test_cli_end_to_end(tmp_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG_FILE)
  sweep_dir = tmp_path / "sw"
  args = [
      f"--launcher={_dummy(tmp_path)}", f"--config={cfg}:a", "--config.train_steps=7", f"--sweep_dir={sweep_dir}",
      "--workers=2", "--repeats=2", "--only=1-3,6"
  ]
  proc = run_command(sweep_command, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "4 configurations x 2 repeats = 8 runs" in proc.stdout
  assert sorted(os.listdir(sweep_dir)) == ["1", "2", "3", "6", "sweep.json"]
  s6 = json.load(open(sweep_dir / "6" / "summary.json"))
  # run 6 = configuration 2 (meta_lr 1e-3, grad_norm), repeat 1: seed 0 + 1 * num_seeds
  assert s6["config.meta_lr"] == "0.001" and s6["config.seed"] == "2" and s6["config.train_steps"] == "7"
  rec = json.load(open(sweep_dir / "6" / sweep_runner.RUN_FILE))
  assert rec["config"]["train_steps"] == 7 and rec["config"]["seed"] == 2
  assert json.load(open(sweep_dir / "sweep.json"))["num_runs"] == 8
  assert json.load(open(sweep_dir / "sweep.json"))["base_overrides"] == ["--config.train_steps=7"]
  listing = run_command(sweep_command, *args[:-1], "--list").stdout
  assert "    8  config    4  repeat 1  meta_lr=0.001 meta_grad=grad_clip_1.0 seed=2" in listing
  bad = run_command(sweep_command, *args[:-1], "--only=9")
  assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


def test_project_meta_configs_follow_the_paper_index():
  """configs/meta_a2c.py's grids give the §9.2 mapping (catch: r + 2j; bdl: r + 4j; no-pipeline: j only)."""
  from optim4rl_tf.configs import meta_a2c as module  # pylint: disable=import-outside-toplevel
  for variant, intervals, lrs in (("catch", (32, 64), META_LRS_CATCH), ("big_dense_long", (72, 144, 288, 576),
                                                                        META_LRS_GRID), ("big_dense_long_nopipe", (),
                                                                                         META_LRS_GRID)):
    config = module.get_config(variant)
    runs = sweep.expand(config, "/tmp/x")
    m = max(len(intervals), 1)
    assert len(runs) == m * 10, variant
    for run in runs:
      r, j = (run.index - 1) % m, (run.index - 1) // m
      c = resolved(config, run)
      if intervals:
        assert c.reset_interval == intervals[r]
      assert c.meta_lr == lrs[j % 5]
      assert (c.meta_grad_norm, c.meta_grad_clip) == ((0.5, -1.0) if j < 5 else (-1.0, 1.0)), (variant, run)
