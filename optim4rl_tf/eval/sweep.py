"""Sweeps: a config's grid (``config.sweep``) expanded into runs, and each run's launcher command line.

Grid and index mapping (docs/fidelity.md §9.2, the official sweeper's convention):

* ``config.sweep`` is a ConfigDict ``field -> list of values``, in the order the config file assigns them
  (an empty list means "not swept"). The FIRST key varies fastest: with keys k_0 .. k_{n-1} of sizes
  s_0 .. s_{n-1}, configuration index c (1-based) has value index
  i_j = ((c - 1) // (s_0 * ... * s_{j-1})) mod s_j for key k_j. N = s_0 * ... * s_{n-1} configurations.
  E.g. meta_*_catch (reset_interval (32, 64), meta_lr (5 values), meta_grad (2)): (c - 1) = r + 2 l + 10 q.
* Run index k = 1 .. N * repeats: configuration ((k - 1) mod N) + 1, repeat (k - 1) // N, so runs k and
  k + N share the configuration and differ in the seed: ``seed = base_seed + repeat * seed_stride``
  (``seed_stride`` = ``config.num_seeds`` when the config trains several seeds in one run, else 1).
  Configurations therefore share seeds (common random numbers); repeats never do.
* A key names a config field: a top-level field (``meta_lr``), a dotted path (``optimizer.learning_rate``,
  written ``optimizer__learning_rate`` inside a ConfigDict), or a unique leaf name anywhere in the config
  (``learning_rate`` of configs/a2c.py -> ``optimizer.learning_rate``). Compound keys expand one value into
  several fields: ``meta_grad`` values ``grad_norm_X`` (meta_grad_norm = X, meta_grad_clip = -1),
  ``grad_clip_X`` (meta_grad_clip = X, meta_grad_norm = -1) and ``none`` (both -1); a dict value sets
  several fields at once.

Running the runs (workdirs, skipping, the local pool or Ray, the files written) is
:mod:`optim4rl_tf.eval.sweep_runner`. Standard library only (no TensorFlow): launch/sweep.py imports it
before any run starts.
"""

import copy
import os
import re
import sys
from typing import Any, NamedTuple


class Run(NamedTuple):
  index: int  # 1-based run index k
  config_index: int  # 1-based configuration index c = ((k - 1) mod N) + 1
  repeat: int  # 0-based repeat (k - 1) // N
  seed: Any  # value of the seed field (None when the sweep sets no seed)
  values: dict  # sweep key -> value (as written in the grid)
  overrides: dict  # dotted config path -> value (compound keys expanded; the seed included)
  workdir: str


# ----------------------------------------------------------------------------------------------------
# Grid and config access.


def _is_configdict(x):
  return hasattr(x, "_fields") and hasattr(x, "to_dict")


def _items(d):
  """Items of a ConfigDict in the order the config file set them (``ConfigDict.items()`` sorts)."""
  if _is_configdict(d):
    return list(d._fields.items())  # pylint: disable=protected-access
  return list(d.items())


def _get(config, path):
  node = config
  for part in path.split("."):
    if (_is_configdict(node) or isinstance(node, dict)) and part in node:
      node = node[part]
    else:
      raise KeyError(path)
  return node


def _has(config, path):
  try:
    _get(config, path)
    return True
  except KeyError:
    return False


def _leaf_paths(config, prefix=""):
  out = []
  for k, v in _items(config):
    if k == "sweep":
      continue
    path = f"{prefix}{k}"
    if _is_configdict(v) or isinstance(v, dict):
      out += _leaf_paths(v, path + ".")
    else:
      out.append(path)
  return out


def resolve_key(config, key):
  """Dotted config path of a sweep key (see the module docstring); ValueError if unknown or ambiguous."""
  path = key.replace("__", ".")
  if _has(config, path):
    return path
  matches = [p for p in _leaf_paths(config) if p.rsplit(".", 1)[-1] == key]
  if len(matches) == 1:
    return matches[0]
  if not matches:
    raise ValueError(f"sweep key {key!r} names no field of the config")
  raise ValueError(f"sweep key {key!r} is ambiguous: {', '.join(matches)}; use the dotted path")


_META_GRAD = re.compile(r"^(grad_norm|grad_clip)_([0-9.eE+-]+)$")


def expand_value(config, key, value):
  """{dotted path: value} set by one (key, value) of the grid."""
  if isinstance(value, dict) or _is_configdict(value):
    out = {}
    for k, v in _items(value):
      out.update(expand_value(config, k, v))
    return out
  if key == "meta_grad" and not _has(config, "meta_grad"):
    if isinstance(value, str) and value.lower() in ("none", "off"):
      return {"meta_grad_norm": -1.0, "meta_grad_clip": -1.0}
    match = _META_GRAD.match(str(value))
    if not match:
      raise ValueError(f"meta_grad value {value!r} is not grad_norm_<x>, grad_clip_<x> or none")
    kind, x = match.group(1), float(match.group(2))
    if kind == "grad_norm":
      return {"meta_grad_norm": x, "meta_grad_clip": -1.0}
    return {"meta_grad_clip": x, "meta_grad_norm": -1.0}
  return {resolve_key(config, key): value}


def sweep_grid(config, extra=None, use_config_sweep=True):
  """[(key, values)] of the grid: ``extra`` (list of (key, values), e.g. from the command line) first,
  then ``config.sweep`` in file order; keys with empty lists are left out; an ``extra`` key replaces the
  config's key of the same name."""
  grid = [(k, list(v)) for k, v in (extra or [])]
  names = {k for k, _ in grid}
  if use_config_sweep and _has(config, "sweep"):
    for k, v in _items(_get(config, "sweep")):
      if k in names:
        continue
      grid.append((k, list(v) if isinstance(v, (list, tuple)) else [v]))
  return [(k, v) for k, v in grid if len(v) > 0]


