"""The whole tree has one code style: pyproject.toml's [tool.yapf] (Google style, 2-space indent).

Reformat with ``.venv/bin/yapf -i -r -p optim4rl_tf configs launch tests examples``."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("optim4rl_tf", "configs", "launch", "tests", "examples")


def python_files():
  files = []
  for folder in FOLDERS:
    for base, dirs, names in os.walk(os.path.join(ROOT, folder)):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      files += [os.path.join(base, n) for n in names if n.endswith(".py")]
  return sorted(files)


@pytest.mark.slow(20)
def test_every_python_file_is_formatted_with_the_project_style():
  pytest.importorskip("yapf")
  files = python_files()
  assert len(files) > 50
  proc = subprocess.run([sys.executable, "-m", "yapf", "--diff", "--parallel", *files],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        check=False)
  drifted = sorted({
      line[4:].split("\t")[0].replace(" (original)", "").strip()
      for line in proc.stdout.splitlines()
      if line.startswith("--- ")
  })
  assert proc.returncode == 0 and not drifted, (
      f"{len(drifted)} file(s) differ from pyproject.toml's [tool.yapf] style: {', '.join(drifted[:10])}; "
      "run `yapf -i -r -p optim4rl_tf configs launch tests examples`")


def test_the_style_check_sees_a_drifted_file(tmp_path):
  yapf_api = pytest.importorskip("yapf.yapflib.yapf_api")
  style = os.path.join(ROOT, "pyproject.toml")
  bad = "def f( x ):\n    return x\n"
  good, changed = yapf_api.FormatCode(bad, style_config=style)
  assert changed and good == "def f(x):\n  return x\n"
