"""Fixed-seed phi of tiny meta-training runs, bitwise equal to the one recorded before the meta/ redesign.

tests/data/meta_redesign_golden.npz holds phi after 3 outer iterations of MetaA2C (Optim4RL, chunked
replayed VJP, pipeline resets), MetaA2C+STAR (full unroll), MetaPPO (through the environment, and the
replayed-VJP approximation) and MetaPPO+STAR, each built from its config by ``optim4rl_tf.meta`` and run by
its learner, recorded with the code before the redesign of optim4rl_tf/meta/ in two numeric modes:

* ``onednn0/``: TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels): the redesign must reproduce every case bitwise
  (``np.array_equal``): the math is unchanged;
* ``noarith/``: oneDNN off and grappler's arithmetic optimizer off, MetaA2C+STAR only: with it on,
  grappler regroups the sums of STAR's second-order gradient by graph structure, so one entry of phi
  (``mlp/b2``) moves in the last bit (measured 4.7e-10 after one iteration) though the math is unchanged;
  with it off, the redesign reproduces the recorded phi bitwise. In ``onednn0/`` this case must agree to
  float32 rounding;
* ``onednn1/``: oneDNN on (TensorFlow's default on x86). oneDNN's kernels round differently depending on the
  surrounding graph (the old code's own inner updates change in the last bit when the graph around them
  changes), so only MetaA2C is rerun there (bitwise). MetaA2C+STAR is recorded in this mode but not rerun:
  oneDNN also picks its kernels by CPU at run time, and on another CPU (AVX2 against the recording) its
  second-order graph moved by 5.6e-4 of phi's scale, more than rounding checks can tell from a change of the
  math; its math is checked in ``onednn0/`` and ``noarith/``. The MetaPPO cases are recorded in this mode but
  not rerun by the suite (``ONEDNN1_CASES``): their math is checked bitwise in ``onednn0/``, oneDNN could only
  move them by rounding, and their three Brax compilations would add about a minute to the suite
  (tests/test_meta_ppo_gradient.py checks MetaPPO's gradients in the default mode against ``jax.grad`` and
  finite differences).

MetaPPO+STAR is recorded in ``onednn0/`` too but the suite does not rerun it (``ONEDNN0_CASES``): its
full-unroll graph is the costliest compilation here (about 40 s of CPU), and its meta-gradient, second-order
path included, is checked against finite differences by
tests/test_meta_ppo_gradient.py::test_meta_ppo_star_second_order_path_matches_finite_differences. Check it by
hand after a change to MetaPPO+STAR: ``.venv/bin/python tests/test_meta_redesign_golden.py --check meta_ppo_star``
(exit status 0 when its phi is the recorded one: bitwise on a recorded platform).

**Platforms.** XLA compiles parts of these graphs (``jit_compile=True`` in optim4rl_tf/meta and Brax's JAX
step) for the host CPU, so another CPU (AVX-512 against AVX2, another model) rounds differently in the last
bits (measured: 4.7e-10 on an AMD EPYC with AVX2 against the recording). The bitwise checks therefore hold on
the platform a file was recorded on: ``meta_redesign_golden.npz`` (recorded before the redesign) and one
``meta_redesign_golden.<platform>.npz`` per further platform (:func:`platform_id`: CPU model and vector
extensions), each recorded with ``--write-platform``, which refuses unless every phi of this platform agrees
with ``meta_redesign_golden.npz`` to float32 rounding (``ROUNDING``). On a platform with no file of its own,
the tests compare with ``meta_redesign_golden.npz`` to that rounding (a change of the math moves phi by far
more).

Each oneDNN mode runs in a child process of its own (the mode is fixed when TensorFlow is imported), which
runs its cases one after the other (one TensorFlow start-up per mode, not per case). The ``noarith/`` case
runs last in the oneDNN-off child, after the child turns the arithmetic optimizer off (graphs built from
then on are optimized without it). Regenerate only on purpose, with
the code whose numbers are the reference:

  .venv/bin/python tests/test_meta_redesign_golden.py --write            # the reference (every platform)
  .venv/bin/python tests/test_meta_redesign_golden.py --write-platform   # this platform's bitwise file
"""

import functools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
GOLDEN = os.path.join(DATA, "meta_redesign_golden.npz")
ITERATIONS = 3
# Float32 rounding of these phis across CPUs, relative to the largest entry of each array: measured at most
# 3.9e-6 (MetaA2C+STAR, AVX2 against the recording; the other cases 1.6e-7 to 9e-7).
ROUNDING = 2e-5

# The CPU features that decide how XLA's host code rounds: its vector extensions.
_ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16",
              "amx_tile")