def num_configs(grid):
  n = 1
  for _, values in grid:
    n *= len(values)
  return n


def config_values(grid, config_index):
  """{key: value} of 1-based configuration index ``config_index`` (first key fastest)."""
  n = num_configs(grid)
  if not 1 <= config_index <= n:
    raise ValueError(f"configuration index {config_index} out of range 1..{n}")
  rest, out = config_index - 1, {}
  for key, values in grid:
    out[key] = values[rest % len(values)]
    rest //= len(values)
  return out


def config_index_of(grid, values):
  """Inverse of :func:`config_values`."""
  index, stride = 0, 1
  for key, vals in grid:
    index += vals.index(values[key]) * stride
    stride *= len(vals)
  return index + 1


def expand(config, sweep_dir, grid=None, repeats=1, seed_field="seed", seed_stride=None, base_seed=None):
  """All runs of the sweep (list of :class:`Run`, index order).

  Args:
    config: the (base) ConfigDict.
    sweep_dir: directory holding one workdir per run.
    grid: [(key, values)] (default :func:`sweep_grid`).
    repeats: runs per configuration (different seeds).
    seed_field: config field receiving the seed ('' or None: the sweep sets no seed).
    seed_stride: seed step between repeats (default: ``config.num_seeds`` if present, else 1).
    base_seed: seed of repeat 0 (default: the config's own seed field value, else 0).
  """
  grid = sweep_grid(config) if grid is None else grid
  for key, values in grid:  # validate every key and value before anything runs
    for value in values:
      expand_value(config, key, value)
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  n = num_configs(grid)
  if seed_field:
    if seed_stride is None:
      seed_stride = int(_get(config, "num_seeds")) if _has(config, "num_seeds") else 1
    if base_seed is None:
      base_seed = int(_get(config, seed_field)) if _has(config, seed_field) else 0
  runs = []
  for k in range(1, n * repeats + 1):
    c, rep = (k - 1) % n + 1, (k - 1) // n
    values = config_values(grid, c)
    overrides = {}
    for key, value in values.items():
      overrides.update(expand_value(config, key, value))
    seed = None
    if seed_field:
      seed = int(base_seed) + rep * int(seed_stride)
      overrides[seed_field] = seed
    runs.append(
        Run(index=k,
            config_index=c,
            repeat=rep,
            seed=seed,
            values=values,
            overrides=overrides,
            workdir=os.path.join(sweep_dir, str(k))))
  return runs


def apply_overrides(config, overrides):
  """A copy of ``config`` with {dotted path: value} set (type-checked by ConfigDict)."""
  cfg = copy.deepcopy(config)
  if hasattr(cfg, "unlock"):
    cfg.unlock()
  for path, value in overrides.items():
    parts = path.split(".")
    node = cfg
    for part in parts[:-1]:
      node = node[part]
    old = node[parts[-1]] if parts[-1] in node else None
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[parts[-1]] = value
  return cfg


def _format(value):
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(_format(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def command(run, launcher, config_spec, base_args=(), python=None, workdir_flag="workdir"):
  """The launcher command line of one run (a list for ``subprocess``)."""
  cmd = [python or sys.executable, launcher, f"--config={config_spec}", *base_args]
  cmd += [f"--config.{path}={_format(v)}" for path, v in run.overrides.items()]
  cmd.append(f"--{workdir_flag}={run.workdir}")
  return cmd


def describe(run):
  vals = " ".join(f"{k}={_format(v)}" for k, v in run.values.items())
  seed = "" if run.seed is None else f" seed={run.seed}"
  return f"{vals}{seed}".strip()


def format_ranges(indices):
  """[1, 2, 3, 5] -> '1-3,5'."""
  out, indices = [], sorted(indices)
  i = 0
  while i < len(indices):
    j = i
    while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
      j += 1
    out.append(str(indices[i]) if i == j else f"{indices[i]}-{indices[j]}")
    i = j + 1
  return ",".join(out)


def parse_ranges(text, maximum):
  """'1-3,5' -> [1, 2, 3, 5] (1-based, checked against ``maximum``)."""
  out = []
  for part in str(text).split(","):
    part = part.strip()
    if not part:
      continue
    if "-" in part:
      a, b = part.split("-", 1)
      out += list(range(int(a), int(b) + 1))
    else:
      out.append(int(part))
  bad = [i for i in out if not 1 <= i <= maximum]
  if bad:
    raise ValueError(f"run indices {bad} out of range 1..{maximum}")
  return sorted(set(out))


def parse_grid_arg(text, natural_sort=True):
  """'key=v1,v2,...' or 'key=glob:pattern' (files, naturally sorted) -> (key, [values]).

  Values are parsed as int, float, true/false, else kept as strings."""
  if "=" not in text:
    raise ValueError(f"--grid needs key=values, got {text!r}")
  key, rest = text.split("=", 1)
  key = key.strip()
  if rest.startswith("glob:"):
    import glob  # pylint: disable=import-outside-toplevel
    files = glob.glob(rest[len("glob:"):])
    if not files:
      raise ValueError(f"--grid {key}: the pattern {rest[5:]!r} matches no file")
    key_fn = _natural_key if natural_sort else None
    return key, sorted(files, key=key_fn)
  return key, [_parse_scalar(v) for v in rest.split(",") if v.strip()]


def _natural_key(s):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _parse_scalar(v):
  v = v.strip()
  if v.lower() in ("true", "false"):
    return v.lower() == "true"
  for cast in (int, float):
    try:
      return cast(v)
    except ValueError:
      pass
  return v
