"""Reports on small synthetic workdirs: final performance, grouping, the docs/fidelity.md §9.3 selection rule, the bootstrap
CI, Figure-3-style panels and Table 1 with the paper's numbers, and the CLI."""

import json
import os

import numpy as np
import pytest

from conftest import run_command
from optim4rl_tf.eval import ranking
from optim4rl_tf.eval import report
from optim4rl_tf.eval import report_command
from optim4rl_tf.utils import stats


def tail_returns(final, n=30, head=-5.0):
  """n logged returns whose last 20 average to ``final`` exactly (the first n-20 are far off)."""
  last = [final - 0.25 if i % 2 else final + 0.25 for i in range(20)]
  return [head] * (n - 20) + last


def make_workdir(path, config, returns_by_seed, step=1280, values=None, env_steps=None, extra_seeds=()):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "returns.csv"), "w") as f:
    f.write("step,seed,return\n")
    n = max(len(r) for r in returns_by_seed.values())
    for i in range(n):
      for seed, rets in returns_by_seed.items():
        if i < len(rets):
          f.write(f"{i * step},{seed},{rets[i]!r}\n")
  seeds = sorted(returns_by_seed) + list(extra_seeds)
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump({"seeds": seeds, "env_steps": env_steps or n * step}, f)
  if values is not None:
    with open(os.path.join(path, "sweep_run.json"), "w") as f:
      json.dump({"values": values, "config": config}, f)
  return path


def a2c_config(opt, seed=0, env="catch", **opt_fields):
  return {
      "env": {
          "name": env,
          "num_envs": 64
      },
      "optimizer": dict(name=opt, **opt_fields),
      "seed": seed,
      "num_seeds": 3,
      "train_steps": 38400.0,
      "plot": True
  }


def build_sources(root):
  """Adam (2 learning rates), Optim4RL (two phi with equal means, different spread; one split over two
  workdirs), L2LGD² (one config diverged), a PPO-style Ant run."""
  adam = os.path.join(root, "adam")
  make_workdir(os.path.join(adam, "1"), a2c_config("adam", learning_rate=1e-3), {
      0: tail_returns(0.75),
      1: tail_returns(1.0),
      2: tail_returns(1.25)
  })
  make_workdir(os.path.join(adam, "2"), a2c_config("adam", learning_rate=3e-4), {
      0: tail_returns(0.5),
      1: tail_returns(0.5),
      2: tail_returns(0.75)
  })
  rl = os.path.join(root, "optim4rl")
  make_workdir(os.path.join(rl, "1"),
               a2c_config("optim4rl", meta_params="/m/1/phi.npz"), {
                   0: tail_returns(0.5),
                   1: tail_returns(1.0)
               },
               values={"optimizer.meta_params": "/m/1/phi.npz"})
  make_workdir(os.path.join(rl, "2"),
               a2c_config("optim4rl", meta_params="/m/2/phi.npz"), {0: tail_returns(0.625)},
               values={"optimizer.meta_params": "/m/2/phi.npz"})
  make_workdir(os.path.join(rl, "3"),
               a2c_config("optim4rl", meta_params="/m/2/phi.npz", seed=10), {10: tail_returns(0.875)},
               values={"optimizer.meta_params": "/m/2/phi.npz"})
  l2l = os.path.join(root, "l2l")
  make_workdir(os.path.join(l2l, "1"), a2c_config("l2lgd2", meta_params="/n/1/phi.npz"), {
      0: tail_returns(-1.0),
      1: tail_returns(-1.0)
  })
  make_workdir(os.path.join(l2l, "2"), a2c_config("l2lgd2", meta_params="/n/2/phi.npz"), {
      0: tail_returns(5.0)[:-3] + [float("nan")] * 3,
      1: tail_returns(5.0)
  })
  return adam, rl, l2l