def platform_id(cpuinfo="/proc/cpuinfo"):
  """``<cpu model>.<vector extensions>`` of this machine, e.g. ``AMD-EPYC.avx-avx2-f16c-fma`` (the name of
  its golden file); ``unknown`` where /proc/cpuinfo cannot be read."""
  try:
    with open(cpuinfo) as f:
      text = f.read()
  except OSError:
    return "unknown"
  field = lambda name: next(
      (line.split(":", 1)[1].strip() for line in text.splitlines() if line.split(":", 1)[0].strip() == name), "")
  model = "-".join("".join(c if c.isalnum() else " " for c in field("model name")).split()) or "cpu"
  flags = sorted(set(field("flags").split()) & set(_ISA_FLAGS))
  return f"{model}.{'-'.join(flags) or 'none'}"


def platform_golden_path():
  return os.path.join(DATA, f"meta_redesign_golden.{platform_id()}.npz")


def set_fields(c, **fields):
  for path, value in fields.items():
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    setattr(node, leaf, value)
  return c


def a2c_config(optimizer):
  from optim4rl_tf.configs import meta_a2c as meta_configs  # pylint: disable=import-outside-toplevel
  c = meta_configs.get_config("catch")
  c.tasks[0].num_units = 4
  return set_fields(
      c, **{
          "rollout_steps": 5,
          "inner_updates": 2,
          "num_iterations": ITERATIONS,
          "pipeline": True,
          "reset_interval": 2,
          "chunk_size": 2 if optimizer != "star" else 0,
          "optimizer.name": optimizer,
          "optimizer.mlp_dims": (4,),
          "checkpoint_every": 1
      })


def ppo_config(optimizer, through_env=True):
  from optim4rl_tf.configs import ppo as ppo_configs  # pylint: disable=import-outside-toplevel
  c = ppo_configs.get_config("meta_inverted_pendulum")
  return set_fields(
      c, **{
          "env.num_envs": 4,
          "env.episode_length": 5,
          "num_units": 2,
          "batch_size": 2,
          "num_minibatches": 2,
          "unroll_length": 3,
          "update_epochs": 2,
          "inner_updates": 2,
          "learning_rate": 3e-3,
          "pipeline": True,
          "reset_interval": 2,
          "num_iterations": ITERATIONS,
          "meta_grad_through_env": through_env,
          "network.policy_hidden": (8,),
          "network.value_hidden": (8, 8),
          "optimizer.name": optimizer,
          "optimizer.mlp_dims": (),
          "optimizer.hidden_size": 3
      })


CASES = {
    "meta_a2c": lambda: a2c_config("optim4rl"),
    "meta_a2c_star": lambda: a2c_config("star"),
    "meta_ppo": lambda: ppo_config("optim4rl"),
    "meta_ppo_replayed": lambda: ppo_config("optim4rl", through_env=False),
    "meta_ppo_star": lambda: ppo_config("star"),
}


def run_case(name):
  """phi (dict of arrays) after ITERATIONS outer iterations of the case's config, no workdir."""
  from optim4rl_tf.meta import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  trainer = trainer_lib.MetaTrainer(CASES[name]())
  for _ in range(ITERATIONS):
    metrics = trainer.run_iteration()
    assert metrics["meta/applied"] == 1.0, (name, metrics)
  return trainer.meta_params()


@functools.lru_cache(maxsize=None)
def golden():
  """(recorded phis, bitwise): this platform's file if it has one (bitwise checks), else the reference
  recording (checks to ``ROUNDING``)."""
  path = platform_golden_path()
  exact = os.path.exists(path)
  with np.load(path if exact else GOLDEN) as z:
    return {k: z[k] for k in z.files}, exact


def assert_same(got, want, label, exact):
  """phi ``got`` is ``want``: bitwise where ``exact``, else to float32 rounding."""
  assert want and sorted(got) == sorted(want), (label, sorted(got), sorted(want))
  for k in want:
    if exact:
      assert np.array_equal(got[k], want[k]), (label, k, np.max(np.abs(got[k] - want[k])))
    else:
      assert_rounding(got[k], want[k], f"{label} {k}")


def assert_rounding(got, want, label):
  """``got`` equals ``want`` up to ROUNDING of the largest |entry| of ``want``."""
  tol = ROUNDING * float(np.max(np.abs(want))) + 1e-12
  assert got.shape == want.shape and np.max(np.abs(got - want)) <= tol, (label, np.max(np.abs(got - want)), tol)


def run_in_child(names, onednn, arithmetic=True):
  """{case: phi} of the cases ``names``, computed one after the other in ONE child process with
  TF_ENABLE_ONEDNN_OPTS=``onednn`` (and grappler's arithmetic optimizer off unless ``arithmetic``)."""
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ,
               TF_ENABLE_ONEDNN_OPTS=str(onednn),
               TF_CPP_MIN_LOG_LEVEL="2",
               GOLDEN_ARITHMETIC=str(int(arithmetic)))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--cases", ",".join(names), tmp],
                          env=env,
                          capture_output=True,
                          text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for name in names:
      with np.load(os.path.join(tmp, f"{name}.npz")) as z:
        out[name] = {k: z[k] for k in z.files}
    return out


