"""The repository is self-contained: no tracked file names a path outside it.

A fresh clone has nothing beside it, so code, tests, configs and docs must not read data or code through an
absolute path on the author's machine or a relative path that climbs out of the checkout."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_SUFFIXES = (".py", ".md", ".sh", ".toml", ".txt", ".cfg", ".ini", ".yaml", ".yml", ".json")
# Home-like roots of a developer's machine (system paths such as /usr/lib or /proc are fine).
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|mnt|srv|scratch|data|opt)/[\w.-]")
CLIMB = re.compile(r"""(?:['"(\s=]|^)((?:\.\./)+[\w.-]+)""")
JOIN_UP = re.compile(r"""os\.path\.join\([^)]*['"]\.\.['"]""")
PRIVATE = re.compile("sh" + "ared/refer" + "ence|implementation" + "-notes")  # split: no literal here


def _files():
  out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT,
                       capture_output=True,
                       text=True,
                       check=True).stdout.split()
  return [f for f in out if f.endswith(TEXT_SUFFIXES) or os.path.basename(f) in ("BUILD", "run")]


def offending_lines(path, text):
  """[(line number, reason)] for every mention of a path outside the repository in one file."""
  found = []
  folder = os.path.dirname(os.path.join(ROOT, path))
  for n, line in enumerate(text.splitlines(), 1):
    if ABSOLUTE.search(line):
      found.append((n, "absolute path on a developer machine"))
    if PRIVATE.search(line):
      found.append((n, "a file outside the repository"))
    if JOIN_UP.search(line):
      found.append((n, "os.path.join climbing with '..'"))
    for rel in CLIMB.findall(line):
      target = os.path.normpath(os.path.join(folder, rel))
      if not (target + os.sep).startswith(ROOT + os.sep):
        found.append((n, f"relative path {rel!r} leaves the repository"))
  return found


def test_no_file_names_a_path_outside_the_repository():
  problems = []
  for path in _files():
    if path == "tests/test_self_contained.py":
      continue
    try:
      text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    except (UnicodeDecodeError, FileNotFoundError):
      continue
    problems += [f"{path}:{n}: {why}" for n, why in offending_lines(path, text)]
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line", [
    'GOLDEN = "/work/' + 'shared/golden/x.npz"',
    'p = os.path.join(ROOT, "..", "sh' + 'ared", "x")',
    'data = "../../../outside/file.npz"',
    "see notes in /home/someone/project/x.md",
])
def test_the_checker_catches_outside_paths(line):
  assert offending_lines("tests/example.py", line)


@pytest.mark.parametrize("line", [
    'GOLDEN = os.path.join(GOLDEN_DIR, "a2c_loss_golden.npz")', '"/usr/lib/x86_64-linux-gnu"',
    "--workdir=/tmp/a2c_catch", "see ../configs/a2c.py"
])
def test_the_checker_allows_paths_inside_the_repository(line):
  assert not offending_lines("tests/example.py", line)
