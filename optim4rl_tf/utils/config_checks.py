"""Small validators that turn bad configuration values into one clear ValueError each."""

import math
import os
import tempfile


def check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; valid values: {', '.join(map(str, choices))}")
  return value


def check_positive_int(name, value):
  if isinstance(value,
                bool) or not isinstance(value, int) and not (isinstance(value, float) and float(value).is_integer()):
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if int(value) <= 0:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def check_nonnegative_int(name, value):
  if isinstance(value,
                bool) or not isinstance(value, int) and not (isinstance(value, float) and float(value).is_integer()):
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  if int(value) < 0:
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return int(value)


def check_positive(name, value):
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a positive number, got {value!r}") from None
  if not v > 0.0 or v != v or v == float("inf"):
    raise ValueError(f"{name} must be a positive finite number, got {value!r}")
  return v


def check_nonnegative(name, value):
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a non-negative number, got {value!r}") from None
  if not v >= 0.0 or v == float("inf"):
    raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
  return v


def check_unit_interval(name, value, closed=True):
  """value in [0, 1] (closed) or (0, 1] style checks used for discounts and lambdas."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
  if not 0.0 <= v <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value!r}")
  return v


def check_file(name, path):
  if not path or not os.path.isfile(path):
    raise ValueError(f"{name}: file not found: {path!r}")
  return path


def check_writable_dir(path, name="workdir"):
  """Creates ``path`` if needed and checks that a file can be written in it."""
  if not path:
    raise ValueError(f"{name} must be given (a directory to write results into)")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{name} {path!r} exists and is not a directory")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except OSError as e:
    raise ValueError(f"{name} {path!r} is not writable: {e}") from None
  return path


def check_finite(name, value):
  """Any finite number (e.g. ``optimizer.grad_clip``, where <= 0 means off); NaN and +-inf are errors."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a finite number, got {value!r}") from None
  if not math.isfinite(v):
    raise ValueError(f"{name} must be a finite number, got {value!r}")
  return v


# Seeds become int32 stateless RNG keys ([seed + s, 0], s < num_seeds), so every seed label must fit int32.
SEED_MAX = 2**31 - 1


def check_seed(seed, num_seeds, name="seed"):
  """``seed`` and the labels seed .. seed + num_seeds - 1 must lie in [0, SEED_MAX] (int32 RNG keys)."""
  num_seeds = max(int(num_seeds), 1)
  top = SEED_MAX - (num_seeds - 1)
  msg = (f"{name} must be an integer in [0, {top:,}] (seeds {name}..{name}+num_seeds-1 are int32 RNG keys; "
         f"num_seeds={num_seeds}), got {seed!r}")
  if isinstance(seed, bool) or not isinstance(seed, int) and not (isinstance(seed, float) and math.isfinite(seed) and
                                                                  float(seed).is_integer()):
    raise ValueError(msg)
  if not 0 <= int(seed) <= top:
    raise ValueError(msg)
  return int(seed)


def memory_limit_bytes():
  """Memory this process may use: physical RAM (``/proc/meminfo`` MemTotal, else ``os.sysconf``), capped by
  a cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) limit. None if unknown."""
  limits = []
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          limits.append(int(line.split()[1]) * 1024)
          break
  except (OSError, ValueError, IndexError):
    pass
  if not limits:
    try:
      limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):
      pass
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path) as f:
        text = f.read().strip()
      if text.isdigit() and int(text) < (1 << 60):
        limits.append(int(text))
    except OSError:
      pass
  return min(limits) if limits else None


def format_bytes(n):
  for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
    if n >= size:
      return f"{n / size:,.1f} {unit}"
  return f"{n / 1024:.0f} KiB"


def check_memory(what, needed_bytes, hint, limit_bytes=None):
  """Raises if the LOWER-BOUND estimate ``needed_bytes`` exceeds this machine's memory (only obviously
  impossible sizes are refused: the estimate counts a few big tensors, the real run needs more)."""
  limit = memory_limit_bytes() if limit_bytes is None else limit_bytes
  if limit and needed_bytes > limit:
    raise ValueError(f"{what} needs at least {format_bytes(needed_bytes)} of memory, but this machine has "
                     f"{format_bytes(limit)}; {hint}")


def npz_array_shapes(name, path):
  """{key: (shape, itemsize)} of the arrays in an ``.npz`` file, read from the headers only (no data is
  loaded, so a file declaring huge arrays costs nothing)."""
  import stat
  import zipfile
  import numpy as np
  if not stat.S_ISREG(os.stat(path).st_mode):  # a device (a link to /dev/zero) would be read without end
    raise ValueError(f"{name}: {path!r} is not a regular file (a device, pipe or folder?)")
  shapes = {}
  try:
    with zipfile.ZipFile(path) as zf:
      for info in zf.infolist():
        if not info.filename.endswith(".npy"):
          continue
        with zf.open(info) as f:
          version = np.lib.format.read_magic(f)
          if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
          else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        shapes[info.filename[:-4]] = (tuple(int(d) for d in shape), int(dtype.itemsize))
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f"{name}: {path!r} is not a readable .npz file: {e}") from None
  return shapes


def check_npz_size(name, path, max_elements):
  """Refuses an ``.npz`` whose arrays declare more than ``max_elements`` entries in total."""
  shapes = npz_array_shapes(name, path)
  total = sum(math.prod(s) for s, _ in shapes.values())
  if total > max_elements:
    big = max(shapes, key=lambda k: math.prod(shapes[k][0]))
    raise ValueError(f"{name}: {path!r} holds {total:,} numbers (largest: {big!r} with shape "
                     f"{shapes[big][0]}), more than the {max_elements:,} a learned optimizer's meta-parameters "
                     "can plausibly have; is it the right file?")
  return total


def set_fields(config, overrides):
  """Sets dotted fields of a ``ConfigDict`` (``{"optimizer.name": "adam"}``) as ``--config.a.b=v`` would;
  returns the config."""
  for key, value in overrides.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  return config
