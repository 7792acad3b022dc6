"""Small validators that turn bad configuration values into one clear ValueError each."""

import os
import tempfile


def check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; valid values: {', '.join(map(str, choices))}")
  return value


def check_positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, int) and not (
      isinstance(value, float) and float(value).is_integer()):
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if int(value) <= 0:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def check_nonnegative_int(name, value):
  if isinstance(value, bool) or not isinstance(value, int) and not (
      isinstance(value, float) and float(value).is_integer()):
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
