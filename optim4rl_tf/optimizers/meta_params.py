"""The ``.npz`` meta-parameter file: the project's interchange format for learned optimizers.

One file holds one optimizer's phi: an array per key of ``core.meta_param_shapes()`` (e.g. ``rnn1/kernel``
(1, 24) for Optim4RL) and ``__meta__``, a JSON string::

  {"optimizer": "optim4rl", "mlp_dims": [16, 16], "hidden_size": 8, "version": "0.1.0"}

The meta-trainer writes it, the Keras optimizers and the agents read it, pretrained optimizers ship in it.
Every failure to read or match a file raises one ``ValueError`` (or ``FileNotFoundError``) naming the file
and the problem. Writing is atomic (temporary file + rename), so a crash never leaves a half-written file.
"""

import io
import json
import os
import stat
import zipfile
import zlib

import numpy as np

# |x| above this is treated like NaN in meta-parameters and agent parameters, by meta-training's divergence
# guard (meta/pipeline.py) and by every loader here, so a file meta-training would refuse never trains an agent.
# float32 overflows to inf within a matmul or two from here on; phi and agent weights of a sane run are O(1).
ABSURD = 1e15
# |x| above this in meta-parameters (phi) marks a meta-training that blew up, for the guard and every loader.
# Trained files hold O(1) values (the shipped ones stay below 2.3) and meta-Adam moves an entry by about
# meta_lr per outer iteration, so 1e6 is reached only by a diverging run (meta_lr=1e13 gives 1e13 after one
# iteration: finite, below ABSURD, and a useless optimizer).
PHI_LIMIT = 1e6

from optim4rl_tf import _version
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import star as star_lib
from optim4rl_tf.utils import workdir

META_KEY = "__meta__"


def save(path, core, phi, extra_meta=None):
  """Writes ``phi`` (dict of arrays/tensors) for ``core`` to ``path`` atomically, after validating it.

  ``extra_meta``: more JSON-serialisable entries for ``__meta__`` (provenance of a shipped optimizer). The
  bytes depend only on the arrays and the meta entries (members in sorted order, a fixed zip timestamp), so
  the same phi always gives the same file."""
  arrays = {k: np.asarray(v, np.float32) for k, v in phi.items()}
  validate(core, arrays, source="phi to save")
  meta = dict(extra_meta or {})
  meta.update({
      "optimizer": core.name,
      "mlp_dims": list(core.mlp_dims),
      "hidden_size": core.hidden_size,
      "version": _version.__version__
  })
  if hasattr(core, "meta_info"):  # STAR: its constants (nominal step size, decays ...) travel with phi
    meta.update(core.meta_info())
  members = {META_KEY: np.array(json.dumps(meta, sort_keys=True)), **arrays}
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  buffer = io.BytesIO()  # built in memory (phi is small), then written atomically (0644, no temp file left)
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
    for key in sorted(members):
      info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.external_attr = 0o644 << 16
      with zf.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(members[key]), allow_pickle=False)
  workdir.atomic_write(path, buffer.getvalue())
  return path


def read_meta(path):
  """The ``__meta__`` dict of a meta-parameter file (everything is checked as by :func:`load`)."""
  return load(path)[0]


# Limits applied by ``load`` before anything is decompressed: the ``__meta__`` JSON string and the size of
# the optimizer a ``__meta__`` entry may declare (the real ones hold a few thousand floats).
MAX_META_BYTES = 1 << 20
MAX_PHI_ELEMENTS = 1 << 26
MAX_LAYER_WIDTH = 1 << 16
_MAX_NPY_HEADER = 10000


class _Unreadable(Exception):
  """Internal: the archive itself cannot be read (becomes the 'not a readable .npz' ValueError)."""


