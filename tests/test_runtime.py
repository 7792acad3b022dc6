"""Process set-up: importing the package changes nothing global; launchers opt in to the allocators and to
fixed graph rewrites."""

import os
import subprocess
import sys
import textwrap

import pytest

from optim4rl_tf.utils import runtime


def _run(code, env=None, args=()):
  full_env = dict(os.environ)
  full_env.pop("LD_PRELOAD", None)
  full_env.update(env or {})
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                       capture_output=True,
                       text=True,
                       env=full_env,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow(6)
def test_importing_the_package_changes_nothing_global():
  last = _run("""
      import os, sys
      import optim4rl_tf
      lazy = "tensorflow" not in sys.modules
      import tensorflow, keras, gymnasium  # they set environment variables of their own
      before = dict(os.environ)
      optim4rl_tf.Optim4RL, optim4rl_tf.envs, optim4rl_tf.load_meta_params
      from optim4rl_tf.utils import runtime
      changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
      print(lazy, changed, runtime.tcmalloc_loaded())
  """,
              env={"TF_CPP_MIN_LOG_LEVEL": "2"})
  assert last == "True [] False"


def test_configure_process_sets_the_bfc_pool_and_keeps_explicit_settings():
  assert _run("""
      import os
      from optim4rl_tf.utils import runtime
      os.environ.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
      runtime.configure_process(tcmalloc=False)
      print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
  """) == "true"
  assert _run("""
      import os
      from optim4rl_tf.utils import runtime
      runtime.configure_process(tcmalloc=False)
      print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
  """,
              env={"TF_CPU_ALLOCATOR_USE_BFC": "false"}) == "false"


@pytest.mark.skipif(runtime.find_tcmalloc() is None, reason="tcmalloc is not installed on this machine")
def test_configure_process_re_executes_once_with_tcmalloc_keeping_the_arguments():
  code = """
      import sys
      from optim4rl_tf.utils import runtime
      print(runtime.configure_process(), sys.argv[1:])
  """
  assert _run(code, args=("a", "--b=1")) == "tcmalloc + TF BFC ['a', '--b=1']"
  assert _run(code, env={"OPTIM4RL_TF_TCMALLOC": "0"}) == "glibc + TF BFC []"


def test_configure_process_never_restarts_a_host_program():
  """A launcher run in-process (runpy from a test or notebook) has another sys.argv than the interpreter's
  command line: re-executing would restart the host, so it must not."""
  assert _run("""
      import sys
      sys.argv = ["launch/report.py", "--out=x"]
      from optim4rl_tf.utils import runtime
      print(runtime.configure_process())
  """) == "glibc + TF BFC"


def test_configure_process_switches_off_the_free_ram_dependent_graph_rewrite_with_an_opt_out():
  """Grappler's memory optimizer rewrites big AddN sums into accumulation in arrival order when a function's
  estimated peak exceeds 80% of the RAM free at that moment: the launchers switch it off for every function
  call (runtime.fix_graph_rewrites); OPTIM4RL_TF_GRAPPLER_MEMORY=1 keeps it. Functions still run."""
  assert _run("""
      import os
      from optim4rl_tf.utils import runtime
      os.environ["OPTIM4RL_TF_GRAPPLER_MEMORY"] = "1"
      runtime.configure_process(tcmalloc=False)
      import tensorflow as tf
      add3 = tf.function(lambda x: tf.add_n([x, x, x]))
      kept = (runtime.graph_rewrites_fixed(), float(add3(tf.constant(1.0))))
      os.environ["OPTIM4RL_TF_GRAPPLER_MEMORY"] = "0"
      applied = runtime.fix_graph_rewrites()
      print(kept, applied, runtime.graph_rewrites_fixed(), float(add3(tf.constant(2.0))))
  """) == "(False, 3.0) True True 6.0"