ONEDNN1_CASES = ("meta_a2c",)  # the cases the suite reruns with oneDNN on (module doc)
# Recorded with oneDNN on but not compared across platforms: oneDNN picks its kernels by CPU at run time, and
# MetaA2C+STAR's second-order graph moves by 5.6e-4 of its scale on AVX2 against the recording.
ONEDNN1_EXCLUDED = ("onednn1/meta_a2c_star",)
# The cases it reruns with oneDNN off. MetaA2C+STAR runs there once, last, with the arithmetic optimizer off
# (NOARITH), and is compared bitwise with ``noarith/``.
NOARITH = "@noarith"
ONEDNN0_CASES = ("meta_a2c", "meta_ppo", "meta_ppo_replayed", "meta_a2c_star" + NOARITH)


@functools.lru_cache(maxsize=None)
def phis_of_mode(onednn, arithmetic=True):
  """{case: phi} of the mode's cases (one child process, shared by the mode's parametrized tests): all of
  ``ONEDNN0_CASES`` without oneDNN, ``ONEDNN1_CASES`` with it."""
  return run_in_child(list(ONEDNN0_CASES) if onednn == 0 else list(ONEDNN1_CASES), onednn, arithmetic)


def recorded(mode, name, values=None):
  values = golden()[0] if values is None else values
  return {k.split(":", 1)[1]: v for k, v in values.items() if k.split(":", 1)[0] == f"{mode}/{name}"}


@pytest.mark.slow(110)
@pytest.mark.parametrize("name", ONEDNN0_CASES)
def test_phi_is_bitwise_the_recorded_one_without_onednn(name):
  """One test function for every case of the oneDNN-off child (MetaA2C+STAR as ``meta_a2c_star@noarith``,
  compared with ``noarith/``), so that ``-n 2`` hands all of them to one worker, which runs the child once."""
  case, _, mode = name.partition("@")
  assert_same(phis_of_mode(0)[name], recorded(mode or "onednn0", case), case, golden()[1])


@pytest.mark.slow(40)
@pytest.mark.parametrize("name", ONEDNN1_CASES)
def test_phi_with_onednn_is_the_recorded_one(name):
  assert_same(phis_of_mode(1)[name], recorded("onednn1", name), name, golden()[1])


def test_platform_id_names_the_cpu_model_and_its_vector_extensions(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13 (64-Core)\nflags\t\t: fpu sse2 avx fma avx2 "
                  "bmi2 avx512f avx512vl\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13 (64-Core)\n")
  assert platform_id(str(info)) == "AMD-EPYC-7B13-64-Core.avx-avx2-avx512f-avx512vl-fma"
  assert platform_id(str(tmp_path / "missing")) == "unknown"


def main(argv):
  if argv[:1] == ["--cases"] and len(argv) == 3:
    if os.environ.get("GOLDEN_ARITHMETIC", "1") == "0":
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    names = argv[1].split(",")
    assert all(not n.endswith(NOARITH) for n in names[:-1]), f"only the last case may be {NOARITH}: {names}"
    for name in names:
      if name.endswith(NOARITH):  # from here on (the case runs last): graphs built without the rewrites
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
      np.savez(os.path.join(argv[2], f"{name}.npz"), **run_case(name.split("@")[0]))
    return
  if argv[:1] == ["--check"] and len(argv) == 2 and argv[1] in CASES:
    want, got = recorded("onednn0", argv[1]), run_in_child([argv[1]], 0)[argv[1]]
    exact = golden()[1]
    try:
      assert_same(got, want, argv[1], exact)
      same = True
    except AssertionError:
      same = False
    how = "bitwise" if exact else "to float32 rounding (no file of this platform)"
    print(f"{argv[1]} (oneDNN off): {'the recorded phi, ' + how if same else 'DIFFERS from the recorded phi'}")
    sys.exit(0 if same else 1)
  if argv not in (["--write"], ["--write-platform"]):
    sys.exit("usage: test_meta_redesign_golden.py --write | --write-platform | --check NAME | "
             "--cases NAME,NAME,... OUT_DIR")
  out = {}
  for onednn in (0, 1):
    for case, phi in run_in_child(sorted(CASES), onednn).items():
      for key, value in phi.items():
        out[f"onednn{onednn}/{case}:{key}"] = value
      print("recorded", case, "onednn", onednn, flush=True)
  for key, value in run_in_child(["meta_a2c_star"], 0, arithmetic=False)["meta_a2c_star"].items():
    out[f"noarith/meta_a2c_star:{key}"] = value
  path = GOLDEN
  if argv == ["--write-platform"]:  # this platform's bitwise file: the same math as the reference
    with np.load(GOLDEN) as z:
      reference = {k: z[k] for k in z.files}
    assert sorted(out) == sorted(reference), (sorted(out), sorted(reference))
    for key in out:
      if key.split(":", 1)[0] not in ONEDNN1_EXCLUDED:
        assert_rounding(out[key], reference[key], key)
    path = platform_golden_path()
  np.savez(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main(sys.argv[1:])
