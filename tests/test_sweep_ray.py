"""Sweeps on a real local Ray runtime (launch/sweep.py --backend=ray): the same runs and results as the local
pool, resuming (finished cells skipped), failures reported with their cell, and no Ray process left behind."""

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import ROOT
from optim4rl_tf.eval import sweep
from optim4rl_tf.eval import sweep_runner

ray = pytest.importorskip("ray")

ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def _ray_pids(temp_dir):
  """{pid: command line} of the processes of the Ray runtime whose temp dir is ``temp_dir`` (raylet, GCS,
  workers: each names its session folder), so runtimes of other tests or xdist workers do not count."""
  out = {}
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
      continue
    if temp_dir in cmd:
      out[int(pid)] = cmd
  return out


def _short_temp_dir():
  """A Ray temp dir with a short path (Ray's unix sockets live there; their paths are limited to 107 bytes)."""
  return tempfile.mkdtemp(prefix="ray_", dir="/tmp")


def _gone(pids, wait_secs=20.0):
  """The pids of ``pids`` still alive after waiting up to ``wait_secs``."""
  deadline = time.time() + wait_secs
  alive = set(pids)
  while alive and time.time() < deadline:
    alive = {p for p in alive if os.path.exists(f"/proc/{p}") and not _zombie(p)}
    if alive:
      time.sleep(0.2)
  return alive


