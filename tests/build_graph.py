"""BUILD as a function of the code: one target per module, deps read from each file's imports.

``python tests/build_graph.py`` rewrites BUILD from the tree; ``tests/test_build.py`` fails when BUILD and
the imports disagree (a missing or stale dependency, an unlisted file), so BUILD cannot rot.

Targets: a ``py_library`` per module of ``optim4rl_tf/`` and ``configs/`` (name: the path with ``/`` and
``.py`` turned into ``_``), a ``py_binary`` per launcher in ``launch/`` and per script in ``examples/`` (named
``examples_<script>``), a ``py_test`` per ``tests/test_*.py``
and a ``py_library`` for ``tests/conftest.py`` carrying the golden data. Deps are every first-party module
a file imports (function-level imports included) and the PyPI distribution of every third-party one.

It builds offline with Bazel 4 (Debian's ``bazel-bootstrap``) and native rules: each PyPI distribution is an
empty ``py_library`` in ``third_party/pypi/BUILD`` (also written here), provided at run time by the project's
``.venv``, which is the Python toolchain (``third_party/python``). Each ``py_test`` runs its file through
pytest (``tests/bazel_pytest_main.py``, ``-m "not slow"`` unless ``--test_env=BAZEL_PYTEST_ALL=1``); a file
whose tests are all ``@pytest.mark.slow`` is tagged ``slow``, so ``bazel test
--test_tag_filters=-slow,-requires-checkout //...`` is the fast tier (``requires-checkout``: reads_the_checkout).
"""

import ast
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Top-level import name -> the PyPI distribution that provides it (the pip name, lower case, "-" -> "_"); the
# target //third_party/pypi:<name> stands for it.
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
    "h5py": "h5py",
}
FIRST_PARTY = ("optim4rl_tf", "launch", "examples", "conftest", "build_graph")
PYPI_PACKAGE = "//third_party/pypi"
# The shared main of every py_test (runs pytest on the test file); listed in the srcs of each py_test.
PYTEST_MAIN = "tests/bazel_pytest_main.py"
# Files the tests read besides their imports and golden data: pytest's configuration (pyproject.toml's
# pythonpath and markers) and the checked-in inputs (configs, launchers run as processes, the lock, BUILD).
TEST_DATA = ":test_inputs"
TEST_INPUT_GLOBS = ("pyproject.toml", "requirements.txt", "BUILD", ".gitignore", "configs/**", "launch/**",
                    "examples/**", "docs/**", "results/**", "optim4rl_tf/**", "tests/**")


def source_files():
  """Repository-relative paths of every Python file that BUILD must cover."""
  patterns = ("optim4rl_tf/**/*.py", "configs/*.py", "launch/*.py", "examples/*.py", "tests/*.py")
  files = set()
  for pattern in patterns:
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
      files.add(os.path.relpath(path, ROOT))
  return sorted(f for f in files if f not in ("launch/__init__.py", PYTEST_MAIN))


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
  """Sorted deps of one file: ':target' for first-party modules, '//third_party/pypi:name' for third-party ones."""
  first, third = set(), set()
  for name in imports_of(path):
    top = name.split(".")[0]
    if top in FIRST_PARTY or top in modules:  # (a test may import another test module: tests/ is on sys.path)
      if name in modules and modules[name] != path:
        first.add(":" + target_of(modules[name]))
    elif top in PYPI:
      third.add(f"{PYPI_PACKAGE}:{PYPI[top]}")
    elif top not in sys.stdlib_module_names and top != "__future__":
      raise ValueError(f"{path} imports {top!r}: add its PyPI name to PYPI in tests/build_graph.py")
  return sorted(first) + sorted(third)


def _is_slow_marker(node):
  """``pytest.mark.slow`` or ``pytest.mark.slow(SECONDS)`` (also inside a list of marks)."""
  if isinstance(node, ast.Call):
    node = node.func
  if isinstance(node, (ast.List, ast.Tuple)):
    return any(_is_slow_marker(e) for e in node.elts)
  return isinstance(node, ast.Attribute) and node.attr == "slow"


