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
import tempfile
import zipfile

import numpy as np

from optim4rl_tf import _version
from optim4rl_tf.optimizers import cores
from optim4rl_tf.optimizers import star as star_lib

META_KEY = "__meta__"


def save(path, core, phi):
  """Writes ``phi`` (dict of arrays/tensors) for ``core`` to ``path`` atomically, after validating it."""
  arrays = {k: np.asarray(v, np.float32) for k, v in phi.items()}
  validate(core, arrays, source="phi to save")
  meta = {"optimizer": core.name, "mlp_dims": list(core.mlp_dims), "hidden_size": core.hidden_size,
          "version": _version.__version__}
  if hasattr(core, "meta_info"):  # STAR: its constants (nominal step size, decays ...) travel with phi
    meta.update(core.meta_info())
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **{META_KEY: np.array(json.dumps(meta))}, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def load(path):
  """Reads a meta-parameter file. Returns ``(meta: dict, arrays: dict of float32 arrays)``."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Meta-parameter file {path!r} does not exist")
  try:
    with open(path, "rb") as f:
      raw = f.read()
    data = np.load(io.BytesIO(raw), allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError("it holds a single array, not an .npz archive")
    with data:
      contents = {k: data[k] for k in data.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
    raise ValueError(f"{path!r} is not a readable .npz meta-parameter file (truncated or another "
                     f"format?): {e}") from None
  if META_KEY not in contents:
    raise ValueError(f"{path!r} has no {META_KEY!r} entry; it was not written by optim4rl_tf")
  try:
    meta = json.loads(str(contents.pop(META_KEY)))
    if not isinstance(meta, dict):
      raise ValueError("not a JSON object")
  except ValueError as e:
    raise ValueError(f"{path!r}: the {META_KEY!r} entry is not valid JSON: {e}") from None
  arrays = {k: np.asarray(v, np.float32) for k, v in contents.items()}
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


def infer_mlp_dims(name, arrays):
  """Reads the head sizes from the Dense kernels of an array dict (``mlp1/...`` or ``mlp/...``)."""
  prefix = "mlp1" if name == "optim4rl" else "mlp"
  dims, i = [], 0
  while f"{prefix}/dense_{i}/kernel" in arrays:
    dims.append(int(np.shape(arrays[f"{prefix}/dense_{i}/kernel"])[1]))
    i += 1
  return tuple(dims)


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
    core = cores.make_core(name, (16, 16) if mlp_dims is None else mlp_dims,
                           8 if hidden_size is None else hidden_size)
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
    arrays = {k: np.asarray(v, np.float32) for k, v in meta_params.items() if k != META_KEY}
    if mlp_dims is None:
      mlp_dims = infer_mlp_dims(name, arrays)
    if hidden_size is None:
      rec = "rnn1/recurrent_kernel" if name == "optim4rl" else "rnn/recurrent_kernel"
      hidden_size = int(np.shape(arrays[rec])[0]) if rec in arrays else 8
  else:
    raise ValueError(f"meta_params must be None, a path or a dict of arrays, got {type(meta_params)}")
  core = cores.make_core(name, mlp_dims, hidden_size)
  validate(core, arrays, source=source)
  return core, arrays


def _resolve_star(meta_params, mlp_dims, seed):
  """``resolve`` for STAR: the core's constants come from the file's ``__meta__`` (or the defaults of
  notes §6.5); ``mlp_dims`` None means (4, 4) or the file's. STAR has no recurrent hidden size."""
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
    arrays = {k: np.asarray(v, np.float32) for k, v in meta_params.items() if k != META_KEY}
    if want is None:  # widths of the hidden layers from mlp/w1, mlp/w2, ... (mlp/w0 is 39 x width)
      dims, i = [], 0
      while f"mlp/w{i + 1}" in arrays:
        dims.append(int(np.shape(arrays[f"mlp/w{i}"])[1]))
        i += 1
      want = tuple(dims) if dims else None
    core = star_lib.make_core({"mlp_dims": want})
  else:
    raise ValueError(f"meta_params must be None, a path or a dict of arrays, got {type(meta_params)}")
  validate(core, arrays, source=source)
  return core, arrays
