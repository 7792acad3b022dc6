"""BUILD matches the code: every file has its target, and every target's deps are exactly what its file
imports (first-party targets and PyPI distributions). Regenerate with ``python tests/build_graph.py``."""

import os

import build_graph


def _build_rules():
  return build_graph.parse_build(open(os.path.join(build_graph.ROOT, "BUILD")).read())


def test_every_python_file_has_exactly_one_target():
  rules = _build_rules()
  listed = [s for _, _, srcs, _, _, _ in rules for s in srcs if s != build_graph.PYTEST_MAIN]
  files = build_graph.source_files()
  missing = sorted(set(files) - set(listed))
  stale = sorted(set(listed) - set(files))
  assert not missing, f"files without a BUILD target (run python tests/build_graph.py): {missing}"
  assert not stale, f"BUILD lists files that do not exist: {stale}"
  assert len(listed) == len(set(listed)), "a file is listed by two targets"
  tests = [(name, srcs) for kind, name, srcs, _, _, _ in rules if kind == "py_test"]
  assert all(srcs[-1:] == [build_graph.PYTEST_MAIN] for _, srcs in tests), f"py_test without {build_graph.PYTEST_MAIN}"


def test_every_target_lists_the_deps_its_file_imports():
  have = {name: (kind, sorted(deps), sorted(data), attrs) for kind, name, _, deps, data, attrs in _build_rules()}
  problems = []
  for kind, name, srcs, deps, data, attrs in build_graph.expected_rules():
    if name not in have:
      continue  # reported by the test above
    got_kind, got_deps, got_data, got_attrs = have[name]
    missing = sorted(set(deps) - set(got_deps))
    stale = sorted(set(got_deps) - set(deps))
    if missing or stale or got_kind != kind or got_data != sorted(data) or got_attrs != attrs:
      problems.append(f"{name} ({srcs[0]}): missing {missing}, stale {stale}" +
                      ("" if got_kind == kind else f", kind {got_kind} should be {kind}") +
                      ("" if got_data == sorted(data) else f", data {got_data} should be {sorted(data)}") +
                      ("" if got_attrs == attrs else f", attributes {got_attrs} should be {attrs}"))
  assert not problems, "BUILD is out of date (run python tests/build_graph.py):\n" + "\n".join(problems)
  aliases = build_graph.parse_aliases(open(os.path.join(build_graph.ROOT, "BUILD")).read())
  assert aliases == build_graph.expected_aliases(), "BUILD's import-cycle aliases are out of date"


def test_the_dependency_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
  """The parser behind the two checks above: a stale or missing dep must be detectable."""
  (tmp_path / "optim4rl_tf" / "sub").mkdir(parents=True)
  (tmp_path / "optim4rl_tf" / "__init__.py").write_text("")
  (tmp_path / "optim4rl_tf" / "sub" / "__init__.py").write_text("")
  (tmp_path / "optim4rl_tf" / "sub" / "b.py").write_text("import numpy\n")
  (tmp_path / "optim4rl_tf" / "sub" /
   "a.py").write_text("from . import b\n\ndef f():\n  import tensorflow as tf\n  from absl import flags\n")
  monkeypatch.setattr(build_graph, "ROOT", str(tmp_path))
  rules = {name: deps for _, name, _, deps, _, _ in build_graph.expected_rules()}
  assert rules["optim4rl_tf_sub_a"] == [
      ":optim4rl_tf_sub", ":optim4rl_tf_sub_b", "//third_party/pypi:absl_py", "//third_party/pypi:tensorflow_cpu"
  ]
  assert rules["optim4rl_tf_sub_b"] == ["//third_party/pypi:numpy"]


def test_the_pypi_package_names_every_distribution_and_tests_are_tiered():
  """//third_party/pypi has a target per distribution BUILD names; all-slow test files are tagged slow."""
  text = open(os.path.join(build_graph.ROOT, "third_party", "pypi", "BUILD")).read()
  assert text == build_graph.render_pypi(build_graph.pypi_distributions()), "run python tests/build_graph.py"
  assert build_graph.slow_tests("tests/test_build.py") == (False, False)
  assert build_graph.slow_tests("tests/test_format.py") == (True, False)  # one slow test, one fast
  assert build_graph.reads_the_checkout("tests/test_self_contained.py")
  assert not build_graph.reads_the_checkout("tests/test_build.py")


def test_import_cycles_become_one_target(tmp_path, monkeypatch):
  """Bazel has no dependency cycles: modules that import each other (lazily) are built as one py_library."""
  (tmp_path / "optim4rl_tf").mkdir()
  (tmp_path / "optim4rl_tf" / "__init__.py").write_text("")
  (tmp_path / "optim4rl_tf" / "a.py").write_text("import numpy\n\ndef f():\n  from optim4rl_tf import b\n")
  (tmp_path / "optim4rl_tf" / "b.py").write_text("from optim4rl_tf import a\n")
  (tmp_path / "optim4rl_tf" / "c.py").write_text("from optim4rl_tf import b\n")
  monkeypatch.setattr(build_graph, "ROOT", str(tmp_path))
  rules = {name: (srcs, deps) for _, name, srcs, deps, _, _ in build_graph.expected_rules()}
  assert rules["optim4rl_tf_a"] == (["optim4rl_tf/a.py",
                                     "optim4rl_tf/b.py"], [":optim4rl_tf", "//third_party/pypi:numpy"])
  assert "optim4rl_tf_b" not in rules and rules["optim4rl_tf_c"] == (["optim4rl_tf/c.py"
                                                                     ], [":optim4rl_tf", ":optim4rl_tf_b"])
  assert build_graph.expected_aliases() == {"optim4rl_tf_b": "optim4rl_tf_a"}