def slow_tests(path):
  """(any, all): whether any / every test function of a test file is marked ``slow``."""
  tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
  module_slow = any(
      isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                        for t in n.targets) and _is_slow_marker(n.value)
      for n in tree.body)
  marks = []
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
      marks.append(module_slow or any(_is_slow_marker(d) for d in node.decorator_list))
    elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
      class_slow = module_slow or any(_is_slow_marker(d) for d in node.decorator_list)
      for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
          marks.append(class_slow or any(_is_slow_marker(d) for d in item.decorator_list))
  return any(marks), bool(marks) and all(marks)


def reads_the_checkout(path):
  """Whether a test runs ``git`` (a list literal starting with "git"): it checks the git checkout itself, which
  Bazel's runfiles are not, so its target is tagged ``requires-checkout`` (run it with pytest)."""
  tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
  return any(
      isinstance(n, ast.List) and n.elts and isinstance(n.elts[0], ast.Constant) and n.elts[0].value == "git"
      for n in ast.walk(tree))


def expected_rules():
  """[(kind, name, srcs, deps, data, attrs)] for the whole tree (attrs: the other attributes, a dict)."""
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
      data = sorted(
          os.path.relpath(p, ROOT)
          for ext in ("npz", "json")  # the files and their cards
          for p in glob.glob(os.path.join(ROOT, f"optim4rl_tf/pretrained/*.{ext}")))
    srcs, deps, attrs = [path], expected_deps(path, modules), {}
    if kind == "py_binary":
      attrs = {"main": path}
    if kind == "py_test":
      srcs.append(PYTEST_MAIN)
      deps = sorted(set(deps) | set(expected_deps(PYTEST_MAIN, modules)), key=lambda d: (d.startswith("//"), d))
      data = [TEST_DATA]
      attrs = {"main": PYTEST_MAIN, "args": [path]}
      any_slow, all_slow = slow_tests(path)
      tags = (["requires-checkout"] if reads_the_checkout(path) else []) + (["slow"] if all_slow else [])
      if tags:
        attrs["tags"] = tags
      if any_slow:
        attrs["timeout"] = "long"
    rules.append((kind, target_of(path), srcs, deps, data, attrs))
  return merge_cycles(rules)


def import_cycles(rules):
  """The groups of targets that import each other (strongly connected, 2 or more; Python allows such cycles
  through function-level imports, Bazel does not), each sorted, found by Tarjan's algorithm."""
  graph = {name: [d[1:] for d in deps if d.startswith(":")] for _, name, _, deps, _, _ in rules}
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, []):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while not group or group[-1] != v:
        group.append(stack.pop())
        on_stack.discard(group[-1])
      if len(group) > 1:
        cycles.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(cycles)


def merge_cycles(rules):
  """One py_library per import cycle, named after its first module (srcs, deps and data of all of them); the
  other modules of the cycle become aliases of it (expected_aliases), so that their dependents keep their labels."""
  by_name = {rule[1]: rule for rule in rules}
  merged = {}
  for group in import_cycles(rules):
    members = [by_name[name] for name in group]
    if any(kind != "py_library" for kind, *_ in members):
      raise ValueError(f"import cycle through a binary or a test: {group}")
    inside = {":" + name for name in group}
    deps = sorted({d for m in members for d in m[3]} - inside, key=lambda d: (d.startswith("//"), d))
    data = sorted({d for m in members for d in m[4]})
    merged[group[0]] = ("py_library", group[0], sorted(s for m in members for s in m[2]), deps, data, {})
    merged.update({name: None for name in group[1:]})
  return [merged.get(rule[1], rule) for rule in rules if merged.get(rule[1], rule) is not None]


def expected_aliases(rules=None):
  """{module target: the target of its import cycle} for the modules merge_cycles folded into another."""
  rules = expected_rules() if rules is None else rules
  aliases = {}
  for _, name, srcs, _, _, _ in rules:
    for src in srcs[1:]:
      if src != PYTEST_MAIN:
        aliases[target_of(src)] = name
  return aliases


