"""Process set-up for the launchers: memory allocators and TensorFlow's log level (opt-in, never on import).

TensorFlow on CPU allocates every large intermediate tensor afresh. With the defaults, glibc serves each big
request with ``mmap`` and returns it with ``munmap``, so every op over a tens-of-MB tensor pays page faults
and kernel page zeroing again (an strace of five small_dense_long meta-iterations counted ~113k mmap calls;
30-50% of the CPU time went to the kernel). Three remedies, measured on meta-training (see README, "Speed"):

* ``TF_CPU_ALLOCATOR_USE_BFC=true``: TensorFlow's own best-fit-with-coalescing pool for CPU tensors. It must
  be in the environment before TensorFlow is imported.
* tcmalloc (Debian/Ubuntu package ``libtcmalloc-minimal4``) through ``LD_PRELOAD``: a caching allocator for
  everything else. A preload only works from the start of a process, so :func:`configure_process` re-executes
  the program once with it when the library is installed and not yet loaded.
* glibc ``mallopt`` (no mmap for big blocks, no trimming) when tcmalloc is not there.

Nothing here runs when ``optim4rl_tf`` is imported: launchers call :func:`configure_process` as their first
statement, and a user's own script may do the same. ``OPTIM4RL_TF_TCMALLOC=0`` disables the re-execution and
``OPTIM4RL_TF_NO_MALLOPT=1`` the glibc tuning. No allocator setting changes a computed number.

:func:`configure_process` also switches one graph rewrite off, for determinism (:func:`fix_graph_rewrites`):
grappler's memory optimizer turns an ``AddN`` of more than two tensors into in-place ``AssignAdd`` accumulation,
in the order its inputs happen to be computed, when its static estimate of a function's peak memory exceeds 80%
of the RAM that is *free* at the moment the function is first optimized. Whether a graph is rewritten then
depends on what else runs on the machine, and a large meta-gradient (a sum of many terms) can differ in its last
bits from process to process. ``OPTIM4RL_TF_GRAPPLER_MEMORY=1`` keeps the rewrite.
"""

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")
_TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
_REEXEC_MARK = "OPTIM4RL_TF_REEXECUTED"


def find_tcmalloc():
  """Returns the path of an installed tcmalloc shared library, or None."""
  for name in _TCMALLOC_NAMES:
    for folder in _TCMALLOC_DIRS:
      path = os.path.join(folder, f"lib{name}.so.4")
      if os.path.exists(path):
        return path
    found = ctypes.util.find_library(name)
    if found:
      for folder in _TCMALLOC_DIRS:
        if os.path.exists(os.path.join(folder, found)):
          return os.path.join(folder, found)
  return None


def tcmalloc_loaded():
  """True if tcmalloc is mapped into this process (preloaded)."""
  try:
    with open("/proc/self/maps") as f:
      return "libtcmalloc" in f.read()
  except OSError:
    return False


def tune_glibc_malloc():
  """Keeps large buffers in the heap instead of fresh mmap()s (Linux/glibc). Returns True if applied."""
  if os.environ.get("OPTIM4RL_TF_NO_MALLOPT") or not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    return (libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and
            libc.mallopt(_M_TOP_PAD, 64 << 20) == 1)
  except (OSError, AttributeError):
    return False


def allocator_summary():
  """One phrase naming the allocators in use (for logs and benchmark tables)."""
  parts = ["tcmalloc" if tcmalloc_loaded() else "glibc"]
  if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true"):
    parts.append("TF BFC")
  return " + ".join(parts)


def _is_own_command_line():
  """True if sys.argv is this interpreter's own command line (not a launcher run in-process by runpy or a
  test, where re-executing would restart the host program)."""
  orig = list(getattr(sys, "orig_argv", []) or [])
  argv = list(sys.argv)
  return len(orig) >= len(argv) >= 1 and orig[len(orig) - len(argv) + 1:] == argv[1:] and (os.path.basename(
      argv[0]) in map(os.path.basename, orig) or orig[1:2] == ["-m"])


def fix_graph_rewrites():
  """Switches off grappler's memory-optimizer rewrites for the ``tf.function`` calls of this process (see the
  module docstring): the same graph on the same inputs then gives the same bits whatever the free RAM. Must
  run before the first ``tf.function`` call of a thread to reach that thread (the options are cached per thread;
  this call clears the calling thread's cache). TensorFlow has no public switch for this pass; this sets the
  eager context's base ``ConfigProto``, whose ``rewrite_options`` every function call inherits. Returns True
  if it was applied (False with ``OPTIM4RL_TF_GRAPPLER_MEMORY=1``)."""
  if os.environ.get("OPTIM4RL_TF_GRAPPLER_MEMORY", "0") == "1":
    return False
  from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top

  ctx = context.context()
  config = config_pb2.ConfigProto()
  if ctx._config is not None:  # pylint: disable=protected-access
    config.CopyFrom(ctx._config)  # pylint: disable=protected-access
  config.graph_options.rewrite_options.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
  ctx._config = config  # pylint: disable=protected-access
  ctx._thread_local_data.function_call_options = None  # pylint: disable=protected-access
  return True


def graph_rewrites_fixed():
  """True if this thread's ``tf.function`` calls run without grappler's memory-optimizer rewrites."""
  from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top

  config = config_pb2.ConfigProto.FromString(context.context().function_call_options.config_proto_serialized)
  return config.graph_options.rewrite_options.memory_optimization == rewriter_config_pb2.RewriterConfig.NO_MEM_OPT


def configure_process(tcmalloc=True):
  """Sets up this process for fast, deterministic TensorFlow on CPU; call before TensorFlow is imported.

  Sets ``TF_CPP_MIN_LOG_LEVEL=2`` and ``TF_CPU_ALLOCATOR_USE_BFC=true`` unless already set; if ``tcmalloc``
  and the library is installed but not loaded, re-executes the current command line with it in
  ``LD_PRELOAD`` (this call then does not return); otherwise applies the glibc tuning. Then imports TensorFlow
  and applies :func:`fix_graph_rewrites`. Returns :func:`allocator_summary`.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
  if "tensorflow" in sys.modules:
    print(
        "warning: configure_process() called after TensorFlow was imported; the allocator settings "
        "take effect only before it",
        file=sys.stderr)
  want = tcmalloc and os.environ.get("OPTIM4RL_TF_TCMALLOC", "1") != "0"
  # The mark holds the pid, which execve keeps: it stops a second re-execution of this process but not
  # that of a child process.
  if want and not tcmalloc_loaded() and os.environ.get(_REEXEC_MARK) != str(os.getpid()):
    path = find_tcmalloc()
    if path and _is_own_command_line():
      env = dict(os.environ)
      env["LD_PRELOAD"] = ":".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
      env[_REEXEC_MARK] = str(os.getpid())
      sys.stdout.flush()
      sys.stderr.flush()
      os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)
  if not tcmalloc_loaded():
    tune_glibc_malloc()
  fix_graph_rewrites()
  return allocator_summary()
