"""The side-by-side benchmark's mechanics (optim4rl_tf.benchmarks.against) with fake children: parsing the
``RESULT {json}`` lines, the alternating order, the ratios, the table and the missing-venv errors. Nothing is
timed and no child process is started."""

import argparse
import json
import os
import stat

import pytest

from optim4rl_tf.benchmarks import a2c as a2c_bench
from optim4rl_tf.benchmarks import against
from optim4rl_tf.benchmarks import meta as meta_bench
from optim4rl_tf.benchmarks import ppo as ppo_bench

# What the official bench_optim4rl.py prints for MetaA2C (abridged; one RESULT line after its own logs).
OFFICIAL_META = {
    "setup_s": 3.1,
    "first_iter_s": 40.2,
    "second_iter_s": 1.3,
    "steady_outer_iters": 25,
    "outer_iters_per_s": 0.8,
    "steps_per_s": 5120.0,
    "agent": "MetaA2C",
    "env": "small_dense_long",
    "num_envs": 64,
    "ru_maxrss_MiB": 2000.0,
    "loadavg": [2.0, 2.0, 2.0]
}
OURS_META = {"task": "small_dense_long", "units": 64, "sec_per_it": 0.25, "peak_rss_gb": 1.7, "first_it_secs": 11.5}


def _out(result, noise="I0000 some log line\n"):
  return noise + "RESULT " + json.dumps(result) + "\n"


class FakeRunner:
  """Plays a list of children in order and records the commands it was given."""

  def __init__(self, runs):
    self.runs = list(runs)
    self.cmds = []

  def __call__(self, cmd, env=None, cwd=None, timeout=None):
    self.cmds.append(list(cmd))
    return self.runs.pop(0)


def _child(result, rc=0, rss=1.5, stderr=""):
  return against.ChildRun(rc, _out(result) if result is not None else "no result here\n", stderr, 10.0, rss)


def _sides():
  ours = against.Side("ours", ["python", "launch/benchmark.py", "meta", "--child=x:64"], {}, lambda r: r["sec_per_it"],
                      True)
  official = against.Side("official", ["py", "bench_optim4rl.py"], {}, lambda r: 1.0 / r["outer_iters_per_s"], True)
  return ours, official


def _no_load():
  return (1.0, 1.0, 1.0)


def _no_procs():
  return {}


def _none():
  return None


def test_parse_result_takes_the_last_result_line():
  text = "noise\nRESULT {\"a\": 1}\nmore noise\nRESULT {\"a\": 2}\ntrailer\n"
  assert against.parse_result(text) == {"a": 2}
  assert against.parse_result("no result\n") is None
  assert against.parse_result("RESULT {not json\n") is None
  assert against.parse_result(_out(OFFICIAL_META))["outer_iters_per_s"] == 0.8


def test_pairs_alternate_ours_then_theirs():
  assert against.pair_order(3) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
  ours, official = _sides()
  runner = FakeRunner([_child(OURS_META), _child(OFFICIAL_META)] * 2)
  ms = against.run_pairs(ours, official, 2, runner=runner, loadavg=_no_load, snapshot=_no_procs, machine_cpu=_none)
  assert [(m.pair, m.side) for m in ms] == [(0, "ours"), (0, "official"), (1, "ours"), (1, "official")]
  assert [c[0] for c in runner.cmds] == ["python", "py", "python", "py"]
  assert [m.value for m in ms] == [0.25, 1.25, 0.25, 1.25]


def test_speedup_is_official_over_ours():
  assert against.speedup(0.25, 1.25, lower_is_better=True) == pytest.approx(5.0)  # s/it
  assert against.speedup(7e5, 1e5, lower_is_better=False) == pytest.approx(7.0)  # env steps/s
  assert against.speedup(None, 1.0, True) is None
  assert against.speedup(1.0, 0.0, True) is None


