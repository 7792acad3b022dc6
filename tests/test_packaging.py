"""Packaging: the core install is the optimizers (TensorFlow from the [cpu] or [gpu] extra), everything else
is an extra, the lock installs every extra, and the optimizer path imports none of the extras' packages."""

import importlib
import os
import re
import subprocess
import sys
import textwrap
import tomllib

from conftest import ROOT

PYPROJECT = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]

# Import names the optimizer path must not need (each belongs to an extra).
NOT_CORE = ("matplotlib", "gymnasium", "scipy", "tensorboard", "ml_collections", "brax", "jax", "ray", "sklearn",
            "tensorflow_probability")


def _name(requirement):
  """'tensorflow[and-cuda]>=2.18,<2.22' -> 'tensorflow' (normalized distribution name)."""
  return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _lock():
  names = set()
  for line in open(os.path.join(ROOT, "requirements.txt")):
    line = line.split("#", 1)[0].strip()
    if line:
      assert "==" in line, f"requirements.txt pins exact versions: {line!r}"
      names.add(_name(line))
  return names


def test_core_dependencies_are_the_optimizer_path_only():
  core = {_name(r) for r in PROJECT["dependencies"]}
  assert core == {"keras", "numpy"}, core
  for heavy in ("matplotlib", "gymnasium", "tensorboard", "brax", "scipy", "ray", "ml-collections", "jax"):
    assert heavy not in core
  # Neither TensorFlow distribution: tensorflow-cpu and tensorflow[and-cuda] both provide `tensorflow`.
  assert not core & {"tensorflow", "tensorflow-cpu"}


def test_extras_cover_the_rest():
  for extra in ("cpu", "gpu", "train", "plots", "gym", "brax", "ray", "analysis", "all"):
    assert extra in EXTRAS, extra
  assert [_name(r) for r in EXTRAS["cpu"]] == ["tensorflow-cpu"]
  assert [r.split(">")[0] for r in EXTRAS["gpu"]] == ["tensorflow[and-cuda]"]
  names = {extra: {_name(r) for r in reqs} for extra, reqs in EXTRAS.items()}
  assert {"matplotlib", "tensorboard", "scipy", "ml-collections", "absl-py", "gymnasium"} <= names["train"]
  assert "matplotlib" in names["plots"] and "gymnasium" in names["gym"] and "brax" in names["brax"]
  assert "ray" in names["ray"]
  (everything,) = EXTRAS["all"]
  assert _name(everything) == PROJECT["name"]
  listed = set(re.search(r"\[(.*)\]", everything).group(1).split(","))
  assert listed == {"train", "plots", "gym", "brax", "ray", "analysis"}  # not cpu/gpu: the user picks one


def test_the_lock_installs_the_core_and_every_extra_on_cpu():
  """launch/setup_env.sh installs requirements.txt, then the project with --no-deps: the lock must hold every
  distribution of the core, [cpu] and the other extras (not [gpu]: the lock is the CPU build)."""
  lock = _lock()
  wanted = {_name(r) for r in PROJECT["dependencies"]}
  for extra, reqs in EXTRAS.items():
    if extra not in ("gpu", "all"):
      wanted |= {_name(r) for r in reqs}
  assert wanted <= lock, f"not in requirements.txt: {sorted(wanted - lock)}"
  assert "tensorflow" not in lock  # only tensorflow-cpu: two distributions of one module would clash


def test_pip_install_dot_leaves_no_build_folder():
  """setuptools' build tree goes to a git-ignored folder, not build/ (pyproject.toml [tool.distutils.build])."""
  build_base = PYPROJECT["tool"]["distutils"]["build"]["build_base"]
  top = build_base.split("/")[0]
  assert top != "build" and not os.path.isabs(build_base)
  ignored = [line.strip() for line in open(os.path.join(ROOT, ".gitignore"))]
  assert f"/{top}/" in ignored or f"{top}/" in ignored, f"{top}/ is not git-ignored"
  assert not top.endswith(".egg-info")  # the egg-info is copied into the wheel: a build tree there recurses


def _python(code, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        cwd=ROOT,
                        env=env)


def test_optimizer_path_works_without_the_extras():
  """`import optim4rl_tf; optim4rl_tf.Optim4RL(...)` and a training step with every extra's package blocked."""
  proc = _python(f"""
      import sys
      for name in {NOT_CORE!r}:
        sys.modules[name] = None  # `import name` raises ImportError
      import numpy as np
      import keras
      import optim4rl_tf
      opt = optim4rl_tf.Optim4RL.from_pretrained("catch", learning_rate=1e-3)
      var = keras.Variable(np.ones((3, 2), "float32"))
      opt.apply_gradients([(keras.ops.ones((3, 2)), var)])
      assert np.all(np.isfinite(var.numpy())) and not np.allclose(var.numpy(), 1.0)
      params = optim4rl_tf.load_meta_params
      loaded = sorted(m for m in {NOT_CORE!r} if sys.modules.get(m) is not None)
      assert not loaded, loaded
      print("OK")
      """)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_missing_packages_name_their_extra():
  proc = _python("""
      import sys
      sys.modules["tensorflow"] = None
      try:
        import optim4rl_tf
      except ImportError as e:
        print(e)
      """,
                 timeout=60)
  assert "optim4rl-tf[cpu]" in proc.stdout and "optim4rl-tf[gpu]" in proc.stdout, proc.stdout + proc.stderr
  proc = _python("""
      import sys
      sys.modules["matplotlib"] = None
      try:
        from optim4rl_tf.utils import plots
      except ImportError as e:
        print(e)
      """,
                 timeout=60)
  assert "optim4rl-tf[plots]" in proc.stdout, proc.stdout + proc.stderr


def test_console_scripts_run_the_package_commands():
  """Each [project.scripts] entry point is a package function (never launch/, which pip does not install)
  that runs a command's ``main`` (absl commands: with ``define_flags``), the same as its launcher in launch/."""
  scripts = PYPROJECT["project"]["scripts"]
  absl_commands = {"optim4rl-main", "optim4rl-reproduce", "optim4rl-train", "optim4rl-meta-train"}
  assert absl_commands | {"optim4rl-benchmark"} <= set(scripts)
  for name, target in scripts.items():
    module_name, function = target.split(":")
    assert module_name.startswith("optim4rl_tf."), (name, target)
    assert module_name.rsplit(".", 1)[0] in PYPROJECT["tool"]["setuptools"]["packages"], (name, target)
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function)) and callable(module.main)
    assert name not in absl_commands or callable(module.define_flags), name
    launcher = os.path.join(ROOT, "launch", name[len("optim4rl-"):].replace("-", "_") + ".py")
    assert f"{module_name.rsplit('.', 1)[1]}.{function}()" in open(launcher).read(), (name, launcher)


def test_a_launchers_helpshort_lists_its_commands_flags():
  """A command's flags are defined in its package module, yet ``--helpshort`` of the launcher (the main
  program) lists them (cli.run_command makes them key flags of the main program)."""
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "analyze_gradients.py"), "--helpshort"],
      capture_output=True,
      text=True,
      timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  listed = re.findall(r"^  --(?:\[no\])?(\w+)", proc.stdout, flags=re.M)
  assert listed == ["grads", "num_parts", "out"], proc.stdout