def _zombie(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"
  except OSError:
    return True


@pytest.fixture(scope="module")
def ray_runtime():
  """One local Ray runtime (2 CPUs) for the module's tests; shut down at the end, leaving no process."""
  temp_dir = _short_temp_dir()
  old = os.environ.get("RAY_TMPDIR")
  os.environ["RAY_TMPDIR"] = temp_dir
  try:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  finally:
    if old is None:
      del os.environ["RAY_TMPDIR"]
    else:
      os.environ["RAY_TMPDIR"] = old
  try:
    assert _ray_pids(temp_dir), "the Ray runtime's processes should name its temp dir"
    yield ray
  finally:
    ray.shutdown()
    left = _gone(_ray_pids(temp_dir))
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"Ray processes left behind: {left}"


# ---------------------------------------------------------------------------------------------------
# A real sweep: tiny A2C on Catch, 2 cells (learning rates), on the local pool and on Ray.

A2C_ARGS = [
    "--config.train_steps=2560", "--config.num_seeds=2", "--config.env.num_envs=8", "--config.plot=false",
    "--config.save_params=false"
]


def _a2c_sweep(sweep_dir):
  from optim4rl_tf.configs import a2c  # pylint: disable=import-outside-toplevel
  config = a2c.get_config("catch")
  grid = [("optimizer.learning_rate", [3e-3, 1e-2])]
  runs = sweep.expand(config, str(sweep_dir), grid=grid)
  cmd_fn = functools.partial(sweep.command,
                             launcher=os.path.join(ROOT, "launch", "train.py"),
                             config_spec=os.path.join(ROOT, "configs", "a2c.py") + ":catch",
                             base_args=A2C_ARGS)
  return config, runs, cmd_fn


def _results(run):
  summary = json.load(open(os.path.join(run.workdir, "summary.json")))
  returns = open(os.path.join(run.workdir, "returns.csv")).read()
  return dict(final=summary["final"], mean=summary["mean"], env_steps=summary["env_steps"], returns=returns)


@pytest.mark.slow(45)
def test_ray_sweep_gives_the_local_results_and_resumes(tmp_path, ray_runtime, capsys):
  del ray_runtime
  config, local_runs, cmd_fn = _a2c_sweep(tmp_path / "local")
  local = sweep_runner.run_sweep(local_runs, config, cmd_fn, str(tmp_path / "local"), workers=2, env=ENV, cwd=ROOT)
  assert local.ok == [1, 2] and not local.failed, capsys.readouterr().out
  config, ray_runs, cmd_fn = _a2c_sweep(tmp_path / "ray")
  result = sweep_runner.run_sweep(ray_runs, config, cmd_fn, str(tmp_path / "ray"), backend="ray", env=ENV, cwd=ROOT)
  out = capsys.readouterr().out
  assert result.ok == [1, 2] and not result.failed, out
  assert "running 2 runs with backend=ray" in out
  for a, b in zip(local_runs, ray_runs):
    assert a.values == b.values and a.seed == b.seed
    assert _results(a) == _results(b), f"cell {a.index} differs between the local pool and Ray"
    assert _results(a)["env_steps"] == 2560
  assert _results(ray_runs[0]) != _results(ray_runs[1])  # the two cells are different runs

  # Resume: every cell has its results, so nothing runs again (the logs are untouched).
  logs = [open(os.path.join(r.workdir, sweep_runner.LOG_FILE)).read() for r in ray_runs]
  again = sweep_runner.run_sweep(ray_runs, config, cmd_fn, str(tmp_path / "ray"), backend="ray", env=ENV, cwd=ROOT)
  assert again.skipped == [1, 2] and again.ok == [] and again.failed == []
  assert "2 of 2 runs already have results, skipped: 1-2" in capsys.readouterr().out
  assert logs == [open(os.path.join(r.workdir, sweep_runner.LOG_FILE)).read() for r in ray_runs]


# ---------------------------------------------------------------------------------------------------
# Failures, with a dummy launcher (no TensorFlow): fast.

DUMMY = textwrap.dedent("""
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    if args.get("config.meta_lr") == "0.003":
      print("boom: this configuration fails", file=sys.stderr)
      sys.exit(3)
    with open(os.path.join(args["workdir"], "summary.json"), "w") as f:
      json.dump({k: v for k, v in args.items() if k.startswith("config.")}, f)
""")

CONFIG_FILE = textwrap.dedent("""
    import ml_collections
    def get_config(variant="a"):
      c = ml_collections.ConfigDict()
      c.seed = 0
      c.meta_lr = 1e-3
      c.sweep = ml_collections.ConfigDict()
      c.sweep.meta_lr = [1e-3, 3e-3]
      return c
""")


def _dummy(tmp_path):
  path = tmp_path / "dummy_launcher.py"
  path.write_text(DUMMY)
  return str(path)


def _config():
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = ml_collections.ConfigDict(dict(seed=0, meta_lr=1e-3))
  c.sweep = ml_collections.ConfigDict(dict(meta_lr=[1e-3, 3e-3]))
  return c


def test_ray_failures_name_their_cell(tmp_path, ray_runtime, capsys):
  """A run that exits non-zero and a Ray task that cannot start its run: both reported with their cell
  (run, configuration, repeat, values, seed), marked ``failed``, and run again on resume."""
  del ray_runtime
  config = _config()
  sweep_dir = str(tmp_path / "s")
  runs = sweep.expand(config, sweep_dir, repeats=2)  # 1: ok, 2: fails (meta_lr 0.003), 3: ok, 4: fails
  launcher = _dummy(tmp_path)

  def cmd_fn(run):  # run 3's command cannot start: its Ray task raises
    return sweep.command(run,
                         launcher=launcher,
                         config_spec="x.py",
                         python="/no/such/python" if run.index == 3 else None)

  result = sweep_runner.run_sweep(runs, config, cmd_fn, sweep_dir, backend="ray")
  out = capsys.readouterr().out
  assert result.ok == [1] and result.failed == [2, 3, 4], out
  assert "run 2 (config 2, repeat 0) FAILED (rc=3)" in out and "boom: this configuration fails" in out
  assert "run 4 (config 2, repeat 1) FAILED (rc=3)" in out and "meta_lr=0.003 seed=1" in out
  assert "run 3 (config 1, repeat 1) FAILED (Ray task failed: " in out and "/no/such/python" in out
  assert "failed runs: 2-4" in out and "    run 3 (config 1, repeat 1): meta_lr=0.001 seed=1" in out
  for run in runs[1:]:
    assert os.path.exists(os.path.join(run.workdir, sweep_runner.FAILED_FILE))
  assert "/no/such/python" in open(os.path.join(runs[2].workdir, sweep_runner.FAILED_FILE)).read()
  again = sweep_runner.run_sweep(runs, config, cmd_fn, sweep_dir, backend="ray")
  assert again.skipped == [1] and again.failed == [2, 3, 4]


def test_ray_runs_get_the_drivers_environment_not_rays(tmp_path, ray_runtime, monkeypatch):
  """Ray sets OMP_NUM_THREADS=1 and RAY_* in its workers; a run sees what it would see on the local pool."""
  del ray_runtime
  monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
  probe = tmp_path / "probe.py"
  probe.write_text("import json, os, sys\n"
                   "workdir = sys.argv[-1].split('=', 1)[1]\n"
                   "json.dump(dict(os.environ), open(os.path.join(workdir, 'summary.json'), 'w'))\n")
  config = _config()
  runs = sweep.expand(config, str(tmp_path / "s"))[:1]
  cmd_fn = functools.partial(sweep.command, launcher=str(probe), config_spec="x.py")
  sweep_runner.run_sweep(runs, config, cmd_fn, str(tmp_path / "s"), backend="ray", env={"SWEEP_VAR": "7"})
  env = json.load(open(os.path.join(runs[0].workdir, "summary.json")))
  assert env["SWEEP_VAR"] == "7" and "OMP_NUM_THREADS" not in env
  assert not [k for k in env if k.startswith("RAY_")]


def test_cli_ray_backend_starts_and_stops_its_own_runtime(tmp_path):
  """launch/sweep.py --backend=ray without --ray_address: a local Ray runtime for the sweep, gone at exit."""
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG_FILE)
  temp_dir = _short_temp_dir()
  cmd = [
      sys.executable,
      os.path.join(ROOT, "launch", "sweep.py"), "--backend=ray", "--workers=2", f"--launcher={_dummy(tmp_path)}",
      f"--config={cfg}:a", f"--sweep_dir={tmp_path / 'sw'}"
  ]
  proc = subprocess.run(cmd,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        cwd=str(tmp_path),
                        env=dict(os.environ, RAY_TMPDIR=temp_dir, **ENV))
  out = proc.stdout + proc.stderr
  assert proc.returncode == 1, out  # one cell failed
  assert "running 2 runs with backend=ray" in out
  assert "run 1 (config 1, repeat 0) ok" in out
  assert "run 2 (config 2, repeat 0) FAILED (rc=3)" in out and "failed runs: 2" in out
  assert os.path.exists(tmp_path / "sw" / "1" / "summary.json")
  assert os.listdir(temp_dir), "the sweep's Ray runtime should have used RAY_TMPDIR"
  left = _gone(_ray_pids(temp_dir))
  shutil.rmtree(temp_dir, ignore_errors=True)
  assert not left, f"Ray processes left behind by launch/sweep.py: {left}"