def test_compare_prints_pairs_overall_ratio_and_load():
  ours, official = _sides()
  runner = FakeRunner([
      _child(OURS_META, rss=1.7),
      _child(OFFICIAL_META, rss=2.1),
      _child(dict(OURS_META, sec_per_it=0.5), rss=1.8),
      _child(dict(OFFICIAL_META, outer_iters_per_s=0.5), rss=2.0)
  ])
  loads = iter([(3.0, 0, 0), (3.5, 0, 0)] * 4)
  snaps = iter([{1: ("python", 0.0), 2: ("other", 10.0)}, {1: ("python", 5.0), 2: ("other", 10.0)}] * 4)
  lines = []
  ms = against.compare("title",
                       ours,
                       official,
                       2,
                       "s/it",
                       runner=runner,
                       loadavg=lambda: next(loads),
                       snapshot=lambda: next(snaps),
                       machine_cpu=lambda: None,
                       printer=lines.append)
  text = "\n".join(lines)
  assert len(ms) == 4
  assert "commit" in text and "UTC" in text
  assert "pair 1: official/ours = 5.00x" in text
  assert "pair 2: official/ours = 4.00x" in text
  assert "overall official/ours = 4.50x (median of 2 pair ratios" in text
  # The load beside every measurement and every overall figure.
  measured = [l for l in lines if l.startswith("  pair ") and ("ours " in l or "official " in l) and "GB" in l]
  assert len(measured) == 4 and all("load 3.00->3.50, others used" in l and "other busy" in l for l in measured)
  assert all("1-min load" in l for l in lines if l.startswith("  overall ") and "GB" in l)
  assert "peak RSS  2.10 GB" in text
  # The first outer iteration (compilation included) of both sides, per measurement and overall.
  assert "1st it  11.5 s" in lines[[i for i, l in enumerate(lines) if "pair 1 ours" in l][0]]
  assert "1st it  40.2 s" in lines[[i for i, l in enumerate(lines) if "pair 1 official" in l][0]]
  assert "overall official" in text and "1st it  40.2 s (compile included)" in text


def test_busy_others_counts_processes_alive_at_the_end():
  before = {1: ("a", 0.0), 2: ("b", 0.0), 3: ("idle", 5.0), 4: ("gone", 0.0), 6: ("old", 50.0)}
  after = {1: ("a", 10.0), 2: ("b", 2.0), 3: ("idle", 5.0), 5: ("new", 9.0), 6: ("reused", 1.0)}
  busy, cores, top = against.busy_others(before, after, 10.0)
  # a: 1.0, new (started meanwhile): 0.9, b: 0.2, reused pid (another name): 0.1; idle: 0.
  assert busy == 4 and cores == pytest.approx(2.2)
  assert top == "a:1.0,new:0.9,b:0.2"
  assert against.busy_others(before, after, 10.0, exclude={1})[0] == 3
  # With start times (as cpu_snapshot gives): a renamed kernel worker is the same process, a new start is not.
  before = {7: ("kworker/0:1-a", 100.0, 5), 8: ("x", 100.0, 5)}
  after = {7: ("kworker/0:1-b", 100.5, 5), 8: ("x", 1.0, 900)}
  assert against.busy_others(before, after, 10.0)[1] == pytest.approx(0.15)


def test_others_cores_are_the_machine_cpu_minus_the_child():
  ours, _ = _sides()
  run = against.ChildRun(0, _out(OURS_META), "", 10.0, 1.0, cpu_s=12.0)
  totals = iter([100.0, 130.0])  # 30 busy CPU seconds in 10 s, 12 of them the child's
  m = against.measure(ours,
                      0,
                      runner=lambda *a, **k: run,
                      loadavg=_no_load,
                      snapshot=_no_procs,
                      machine_cpu=lambda: next(totals),
                      clock=iter([0.0, 10.0]).__next__)
  assert m.load.others_cores == pytest.approx(1.8)
  # Without /proc/stat: the processes' own sum.
  m = against.measure(ours,
                      0,
                      runner=lambda *a, **k: run,
                      loadavg=_no_load,
                      snapshot=iter([{}, {
                          9: ("x", 5.0)
                      }]).__next__,
                      machine_cpu=_none,
                      clock=iter([0.0, 10.0]).__next__)
  assert m.load.others_cores == pytest.approx(0.5) and m.load.busy == 1 and m.value == 0.25


def test_a_failed_child_is_reported_not_raised():
  ours, official = _sides()
  runner = FakeRunner([_child(OURS_META), _child(None, rc=1, stderr="Traceback\nImportError: no jax\n")])
  lines = []
  ms = against.compare("t",
                       ours,
                       official,
                       1,
                       "s/it",
                       runner=runner,
                       loadavg=_no_load,
                       snapshot=_no_procs,
                       printer=lines.append)
  assert ms[1].value is None and "ImportError: no jax" in ms[1].error
  assert any("official/ours = n/a" in l for l in lines)


def _args(**kw):
  base = dict(official_dir="",
              official_python="",
              official_bench="",
              brax_python="",
              brax_bench="",
              duration=30.0,
              chunk=0,
              mlp_dims=None,
              envs=512,
              optimizer="rmsprop",
              jit=False)
  base.update(kw)
  return argparse.Namespace(**base)


def _layout(tmp_path):
  """DIR/optim4rl, DIR/venv/bin/python (executable), bench_optim4rl.py: the layout the user's setup made."""
  code = tmp_path / "optim4rl"
  code.mkdir()
  py = tmp_path / "venv" / "bin" / "python"
  py.parent.mkdir(parents=True)
  py.write_text("#!/bin/sh\n")
  py.chmod(py.stat().st_mode | stat.S_IXUSR)
  bench = tmp_path / "bench_optim4rl.py"
  bench.write_text("")
  return code, py, bench


