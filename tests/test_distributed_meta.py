"""Meta-training across W workers with tf.distribute (optim4rl_tf/meta/workers.py, launch/meta_train.py):
a worker's units get exactly the randomness they have in one process, units that W does not divide are one
error, and 2 worker processes on 127.0.0.1 end with the phi of one process (also across a restart), the
chief alone writing the workdir; a worker that dies stops the other with one line, and all of them started
again end with the phi of one uninterrupted process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from optim4rl_tf.configs import meta_a2c as meta_a2c_configs
from optim4rl_tf.meta import estimators
from optim4rl_tf.meta import meta_a2c
from optim4rl_tf.meta import run
from optim4rl_tf.meta import trainer as trainer_lib
from optim4rl_tf.meta import workers
from optim4rl_tf.optimizers import meta_params
from optim4rl_tf.meta import meta_train_command  # noqa: E402
from conftest import run_command  # noqa: E402
from conftest import set_fields  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {
    "num_units": 4,
    "reset_interval": 2,
    "checkpoint_every": 2,
    "rollout_steps": 5,
    "inner_updates": 2
}  # catch, tiny graphs: resets at t = 1, 2, 3, ...


def _config(**fields):
  return set_fields(meta_a2c_configs.get_config("catch"), **dict(SMALL, **fields))


def test_unit_slices_and_tf_config():
  assert workers.unit_slice(6, 3, 2) == workers.UnitSlice(4, 2, 6)
  with pytest.raises(ValueError, match="num_units=6, which 4 workers cannot split evenly"):
    workers.unit_slice(6, 4, 0)
  s = workers.UnitSlice(1, 2, 4)
  x = tf.reshape(tf.range(24), [2, 12])  # 3 entries per unit on axis 1
  np.testing.assert_array_equal(s.take(x, axis=1), x[:, 3:9])
  np.testing.assert_array_equal(s.take(s.pad(s.take(x, 1), 1), 1), s.take(x, 1))
  assert workers.parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}') == (
      2, 1)
  with pytest.raises(ValueError, match="only a cluster.worker list"):
    workers.parse_tf_config('{"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", '
                            '"index": 0}}')
  with pytest.raises(ValueError, match="task index 2 is not one of the 2 workers"):
    workers.parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}')
  with pytest.raises(ValueError, match="TF_CONFIG is not a cluster.worker list"):
    workers.parse_tf_config("{oops")


def test_a_workers_units_get_the_randomness_of_one_process():
  """Each half of the units (MetaA2C.for_units) starts and rolls out exactly as in one process."""
  config = _config(num_units=6)
  estimator, core, phi, _ = trainer_lib.build(config)
  problem = estimator[0].problem
  est = estimator[0]
  key = tf.constant([5, 9])
  whole = est.init_units(core, key)
  axes = est.unit_axes(core)
  halves = [est.for_units(workers.unit_slice(6, 2, k)) for k in range(2)]
  parts = [h.init_units(core, key) for h in halves]
  for k, part in enumerate(parts):
    expected = workers.map_units(workers.unit_slice(6, 2, k).take, whole, axes)
    tf.nest.map_structure(np.testing.assert_array_equal, part, expected)
  opt = estimators.FeatureMajorOptimizer(core, {k: tf.constant(v) for k, v in phi.items()})
  step = problem.inner_step(opt, whole, tf.constant([1, 2]))
  for k, h in enumerate(halves):
    part = h.problem.inner_step(opt, parts[k], tf.constant([1, 2]))
    expected = workers.map_units(workers.unit_slice(6, 2, k).take, step.units, axes)
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), part.units, expected)


def test_units_that_the_workers_cannot_split_are_one_error(tmp_path):
  stub = types.SimpleNamespace(unit_slice=lambda n, name: workers.unit_slice(n, 4, 0, name))
  with pytest.raises(ValueError, match=r"inner problem 'catch' has num_units=6, which 4 workers cannot split"):
    trainer_lib.MetaTrainer(_config(num_units=6), str(tmp_path / "run"), workers=stub)
  assert not os.path.exists(tmp_path / "run")


def test_a_bad_tf_config_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 3}}')
  proc = run_command(meta_train_command, f"--config={ROOT}/configs/meta_a2c.py:catch", f"--workdir={tmp_path / 'run'}")
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2 and errors == [
      "error: TF_CONFIG: task index 3 is not one of the 1 workers of cluster.worker"
  ], proc.stderr


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _start_workers(workdir, *flags, num_workers=2):
  """``launch/meta_train.py`` as ``num_workers`` processes on 127.0.0.1 (TF_CONFIG each)."""
  hosts = [f"127.0.0.1:{p}" for p in _free_ports(num_workers)]
  procs = []
  for i in range(num_workers):
    env = dict(os.environ,
               TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({
                   "cluster": {
                       "worker": hosts
                   },
                   "task": {
                       "type": "worker",
                       "index": i
                   }
               }))
    procs.append(
        subprocess.Popen([
            sys.executable,
            os.path.join(ROOT, "launch", "meta_train.py"), f"--config={ROOT}/configs/meta_a2c.py:catch",
            f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in SMALL.items()], *flags
        ],
                         cwd=ROOT,
                         env=env,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         text=True))
  return procs


def _finish(procs, timeout=600):
  out = [p.communicate(timeout=timeout) for p in procs]
  return [types.SimpleNamespace(returncode=p.returncode, stdout=o, stderr=e) for p, (o, e) in zip(procs, out)]


def _iterations_in_checkpoint(workdir):
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  return int(reader.get_tensor("iteration/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow(70)
def test_a_dead_worker_stops_the_other_with_one_line_and_a_restart_ends_with_the_phi_of_one_process(tmp_path):
  """A worker is killed mid-run: the chief stops with one ``error:`` line. All workers started again resume
  from the last checkpoint and end with the phi of one uninterrupted process; the chief alone writes the
  workdir, in one process's layout, so one process resumes the 2-worker run."""
  two = str(tmp_path / "two")
  procs = _start_workers(two, "--config.num_iterations=100000", "--config.checkpoint_every=1")
  deadline = time.time() + 300
  while not os.path.exists(os.path.join(two, "phi.npz")) and time.time() < deadline:
    time.sleep(0.1)  # the workers are past their first iteration
  procs[1].send_signal(signal.SIGKILL)
  chief = _finish(procs[:1], timeout=240)[0]
  procs[1].wait()
  errors = [line for line in chief.stderr.splitlines() if line.startswith("error:")]
  assert chief.returncode == 1 and len(errors) == 1, chief.stderr[-3000:]
  assert errors[0].startswith("error: lost contact with another worker") and "start them all again" in errors[0]

  done_at = _iterations_in_checkpoint(two)
  total = done_at + 2
  done = _finish(_start_workers(two, f"--config.num_iterations={total}", "--config.checkpoint_every=1"))
  assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
  assert done[1].stdout == ""  # the chief alone reports
  assert "resuming" in done[0].stdout and f"at outer iteration {done_at}/{total}" in done[0].stdout, done[0].stdout
  one = str(tmp_path / "one")
  assert run.meta_train(_config(num_iterations=total), one, console=False)["num_workers"] == 1
  expected, got = (meta_params.load(os.path.join(d, "phi.npz"))[1] for d in (one, two))
  assert sorted(expected) == sorted(got)
  for k in expected:
    scale = max(float(np.max(np.abs(expected[k]))), 1e-30)
    assert float(np.max(np.abs(got[k] - expected[k]))) <= 1e-5 * scale, (k, done_at)
  summary = json.load(open(os.path.join(two, "summary.json")))
  assert summary["num_workers"] == 2 and summary["iterations"] == total and summary["skipped"] == 0
  # The chief writes what one process writes (no file of worker 1), and the checkpoint has one process's layout.
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))
  trainer = trainer_lib.MetaTrainer(_config(num_iterations=total), two)  # one process resumes the 2-worker run
  assert int(trainer.iteration.numpy()) == total