def load(path):
  """Reads a meta-parameter file. Returns ``(meta: dict, arrays: dict of float32 arrays)``; a NaN or Inf
  in an array is a ValueError naming its key.

  Nothing is decompressed before it is known to be what the file's optimizer expects: member names,
  ``.npy`` header shapes and dtypes, and the uncompressed sizes recorded in the zip directory
  (``ZipInfo.file_size``, which also bounds what reading may inflate) are checked first, so a small
  file cannot make the loader allocate or inflate gigabytes.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Meta-parameter file {path!r} does not exist")
  if not stat.S_ISREG(os.stat(path).st_mode):  # a device (a link to /dev/zero) would be read without end
    raise ValueError(f"{path!r} is not a regular file (a device, pipe or folder?); give a .npz meta-parameter file")
  try:
    with zipfile.ZipFile(path) as zf:
      return _load_checked(path, zf)
  except (_Unreadable, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
          zlib.error) as e:
    raise ValueError(f"{path!r} is not a readable .npz meta-parameter file (truncated or another "
                     f"format?): {e}") from None


def _npy_header(zf, info):
  """(shape, dtype, header bytes) of one member, read from its ``.npy`` header only."""
  with zf.open(info) as f:
    try:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
      elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
      else:
        raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
      raise _Unreadable(f"member {info.filename!r} is not a valid .npy array: {e}") from None
    return tuple(int(s) for s in shape), dtype, f.tell()


def _check_member(path, info, shape, dtype, header_len, want_shape, kinds, max_bytes=None):
  name = info.filename[:-len(".npy")]
  if dtype.hasobject or dtype.kind not in kinds:
    raise ValueError(f"{path!r}: {name!r} has dtype {dtype}, expected "
                     f"{'a float type' if kinds == 'f' else 'a string'}")
  if shape != tuple(want_shape):
    return False
  size = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if info.file_size != size:
    raise ValueError(f"{path!r}: {name!r} declares {info.file_size} bytes, but its header says {size} "
                     "(corrupt file)")
  if max_bytes is not None and size > max_bytes:
    raise ValueError(f"{path!r}: {name!r} is {size} bytes, more than the limit {max_bytes}")
  return True


def _core_from_meta(path, meta):
  """The core a file's ``__meta__`` describes (its expected keys and shapes), sizes checked first."""
  name = meta.get("optimizer")
  default_dims = star_lib.DEFAULT_OPTIONS["mlp_dims"] if name == star_lib.NAME else ()
  dims, hidden = meta.get("mlp_dims", default_dims), meta.get("hidden_size", 8)
  ok = (isinstance(dims, (list, tuple)) and all(type(d) is int and 0 < d <= MAX_LAYER_WIDTH for d in dims) and
        (name == star_lib.NAME or type(hidden) is int and 0 < hidden <= MAX_LAYER_WIDTH))
  if not ok:
    raise ValueError(f"{path!r}: the {META_KEY!r} entry has invalid sizes mlp_dims={dims!r}, "
                     f"hidden_size={hidden!r}")
  try:
    if name == star_lib.NAME:
      core = star_lib.make_core(dict(meta, mlp_dims=tuple(dims)))
    elif name in cores.CORES:
      core = cores.make_core(name, tuple(dims), hidden)
    else:
      raise ValueError(f"it was made for an unknown optimizer {name!r}")
    expected = core.meta_param_shapes()
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path!r}: the {META_KEY!r} entry does not describe a known optimizer: {e}") from None
  if sum(int(np.prod(s, dtype=np.int64)) for s in expected.values()) > MAX_PHI_ELEMENTS:
    raise ValueError(f"{path!r}: the {META_KEY!r} entry declares an optimizer with more than "
                     f"{MAX_PHI_ELEMENTS} meta-parameters")
  return core, expected


def _load_checked(path, zf):
  infos = {}
  for info in zf.infolist():
    if info.is_dir() or not info.filename.endswith(".npy"):
      raise _Unreadable(f"member {info.filename!r} is not an .npy array")
    infos[info.filename[:-len(".npy")]] = info
  if META_KEY not in infos:
    raise ValueError(f"{path!r} has no {META_KEY!r} entry; it was not written by optim4rl_tf")
  info = infos.pop(META_KEY)
  shape, dtype, header_len = _npy_header(zf, info)
  if not _check_member(path, info, shape, dtype, header_len, (), "U", MAX_META_BYTES):
    raise ValueError(f"{path!r}: the {META_KEY!r} entry has shape {shape}, expected a single string")
  with zf.open(info) as f:
    raw = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_NPY_HEADER)
  try:
    meta = json.loads(str(raw))
    if not isinstance(meta, dict):
      raise ValueError("not a JSON object")
  except ValueError as e:
    raise ValueError(f"{path!r}: the {META_KEY!r} entry is not valid JSON: {e}") from None
  core, expected = _core_from_meta(path, meta)
  desc = f"{core.name} (mlp_dims={list(core.mlp_dims)}, hidden_size={core.hidden_size})"
  missing, extra = sorted(set(expected) - set(infos)), sorted(set(infos) - set(expected))
  if missing or extra:
    raise ValueError(f"{path!r} does not match {desc}: missing keys {missing}, unexpected keys {extra}")
  for key in sorted(infos):  # every header checked before any array is read
    shape, dtype, header_len = _npy_header(zf, infos[key])
    if not _check_member(path, infos[key], shape, dtype, header_len, expected[key], "f"):
      raise ValueError(f"{path!r} does not match {desc}: {key!r} has shape {shape}, expected "
                       f"{tuple(expected[key])}")
  arrays = {}
  for key in sorted(infos):
    with zf.open(infos[key]) as f:
      arrays[key] = np.asarray(np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_NPY_HEADER),
                               np.float32)
    if not np.all(np.isfinite(arrays[key])):
      raise ValueError(f"{path!r}: meta-parameter {key!r} contains NaN or Inf; a usable file holds finite values")
    if np.any(np.abs(arrays[key]) > PHI_LIMIT):
      raise ValueError(f"{path!r}: meta-parameter {key!r} holds values beyond |x| = {PHI_LIMIT:g} (max "
                       f"{float(np.max(np.abs(arrays[key]))):.3g}), which meta-training treats as diverged; a "
                       "usable file holds O(1) values")
  return meta, arrays


