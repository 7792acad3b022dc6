"""optim4rl_tf.utils.workdir: lock, config check, atomic write."""
import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from optim4rl_tf.utils import workdir as wd


def test_lock_refuses_a_second_process(tmp_path):
  d = str(tmp_path / "w")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with wd.lock(d):
    assert open(os.path.join(d, ".lock")).read().strip() == str(os.getpid())
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {root!r})
        from optim4rl_tf.utils import workdir
        try:
          with workdir.lock({d!r}):
            print("GOT")
        except workdir.WorkdirError as e:
          print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         timeout=60).stdout.strip()
    assert out == f"workdir {d} is in use by another process (pid {os.getpid()})"
  # Released on exit: can be taken again.
  with wd.lock(d):
    pass


def test_lock_released_on_exception(tmp_path):
  d = str(tmp_path / "w")
  with pytest.raises(RuntimeError):
    with wd.lock(d):
      raise RuntimeError("boom")
  with wd.lock(d):
    pass


def test_check_config_names_differing_fields(tmp_path):
  d = str(tmp_path)
  wd.check_config(d, {"meta_lr": 0.001})  # no config.json yet: nothing to compare
  old = {"meta_lr": 0.001, "seed": 0, "num_iterations": 10, "agent": {"mlp_dims": [8, 8]}}
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(old, f)
  wd.check_config(d, dict(old))
  wd.check_config(d, {**old, "num_iterations": 20}, ignore=("num_iterations",))
  wd.check_config(d, {**old, "agent": {"mlp_dims": (8, 8)}})  # tuple == stored list
  with pytest.raises(wd.WorkdirError) as e:
    wd.check_config(d, {**old, "meta_lr": 0.01, "seed": 1})
  msg = str(e.value)
  assert msg == (f"workdir {d} was made with a different config: meta_lr 0.001 -> 0.01, "
                 "seed 0 -> 1; use a new --workdir")
  with pytest.raises(wd.WorkdirError, match=r"agent\.mlp_dims \[8, 8\] -> \[16\]"):
    wd.check_config(d, {**old, "agent": {"mlp_dims": [16]}})
  with pytest.raises(wd.WorkdirError):
    wd.check_config(d, {**old, "agent": {"mlp_dims": [16]}}, ignore=("num_iterations",))
  wd.check_config(d, {**old, "agent": {"mlp_dims": [16]}}, ignore=("agent",))
  assert "\n" not in msg
  assert json.load(open(os.path.join(d, "config.json"))) == old  # did not write


def test_atomic_write_and_disk_full(tmp_path, monkeypatch):
  p = tmp_path / "f.json"
  wd.atomic_write(p, "one")
  wd.atomic_write(str(p), b"two")
  assert p.read_text() == "two"

  real_fdopen = os.fdopen

  class Full:

    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *a):
      self.f.close()

    def write(self, _):
      raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(wd.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
  with pytest.raises(OSError) as e:
    wd.atomic_write(p, "three")
  assert e.value.errno == errno.ENOSPC
  assert "could not write" in str(e.value) and "\n" not in str(e.value)
  assert p.read_text() == "two"
  assert sorted(os.listdir(tmp_path)) == ["f.json"]