def test_final_performance_grouping_and_selection(tmp_path):
  adam, rl, l2l = build_sources(str(tmp_path))
  ranked = ranking.load_source("Adam", adam, num_resamples=2000).ranked
  assert [c.label for c in ranked] == ["optimizer.learning_rate=0.001", "optimizer.learning_rate=0.0003"]
  best = ranked[0]
  np.testing.assert_allclose(best.finals, [0.75, 1.0, 1.25])  # mean of the last 20, per seed
  assert best.mean == pytest.approx(1.0) and best.se == pytest.approx(np.std([0.75, 1.0, 1.25]) / np.sqrt(3))
  assert best.ci == stats.bootstrap_ci(best.finals, 0.9, 2000, 0)
  assert best.env_steps == 30 * 1280

  # Equal means: the smaller standard error wins; runs of one configuration are pooled across workdirs.
  ranked = ranking.load_source("Optim4RL", rl).ranked
  assert len(ranked) == 2
  assert ranked[0].label == "optimizer.meta_params=2/phi.npz" and len(ranked[0].runs) == 2
  assert sorted(r.seed for r in ranked[0].runs) == [0, 10]
  assert ranked[0].mean == ranked[1].mean == 0.75 and ranked[0].se < ranked[1].se

  # A diverged configuration ranks last, however good its other runs were.
  ranked = ranking.load_source("L2LGD²", l2l).ranked
  assert ranked[0].mean == -1.0 and ranked[1].ci is None and not np.isfinite(ranked[1].mean)


def test_a_run_moved_aside_is_not_counted_in_a_search_or_a_glob(tmp_path):
  grid = tmp_path / "test_adam_lrs"
  make_workdir(str(grid / "lr0.001"), a2c_config("adam", learning_rate=1e-3), {0: tail_returns(1.0)})
  make_workdir(str(grid / "lr0.003"), a2c_config("adam", learning_rate=3e-3), {0: tail_returns(0.5)})
  # reproduce.py's _move_aside: an older run of lr 0.003 that scored higher, kept beside the new one.
  make_workdir(str(grid / "lr0.003.stale-1"), a2c_config("adam", learning_rate=3e-3), {0: tail_returns(9.0)})
  expected = [str(grid / "lr0.001"), str(grid / "lr0.003")]
  assert ranking.find_workdirs(str(grid)) == expected
  assert ranking.find_workdirs(str(grid / "lr*")) == expected
  ranked = ranking.load_source("Adam", str(grid)).ranked
  assert [(c.label, c.mean) for c in ranked] == [("optimizer.learning_rate=0.001", 1.0),
                                                 ("optimizer.learning_rate=0.003", 0.5)]


def test_ppo_uses_last_two_evaluations_and_missing_seeds(tmp_path):
  cfg = {"env": {"name": "ant"}, "optimizer": {"name": "adam"}, "seed": 0}
  make_workdir(str(tmp_path / "ant"), cfg, {0: [1000.0, 2000.0, 3000.0, 4000.0, 6000.0]}, extra_seeds=[1])
  runs = ranking.load_runs(str(tmp_path / "ant"))
  assert [r.seed for r in runs] == [0, 1] and len(runs[1].returns) == 0  # seed 1 logged nothing
  assert ranking.detect_agent(cfg) == "ppo"
  (best,) = ranking.summarize(runs[:1])
  assert best.finals.tolist() == [5000.0]
  (forced,) = ranking.summarize(runs[:1], agent="a2c")
  assert forced.finals.tolist() == [3200.0]
  (with_missing,) = ranking.summarize(runs)
  assert with_missing.ci is None  # a run without any return is not silently dropped


def test_bootstrap_ci_known_case_through_the_report(tmp_path):
  """20 runs with final 0 or 1 (10 each): the bootstrap mean is Binomial(20, 1/2)/20, whose 5% and 95%
  quantiles are 6/20 and 14/20 (P(X <= 5) = 2.1%, P(X <= 6) = 5.8%), so the 90% CI is [0.3, 0.7]."""
  returns = {s: [float(s % 2)] * 20 for s in range(20)}
  make_workdir(str(tmp_path / "w"), a2c_config("adam"), returns)
  (c,) = ranking.summarize(ranking.load_runs(str(tmp_path / "w")), num_resamples=100000)
  assert c.mean == 0.5
  assert (c.ci.low, c.ci.high) == (pytest.approx(0.3), pytest.approx(0.7))
  assert c.ci.half_width == pytest.approx(0.2)