def validate(core, arrays, source="meta_params"):
  """Checks keys, shapes and finiteness of ``arrays`` against ``core``; raises ValueError naming the
  first mismatch."""
  expected = core.meta_param_shapes()
  desc = f"{core.name} (mlp_dims={list(core.mlp_dims)}, hidden_size={core.hidden_size})"
  missing = sorted(set(expected) - set(arrays))
  extra = sorted(set(arrays) - set(expected))
  if missing or extra:
    raise ValueError(f"{source} does not match {desc}: missing keys {missing}, unexpected keys {extra}")
  for key, shape in expected.items():
    got = tuple(np.shape(arrays[key]))
    if got != tuple(shape):
      raise ValueError(f"{source} does not match {desc}: {key!r} has shape {got}, expected {tuple(shape)}")
    if not np.all(np.isfinite(arrays[key])):
      raise ValueError(f"{source}: {key!r} contains NaN or Inf")
    if np.any(np.abs(np.asarray(arrays[key])) > PHI_LIMIT):
      raise ValueError(f"{source}: {key!r} holds values beyond |x| = {PHI_LIMIT:g}, which meta-training treats as "
                       "diverged")


def infer_mlp_dims(name, arrays):
  """Reads the head sizes from the Dense kernels of an array dict (``mlp1/...`` or ``mlp/...``)."""
  prefix = "mlp1" if name == "optim4rl" else "mlp"
  dims, i = [], 0
  while f"{prefix}/dense_{i}/kernel" in arrays:
    dims.append(int(np.shape(arrays[f"{prefix}/dense_{i}/kernel"])[1]))
    i += 1
  return tuple(dims)


def arrays_from_dict(name, phi, source="meta_params dict"):
  """Checks an in-memory meta-parameter dict of optimizer ``name`` entry by entry. Returns ``(arrays,
  meta)``: float32 arrays for every key but ``__meta__``, and that optional ``__meta__`` (a dict or a JSON
  string, as ``dict(np.load(file))`` gives it) as a dict with checked ``mlp_dims``/``hidden_size``.
  Raises one ValueError naming the offending key (keys, shapes and finiteness are ``validate``'s job)."""
  if not isinstance(phi, dict):
    raise ValueError(f"{source} must be a dict {{key: array}}, got {type(phi).__name__}")
  arrays = {}
  for key, value in phi.items():
    if not isinstance(key, str):
      raise ValueError(f"{source}: key {key!r} is not a string")
    if key == META_KEY:
      continue
    try:
      raw = np.asarray(value)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{source}: {key!r} is not a numeric array: {e}") from None
    if raw.dtype.kind not in "iuf":
      raise ValueError(f"{source}: {key!r} holds {raw.dtype} values, expected numbers")
    arrays[key] = raw.astype(np.float32)
  return arrays, _dict_meta(name, phi.get(META_KEY), source)


def _dict_meta(name, meta, source):
  """The ``__meta__`` entry of an in-memory dict, parsed and checked (``{}`` when absent)."""
  if meta is None:
    return {}
  where = f"{source}: {META_KEY!r}"
  if isinstance(meta, np.ndarray) and meta.shape == () and meta.dtype.kind in "US":
    meta = meta.item()
  if isinstance(meta, bytes):
    meta = meta.decode("utf-8", "replace")
  if isinstance(meta, str):
    try:
      meta = json.loads(meta)
    except ValueError as e:
      raise ValueError(f"{where} is not valid JSON: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{where} must be a dict or a JSON object string, got {type(meta).__name__}")
  if meta.get("optimizer", name) != name:
    raise ValueError(f"{where} says the dict was made for optimizer {meta['optimizer']!r}, not {name!r}")
  meta = dict(meta)
  if "mlp_dims" in meta:
    meta["mlp_dims"] = cores.positive_ints(meta["mlp_dims"], f"{where}['mlp_dims']")
  if "hidden_size" in meta and name != star_lib.NAME:
    meta["hidden_size"] = cores.positive_int(meta["hidden_size"], f"{where}['hidden_size']")
  return meta


