"""glibc malloc tuning: keep large tensor buffers in the heap instead of fresh mmap()s.

TensorFlow on CPU allocates every large intermediate tensor with malloc. glibc serves big requests with
mmap() and returns them with munmap(), so each op on a tens-of-MB tensor pays page faults and kernel page
zeroing again: measured here, an XLA ``tanh`` over a [24, 900000] tensor took 106 ms with the defaults and
18 ms with mmap disabled (2-core CPU). Disabling mmap and heap trimming keeps freed buffers for reuse; the
cost is that the process does not return freed memory to the OS before it exits (peak RSS is unchanged).

Called once when ``optim4rl_tf`` is imported; set ``OPTIM4RL_TF_NO_MALLOPT=1`` to skip it.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_done = False


def tune_malloc():
  """Applies the tuning once (Linux/glibc only). Returns True if it was applied."""
  global _done
  if _done or os.environ.get("OPTIM4RL_TF_NO_MALLOPT") or not sys.platform.startswith("linux"):
    return _done
  try:
    libc = ctypes.CDLL("libc.so.6")
    ok = (libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
          and libc.mallopt(_M_TOP_PAD, 64 << 20) == 1)
  except (OSError, AttributeError):
    ok = False
  _done = ok
  return ok