def test_missing_official_venv_names_the_flag(tmp_path):
  with pytest.raises(against.SetupError, match="--official_dir is not given"):
    against.resolve_official(_args(), environ={})
  with pytest.raises(against.SetupError, match="--official_dir=.* not found"):
    against.resolve_official(_args(official_dir=str(tmp_path / "nope")), environ={})
  code = tmp_path / "optim4rl"
  code.mkdir()
  with pytest.raises(against.SetupError, match="--official_python=.* not found"):
    against.resolve_official(_args(official_dir=str(code)), environ={})
  (tmp_path / "x").mkdir()
  code, py, bench = _layout(tmp_path / "x")
  with pytest.raises(against.SetupError, match="--official_bench is not given"):
    against.resolve_official(_args(official_dir=str(code)), environ={})
  # The error is one line on stderr and exit status 2.
  def fail():
    raise against.SetupError("--official_bench is not given")

  assert against.main_guard(fail) == 2


def test_official_from_flags_or_environment(tmp_path):
  code, py, bench = _layout(tmp_path)
  d, p, b = against.resolve_official(_args(official_dir=str(code), official_bench=str(bench)), environ={})
  assert (d, p, b) == (str(code), str(py), str(bench))  # python defaults to venv/ beside the code dir
  env = {"OPTIM4RL_OFFICIAL_DIR": str(code), "OPTIM4RL_OFFICIAL_BENCH": str(bench)}
  assert against.resolve_official(_args(), environ=env) == (str(code), str(py), str(bench))


def test_meta_sides_run_the_official_script_in_its_dir(tmp_path):
  code, py, bench = _layout(tmp_path)
  args = _args(official_dir=str(code), official_bench=str(bench))
  ours, official = meta_bench.sides(args, "small_dense_long", 64, environ={"PATH": "/bin"})
  assert official.cmd[:2] == [str(py), str(bench)]
  assert official.cmd[official.cmd.index("--agent") + 1] == "MetaA2C"
  assert official.cmd[official.cmd.index("--num_envs") + 1] == "64"
  assert official.cmd[official.cmd.index("--duration") + 1] == "30"
  assert official.env["OPTIM4RL_DIR"] == str(code) and official.cwd == str(code)
  assert official.figure(OFFICIAL_META) == pytest.approx(1.25)
  assert "--child=small_dense_long:64" in ours.cmd and "--seconds=30" in ours.cmd and "--warmup=2" in ours.cmd
  assert ours.figure(OURS_META) == 0.25 and ours.lower_is_better and official.lower_is_better


def test_a2c_sides_compare_env_steps_per_second(tmp_path):
  code, py, bench = _layout(tmp_path)
  ours, official = a2c_bench.sides(_args(official_dir=str(code), official_bench=str(bench)),
                                   "big_dense_long",
                                   environ={})
  assert official.cmd[official.cmd.index("--agent") + 1] == "A2C"
  assert official.figure({"steps_per_s": 4000.0}) == 4000.0
  assert ours.figure({"env_steps_per_sec": 1.3e5}) == 1.3e5
  assert not ours.lower_is_better
  assert against.speedup(ours.figure({"env_steps_per_sec": 1.2e5}), 4000.0, ours.lower_is_better) == 30.0


def test_ppo_sides_need_brax_python(tmp_path):
  args = _args(env="ant",
               envs=256,
               batch=256,
               minibatches=8,
               unroll=5,
               epochs=4,
               bridges="graph,numpy",
               brax_timesteps=3e5,
               brax_evals=6)
  with pytest.raises(against.SetupError, match="--brax_python is not given"):
    ppo_bench.sides(args, environ={})
  code, _, bench = _layout(tmp_path)
  py = tmp_path / "brax_venv" / "bin" / "python"
  py.parent.mkdir(parents=True)
  py.write_text("")
  py.chmod(0o755)
  with pytest.raises(against.SetupError, match="--brax_bench is not given"):
    ppo_bench.sides(_args(**dict(vars(args), official_dir=str(code))), environ={})
  ours, brax = ppo_bench.sides(_args(**dict(vars(args), brax_python=str(py), brax_bench=str(bench))), environ={})
  assert brax.cmd[:2] == [str(py), str(bench)] and brax.figure({"steady_sps": 1.6e4}) == 1.6e4
  assert "--child=graph" in ours.cmd and "--min_secs=30" in ours.cmd


def test_no_path_outside_the_repository_in_these_modules():
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name in ("against.py", "meta.py", "a2c.py", "ppo.py", "meta_profile.py"):
    with open(os.path.join(here, "optim4rl_tf", "benchmarks", name)) as f:
      text = f.read()
    outside = (os.path.join(os.pardir, "sha" + "red"), os.sep + os.path.join("tmp", "optim4rl"))  # built, not named
    assert not any(o in text for o in outside), name
