"""BUILD lists every module and every test file, so it cannot rot."""
import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rules():
  """Parses BUILD (Starlark is Python-syntax here) into [(kind, name, srcs)]."""
  tree = ast.parse(open(os.path.join(ROOT, "BUILD")).read())
  rules = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      kwargs = {k.arg: k.value for k in node.keywords}
      srcs = [ast.literal_eval(e) for e in kwargs["srcs"].elts] if "srcs" in kwargs else []
      name = ast.literal_eval(kwargs["name"]) if "name" in kwargs else None
      rules.append((node.func.id, name, srcs))
  return rules


def test_every_module_is_in_a_py_library_or_binary():
  listed = {s for kind, _, srcs in _rules() if kind in ("py_library", "py_binary") for s in srcs}
  modules = [os.path.relpath(p, ROOT) for pattern in ("optim4rl_tf/**/*.py", "configs/*.py", "launch/*.py")
             for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)]
  missing = sorted(m for m in modules if m not in listed)
  assert not missing, f"add these to BUILD: {missing}"
  stale = sorted(s for s in listed if not os.path.exists(os.path.join(ROOT, s)))
  assert not stale, f"BUILD lists files that do not exist: {stale}"


def test_every_package_has_a_py_library():
  names = {name for kind, name, _ in _rules() if kind == "py_library"}
  for init in glob.glob(os.path.join(ROOT, "optim4rl_tf/**/__init__.py"), recursive=True):
    package = os.path.relpath(os.path.dirname(init), ROOT).replace("/", "_")
    assert package in names, f"no py_library named {package!r} in BUILD"


def test_every_test_file_has_a_py_test():
  tests = {srcs[0] for kind, _, srcs in _rules() if kind == "py_test"}
  files = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests/test_*.py"))}
  assert files - tests == set(), f"add py_test rules for: {sorted(files - tests)}"
  assert all(re.match(r"tests/test_\w+\.py$", t) for t in tests)