def test_write_report_panels_and_table1(tmp_path):
  adam, rl, l2l = build_sources(str(tmp_path / "runs"))
  sdl_with = make_workdir(str(tmp_path / "runs" / "sdl_with"), a2c_config("optim4rl", env="small_dense_long"),
                          {s: tail_returns(30.0 + s) for s in range(3)})
  sdl_without = make_workdir(str(tmp_path / "runs" / "sdl_wo"),
                             a2c_config("optim4rl", env="small_dense_long", meta_params="/x"),
                             {s: tail_returns(28.0 + s) for s in range(3)})
  out = str(tmp_path / "report")
  md_path = report.write_report(out,
                                panels=[f"catch:Adam={adam},Optim4RL={rl},L2LGD²={l2l}", f"figure3/bdl:Adam={adam}"],
                                table1=[f"sdl:with={sdl_with},without={sdl_without}"],
                                num_resamples=2000,
                                num_points=50)
  md = open(md_path).read()
  for name in ("figure3_catch.png", "figure3_big_dense_long.png", "figure3.png"):
    assert os.path.getsize(os.path.join(out, name)) > 5000, name
    assert f"({name})" in md
  # Our selected numbers beside the paper's stated outcome.
  assert "| Adam | optimizer.learning_rate=0.001 (best of 2) | 3 | 38,400 | 1.00 ± " in md
  assert "| L2LGD² | " in md and "| fails |" in md
  assert "faster than Adam/RMSProp" in md
  assert "diverged" in md  # the ranking lists the diverged configuration
  # Table 1: ours and the paper's numbers.
  assert "| With pipeline training (paper) | 32.22 ± 0.52 | 23.10 ± 0.31 | 6421 ± 355 | 8440 ± 364 |" in md
  assert "| W.o. pipeline training (paper) | 30.64 ± 0.69 | 22.47 ± 0.51 | 5038 ± 235 | 6557 ± 1055 |" in md
  assert "| With pipeline training (ours) | 31.00 ± " in md and "| W.o. pipeline training (ours) | 29.00 ± " in md
  data = json.load(open(os.path.join(out, "report.json")))
  assert data["table1"]["with/small_dense_long"]["mean"] == pytest.approx(31.0)
  assert data["panels"][0]["sources"][1]["selected"]["configuration"] == "optimizer.meta_params=2/phi.npz"


def test_spec_errors(tmp_path):
  with pytest.raises(ValueError, match="LABEL=PATH"):
    report.parse_panel("catch:Adam")
  with pytest.raises(ValueError, match="TASK must be one of"):
    report.parse_table1("catch:with=a,without=b")
  assert report.parse_table1("bdl:with=a,wo=b") == ("big_dense_long", {"with": "a", "without": "b"})
  assert report.parse_panel("figure4/ant:Optim4RL=x") == ("figure4", "ant", [("Optim4RL", "x")])
  with pytest.raises(ValueError, match="no workdir with returns.csv"):
    ranking.load_runs(str(tmp_path))


def test_command(tmp_path):
  """optim4rl-report (launch/report.py) in this process: the panel's PNG and report.md; a PATH without runs
  is one line and exit 2."""
  adam, _, _ = build_sources(str(tmp_path / "runs"))
  out = str(tmp_path / "rep")
  res = run_command(report_command, f"--out={out}", f"--panel=catch:Adam={adam}", "--resamples=500", "--num_points=20")
  assert res.returncode == 0, res.stderr
  assert res.stdout.strip() == f"wrote {os.path.join(out, 'report.md')}"
  assert os.path.exists(os.path.join(out, "figure3_catch.png"))
  assert "| Adam |" in open(os.path.join(out, "report.md")).read()
  res = run_command(report_command, f"--out={out}", f"--panel=catch:Adam={tmp_path / 'nothing'}")
  assert res.returncode == 2 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
