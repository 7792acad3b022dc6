"""``launch/benchmark.py optimizer`` (optim4rl_tf/benchmarks/optimizer.py): the Keras face against Adam with
jit_compile off and on, the load printed beside the figures; bad flags are one error naming the flag."""

import re

import pytest

from optim4rl_tf.benchmarks import optimizer as bench


def test_prints_each_optimizer_against_adam_with_the_load(capsys):
  assert bench.run(["--names=optim4rl_headfree", "--jit=off", "--rounds=1"]) == 0
  out = capsys.readouterr().out
  assert "load " in out and "others used" in out
  sections = out.split("jit_compile=")[1:]
  assert [s.split()[0] for s in sections] == ["False"]
  for section in sections:
    rows = {line.split()[0]: line.split() for line in section.splitlines()[1:] if "ms/step" in line}
    assert sorted(rows) == ["adam", "optim4rl_headfree"]
    assert rows["adam"][3] == "1.00x" and float(rows["optim4rl_headfree"][1]) > 0


def test_the_same_weights_train_the_same_with_jit_off_and_on():
  """What is timed is the same computation: one epoch from seed 0 gives equal weights to float32 rounding."""
  x, y = bench._data()  # pylint: disable=protected-access
  off, on = (bench.compiled_model(bench.CANDIDATES["optim4rl_headfree"], jit, x, y) for jit in (False, True))
  for a, b in zip(off.get_weights(), on.get_weights()):
    assert a.shape == b.shape
    assert abs(a - b).max() <= 1e-4 * max(1.0, abs(a).max())


@pytest.mark.parametrize("args,match", [(["--names=sgd"], "unknown optimizer.*sgd"), (["--jit=maybe"], "--jit"),
                                        (["--rounds=0"], "--rounds")])
def test_bad_flags_are_one_error_naming_the_flag(args, match, capsys):
  with pytest.raises(SystemExit) as e:
    bench.run(args)
  assert e.value.code == 2
  assert re.search(match, capsys.readouterr().err)
