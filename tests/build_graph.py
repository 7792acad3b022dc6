"""BUILD as a function of the code: one target per module, deps read from each file's imports.

``python tests/build_graph.py`` rewrites BUILD from the tree; ``tests/test_build.py`` fails when BUILD and
the imports disagree (a missing or stale dependency, an unlisted file), so BUILD cannot rot.

Targets: a ``py_library`` per module of ``optim4rl_tf/`` and ``configs/`` (name: the path with ``/`` and
``.py`` turned into ``_``), a ``py_binary`` per launcher in ``launch/`` and per script in ``examples/`` (named
``examples_<script>``), a ``py_test`` per ``tests/test_*.py``
and a ``py_library`` for ``tests/conftest.py`` carrying the golden data. Deps are every first-party module
a file imports (function-level imports included) and the PyPI distribution of every third-party one.
"""

import ast
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Top-level import name -> the PyPI distribution that provides it (as rules_python's pip_parse names it).
PYPI = {
    "tensorflow": "tensorflow_cpu",
    "keras": "keras",
    "numpy": "numpy",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "absl": "absl_py",
    "ml_collections": "ml_collections",
    "gymnasium": "gymnasium",
    "tensorflow_probability": "tensorflow_probability",
    "brax": "brax",
    "jax": "jax",
    "jaxlib": "jaxlib",
    "sklearn": "scikit_learn",
    "pytest": "pytest",
    "ray": "ray",
    "mujoco": "mujoco",
    "flax": "flax",
    "optax": "optax",
    "tensorboard": "tensorboard",
    "tf_keras": "tf_keras",
    "xdist": "pytest_xdist",
}
FIRST_PARTY = ("optim4rl_tf", "launch", "examples", "conftest", "build_graph")


def source_files():
  """Repository-relative paths of every Python file that BUILD must cover."""
  patterns = ("optim4rl_tf/**/*.py", "configs/*.py", "launch/*.py", "examples/*.py", "tests/*.py")
  files = set()
  for pattern in patterns:
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
      files.add(os.path.relpath(path, ROOT))
  return sorted(f for f in files if f != "launch/__init__.py")


def module_of(path):
  """'optim4rl_tf/agents/a2c.py' -> 'optim4rl_tf.agents.a2c'; package __init__ -> the package name."""
  parts = path[:-3].split("/")
  if parts[-1] == "__init__":
    parts = parts[:-1]
  if parts[0] == "tests":
    parts = parts[1:]
  if parts[0] == "configs":  # installed as optim4rl_tf.configs (pyproject.toml's package-dir)
    parts = ["optim4rl_tf"] + parts
  return ".".join(parts)


def target_of(path):
  if path.startswith("launch/") or path.startswith("tests/test_"):
    return os.path.basename(path)[:-3]
  if path.startswith("tests/"):
    return os.path.basename(path)[:-3]
  return path[:-3].replace("/__init__", "").replace("/", "_")


def from_base(node, package):
  """The absolute module of an ``ast.ImportFrom`` node (relative levels resolved against ``package``)."""
  base = node.module or ""
  if node.level:
    anchor = package.split(".")
    anchor = anchor[:len(anchor) - node.level + 1]
    base = ".".join(anchor + ([base] if base else []))
  return base


def imports_of(path):
  """The absolute module names a file imports (relative imports resolved)."""
  tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
  package = module_of(path) if path.endswith("__init__.py") else module_of(path).rpartition(".")[0]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = from_base(node, package)
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  return names


def expected_deps(path, modules):
  """Sorted deps of one file: ':target' for first-party modules, '@pypi//name' for third-party ones."""
  first, third = set(), set()
  for name in imports_of(path):
    top = name.split(".")[0]
    if top in FIRST_PARTY:
      if name in modules and modules[name] != path:
        first.add(":" + target_of(modules[name]))
    elif top in PYPI:
      third.add(f"@pypi//{PYPI[top]}")
    elif top not in sys.stdlib_module_names and top != "__future__":
      raise ValueError(f"{path} imports {top!r}: add its PyPI name to PYPI in tests/build_graph.py")
  return sorted(first) + sorted(third)


def expected_rules():
  """[(kind, name, srcs, deps, data)] for the whole tree."""
  files = source_files()
  modules = {module_of(f): f for f in files}
  rules = []
  for path in files:
    if path.startswith("launch/") or path.startswith("examples/"):
      kind = "py_binary"
    elif path.startswith("tests/test_"):
      kind = "py_test"
    else:
      kind = "py_library"
    data = []
    if path == "tests/conftest.py":
      data = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests/data/*.npz")))
    elif path.startswith("optim4rl_tf/pretrained/"):
      data = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "optim4rl_tf/pretrained/*.npz")))
    rules.append((kind, target_of(path), [path], expected_deps(path, modules), data))
  return rules


def parse_build(text):
  """[(kind, name, srcs, deps, data)] read from BUILD (Starlark is Python syntax here)."""
  rules = []
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("py_"):
      kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      rules.append((node.func.id, kw.get("name"), kw.get("srcs", []), kw.get("deps", []), kw.get("data", [])))
  return rules


def render(rules):
  out = [
      '# Generated by `python tests/build_graph.py` from the imports of each file; tests/test_build.py',
      '# fails when it is out of date. Third-party deps are the pins of requirements.txt (pip_parse "pypi").', '',
      'load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")', '',
      'package(default_visibility = ["//visibility:public"])', ''
  ]
  for kind, name, srcs, deps, data in rules:
    out.append(f"{kind}(")
    out.append(f'    name = "{name}",')
    out.append(f"    srcs = {srcs!r},".replace("'", '"'))
    if data:
      out.append("    data = [" + ", ".join(f'"{d}"' for d in data) + "],")
    if deps:
      out.append("    deps = [")
      out.extend(f'        "{d}",' for d in deps)
      out.append("    ],")
    out.append(")")
    out.append("")
  return "\n".join(out)


if __name__ == "__main__":
  text = render(expected_rules())
  with open(os.path.join(ROOT, "BUILD"), "w") as f:
    f.write(text)
  print(f"BUILD: {text.count(chr(10) + 'py_')} targets")