def parse_aliases(text):
  """{name: actual target} of BUILD's alias rules."""
  aliases = {}
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "alias":
      kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      aliases[kw["name"]] = kw["actual"].lstrip(":")
  return aliases


def pypi_distributions():
  return sorted(set(PYPI.values()))


RULE_ATTRS = ("name", "srcs", "deps", "data")


def parse_build(text):
  """[(kind, name, srcs, deps, data, attrs)] read from BUILD (Starlark is Python syntax here)."""
  rules = []
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("py_"):
      kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      attrs = {k: v for k, v in kw.items() if k not in RULE_ATTRS}
      rules.append((node.func.id, kw.get("name"), kw.get("srcs", []), kw.get("deps", []), kw.get("data", []), attrs))
  return rules


def _list(values):
  return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def render(rules):
  out = [
      "# Generated by `python tests/build_graph.py` from the imports of each file; tests/test_build.py",
      "# fails when it is out of date. Native Bazel 4 rules; third-party deps are //third_party/pypi (the .venv).",
      "",
      'package(default_visibility = ["//visibility:public"])',
      "",
      "# What the tests read besides imports: pytest's configuration and the checked-in inputs.",
      "filegroup(",
      f'    name = "{TEST_DATA[1:]}",',
      "    srcs = glob(",
      "        [",
  ]
  out.extend(f'            "{g}",' for g in TEST_INPUT_GLOBS)
  out.extend([
      "        ],",
      '        exclude = ["**/__pycache__/**"],',
      f'    ) + ["{PYPI_PACKAGE}:BUILD"],',
      ")",
      "",
  ])
  for kind, name, srcs, deps, data, attrs in rules:
    out.append(f"{kind}(")
    out.append(f'    name = "{name}",')
    out.append(f"    srcs = {_list(srcs)},")
    if "main" in attrs:
      out.append(f'    main = "{attrs["main"]}",')
    if "args" in attrs:
      out.append(f"    args = {_list(attrs['args'])},")
    if data:
      out.append(f"    data = {_list(data)},")
    if "tags" in attrs:
      out.append(f"    tags = {_list(attrs['tags'])},")
    if "timeout" in attrs:
      out.append(f'    timeout = "{attrs["timeout"]}",')
    if deps:
      out.append("    deps = [")
      out.extend(f'        "{d}",' for d in deps)
      out.append("    ],")
    out.append(")")
    out.append("")
  for name, actual in sorted(expected_aliases(rules).items()):
    out.extend([
        "# Imports and is imported by the modules of :" + actual + " (an import cycle): built as one target.", "alias(",
        f'    name = "{name}",', f'    actual = ":{actual}",', ")", ""
    ])
  return "\n".join(out)


def render_pypi(names):
  """third_party/pypi/BUILD: one empty py_library per PyPI distribution BUILD names."""
  out = [
      '# Generated by `python tests/build_graph.py`. One target per PyPI distribution that BUILD depends on;',
      '# each is empty: the packages are provided at run time by the project\'s .venv (launch/setup_env.sh,',
      '# requirements.txt), which is also the Python toolchain (//third_party/python). Nothing is downloaded.', '',
      'package(default_visibility = ["//visibility:public"])', '',
      'exports_files(["BUILD"])  # read by tests/test_build.py', ''
  ]
  for name in names:
    out.extend(["py_library(", f'    name = "{name}",', ")", ""])
  return "\n".join(out)


if __name__ == "__main__":
  text = render(expected_rules())
  with open(os.path.join(ROOT, "BUILD"), "w") as f:
    f.write(text)
  with open(os.path.join(ROOT, "third_party", "pypi", "BUILD"), "w") as f:
    f.write(render_pypi(pypi_distributions()))
  print(f"BUILD: {text.count(chr(10) + 'py_')} targets")