def resolve(name, meta_params=None, mlp_dims=None, hidden_size=None, seed=0):
  """Builds the core of learned optimizer ``name`` and its phi.

  Args:
    name: learned optimizer name.
    meta_params: ``None`` (fresh phi from ``seed``), a path to an ``.npz`` file, or a dict of arrays.
    mlp_dims, hidden_size: sizes; ``None`` means "from the file / dict" (or the defaults (16, 16), 8).
  Returns:
    ``(core, phi)`` with phi a dict of float32 numpy arrays.
  """
  if name == star_lib.NAME:
    return _resolve_star(meta_params, mlp_dims, seed)
  if name not in cores.CORES:
    raise ValueError(f"Unknown learned optimizer {name!r}; valid names: "
                     f"{', '.join(cores.LEARNED_NAMES + (star_lib.NAME,))}")
  if meta_params is None or (isinstance(meta_params, str) and not meta_params):
    core = cores.make_core(name, (16, 16) if mlp_dims is None else mlp_dims, 8 if hidden_size is None else hidden_size)
    return core, core.init_meta_params(seed)
  if isinstance(meta_params, (str, os.PathLike)):
    source = repr(os.fspath(meta_params))
    meta, arrays = load(meta_params)
    if meta.get("optimizer") != name:
      raise ValueError(f"Meta-parameter file {source} was made for optimizer {meta.get('optimizer')!r}, "
                       f"not {name!r}")
    file_dims = tuple(meta.get("mlp_dims", ()))
    file_hidden = int(meta.get("hidden_size", 8))
    if mlp_dims is not None and tuple(mlp_dims) != file_dims:
      raise ValueError(f"Meta-parameter file {source} has mlp_dims={list(file_dims)}, but "
                       f"mlp_dims={list(mlp_dims)} was requested")
    if hidden_size is not None and int(hidden_size) != file_hidden:
      raise ValueError(f"Meta-parameter file {source} has hidden_size={file_hidden}, but "
                       f"hidden_size={hidden_size} was requested")
    mlp_dims, hidden_size = file_dims, file_hidden
  elif isinstance(meta_params, dict):
    source = "meta_params dict"
    arrays, meta = arrays_from_dict(name, meta_params, source)
    if mlp_dims is None:
      mlp_dims = meta["mlp_dims"] if "mlp_dims" in meta else infer_mlp_dims(name, arrays)
    if hidden_size is None and "hidden_size" in meta:
      hidden_size = meta["hidden_size"]
    elif hidden_size is None:
      rec = "rnn1/recurrent_kernel" if name == "optim4rl" else "rnn/recurrent_kernel"
      hidden_size = int(np.shape(arrays[rec])[0]) if rec in arrays else 8
  else:
    raise ValueError(f"meta_params must be None, a path or a dict of arrays, got {type(meta_params)}")
  core = cores.make_core(name, mlp_dims, hidden_size)
  validate(core, arrays, source=source)
  return core, arrays


def _resolve_star(meta_params, mlp_dims, seed):
  """``resolve`` for STAR: the core's constants come from the file's ``__meta__`` (or the defaults of
  docs/fidelity.md §6.5); ``mlp_dims`` None means (4, 4) or the file's. STAR has no recurrent hidden size."""
  want = None if mlp_dims is None else tuple(int(d) for d in mlp_dims)
  if meta_params is None or (isinstance(meta_params, str) and not meta_params):
    core = star_lib.make_core({"mlp_dims": want})
    return core, core.init_meta_params(seed)
  if isinstance(meta_params, (str, os.PathLike)):
    source = repr(os.fspath(meta_params))
    meta, arrays = load(meta_params)
    if meta.get("optimizer") != star_lib.NAME:
      raise ValueError(f"Meta-parameter file {source} was made for optimizer {meta.get('optimizer')!r}, "
                       f"not {star_lib.NAME!r}")
    file_dims = tuple(meta.get("mlp_dims", star_lib.DEFAULT_OPTIONS["mlp_dims"]))
    if want is not None and want != file_dims:
      raise ValueError(f"Meta-parameter file {source} has mlp_dims={list(file_dims)}, but "
                       f"mlp_dims={list(want)} was requested")
    core = star_lib.make_core(dict(meta, mlp_dims=file_dims))
  elif isinstance(meta_params, dict):
    source = "meta_params dict"
    arrays, meta = arrays_from_dict(star_lib.NAME, meta_params, source)
    if want is None and "mlp_dims" in meta:
      want = tuple(meta["mlp_dims"])
    if want is None:  # widths of the hidden layers from mlp/w1, mlp/w2, ... (mlp/w0 is 39 x width)
      dims, i = [], 0
      while f"mlp/w{i + 1}" in arrays:
        dims.append(int(np.shape(arrays[f"mlp/w{i}"])[1]))
        i += 1
      want = tuple(dims) if dims else None
    core = star_lib.make_core(dict(meta, mlp_dims=want))  # a __meta__ in the dict brings STAR's constants
  else:
    raise ValueError(f"meta_params must be None, a path or a dict of arrays, got {type(meta_params)}")
  validate(core, arrays, source=source)
  return core, arrays
