"""BUILD matches the code: every file has its target, and every target's deps are exactly what its file
imports (first-party targets and PyPI distributions). Regenerate with ``python tests/build_graph.py``."""

import os

import build_graph


def _build_rules():
  return build_graph.parse_build(open(os.path.join(build_graph.ROOT, "BUILD")).read())


def test_every_python_file_has_exactly_one_target():
  listed = [s for _, _, srcs, _, _ in _build_rules() for s in srcs]
  files = build_graph.source_files()
  missing = sorted(set(files) - set(listed))
  stale = sorted(set(listed) - set(files))
  assert not missing, f"files without a BUILD target (run python tests/build_graph.py): {missing}"
  assert not stale, f"BUILD lists files that do not exist: {stale}"
  assert len(listed) == len(set(listed)), "a file is listed by two targets"


def test_every_target_lists_the_deps_its_file_imports():
  have = {name: (kind, sorted(deps), sorted(data)) for kind, name, _, deps, data in _build_rules()}
  problems = []
  for kind, name, srcs, deps, data in build_graph.expected_rules():
    if name not in have:
      continue  # reported by the test above
    got_kind, got_deps, got_data = have[name]
    missing = sorted(set(deps) - set(got_deps))
    stale = sorted(set(got_deps) - set(deps))
    if missing or stale or got_kind != kind or got_data != sorted(data):
      problems.append(f"{name} ({srcs[0]}): missing {missing}, stale {stale}" +
                      ("" if got_kind == kind else f", kind {got_kind} should be {kind}") +
                      ("" if got_data == sorted(data) else f", data {got_data} should be {sorted(data)}"))
  assert not problems, "BUILD is out of date (run python tests/build_graph.py):\n" + "\n".join(problems)


def test_the_dependency_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
  """The parser behind the two checks above: a stale or missing dep must be detectable."""
  (tmp_path / "optim4rl_tf" / "sub").mkdir(parents=True)
  (tmp_path / "optim4rl_tf" / "__init__.py").write_text("")
  (tmp_path / "optim4rl_tf" / "sub" / "__init__.py").write_text("")
  (tmp_path / "optim4rl_tf" / "sub" / "b.py").write_text("import numpy\n")
  (tmp_path / "optim4rl_tf" / "sub" /
   "a.py").write_text("from . import b\n\ndef f():\n  import tensorflow as tf\n  from absl import flags\n")
  monkeypatch.setattr(build_graph, "ROOT", str(tmp_path))
  rules = {name: deps for _, name, _, deps, _ in build_graph.expected_rules()}
  assert rules["optim4rl_tf_sub_a"] == [
      ":optim4rl_tf_sub", ":optim4rl_tf_sub_b", "@pypi//absl_py", "@pypi//tensorflow_cpu"
  ]
  assert rules["optim4rl_tf_sub_b"] == ["@pypi//numpy"]
