"""Workdir safety helpers shared by the launchers.

* ``lock(workdir)``: an exclusive, non-blocking ``fcntl.flock`` on ``WORKDIR/.lock`` so two
  processes never run in the same workdir at once. The lock dies with the process (no stale
  locks after SIGKILL); the pid written into the file is only for the error message.
* ``check_config(workdir, config, ignore)``: refuse to resume a workdir whose ``config.json``
  differs from the requested config in any field that matters (fields in ``ignore`` -- e.g. the
  training budget or logging frequency -- may change between runs).
* ``atomic_write(path, data)``: temp file in the same folder + ``os.replace``; a failed write
  (disk full) leaves the old file intact and no temp file behind.

Every failure is a ``WorkdirError`` (a ``ValueError``) or ``OSError`` with a one-line message.
"""

import contextlib
import fcntl
import json
import os
import tempfile

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"


class WorkdirError(ValueError):
  """A workdir cannot be used as asked. The message is one line."""


def _flatten(d, prefix=""):
  out = {}
  if hasattr(d, "to_dict"):  # ml_collections.ConfigDict
    d = d.to_dict()
  for k, v in dict(d).items():
    key = f"{prefix}{k}"
    if hasattr(v, "to_dict"):
      v = v.to_dict()
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    elif isinstance(v, (list, tuple)) and any(isinstance(x, dict) or hasattr(x, "to_dict") for x in v):
      for i, x in enumerate(v):  # lists of sub-configs: tasks[0].num_units
        if isinstance(x, dict) or hasattr(x, "to_dict"):
          out.update(_flatten(x, f"{key}[{i}]."))
        else:
          out[f"{key}[{i}]"] = x
    else:
      out[key] = v
  return out


def _normalize(v):
  """JSON round trip so tuples/lists and ints/floats compare as they were stored."""
  try:
    return json.loads(json.dumps(v, default=str))
  except (TypeError, ValueError):
    return str(v)


def _ignored(key, ignore):
  for pattern in ignore:
    if key == pattern or key.startswith((pattern + ".", pattern + "[")):
      return True
  return False


def _fmt(v):
  if v is _MISSING:
    return "(unset)"
  if isinstance(v, str):
    return v if v else "''"
  return json.dumps(v)


_MISSING = object()


@contextlib.contextmanager
def lock(workdir):
  """Holds an exclusive lock on ``workdir`` (created if needed) for the ``with`` block."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
      try:
        other = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
      except OSError:
        other = "?"
      raise WorkdirError(f"workdir {workdir} is in use by another process (pid {other})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
      yield workdir
    finally:
      try:
        os.ftruncate(fd, 0)
      except OSError:
        pass
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def config_differences(old, new, ignore=()):
  """``[(field, old, new)]`` for flattened fields that differ and are not ignored."""
  a = {k: _normalize(v) for k, v in _flatten(old).items()}
  b = {k: _normalize(v) for k, v in _flatten(new).items()}
  diffs = []
  for key in sorted(set(a) | set(b)):
    if _ignored(key, ignore):
      continue
    va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
    if va != vb:
      diffs.append((key, va, vb))
  return diffs


def check_config(workdir, config, ignore=()):
  """Raises WorkdirError if ``WORKDIR/config.json`` exists and differs from ``config``.

  Fields are compared flattened with dotted names (``optimizer.lr``); names in ``ignore`` (or
  prefixes of them) may differ. Nothing is written.
  """
  workdir = os.fspath(workdir)
  path = os.path.join(workdir, CONFIG_NAME)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"workdir {workdir} has an unreadable {CONFIG_NAME} ({e}); "
                       "use a new --workdir") from None
  if not isinstance(old, dict):
    raise WorkdirError(f"workdir {workdir} has an invalid {CONFIG_NAME}; use a new --workdir")
  raise_if_different(workdir, old, config, ignore)


def raise_if_different(workdir, old, config, ignore=()):
  """``check_config`` with the old config given (e.g. after upgrading an older config.json)."""
  diffs = config_differences(old, config, ignore)
  if diffs:
    text = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, a, b in diffs)
    raise WorkdirError(f"workdir {workdir} was made with a different config: {text}; "
                       "use a new --workdir")


def read_json_dict(path):
  """The JSON object in ``path`` as a dict; None when the file is missing, unreadable, not JSON or not an
  object (a run that never wrote it, or one killed mid-write by an older version)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def remove_stale_temps(folder):
  """Removes the temp files of :func:`atomic_write` (``<name>.<random>.tmp``) in ``folder``: a process killed
  mid-write (SIGKILL) leaves one. Call it only while holding the folder's lock (no writer is running then).
  Returns the removed names."""
  removed = []
  try:
    names = os.listdir(folder)
  except OSError:
    return removed
  for name in names:
    parts = name.split(".")
    if len(parts) >= 3 and name.endswith(".tmp") and os.path.isfile(os.path.join(folder, name)):
      try:
        os.remove(os.path.join(folder, name))
        removed.append(name)
      except OSError:
        pass
  return removed


def atomic_write(path, data):
  """Writes ``data`` (bytes or str, str as UTF-8) to ``path`` via a same-folder temp file + ``os.replace``.

  The file ends up mode 0644 (``mkstemp`` makes 0600). A kill or error mid-write keeps the old file and
  leaves no temp file; an ``OSError`` (disk full) is re-raised with one line naming ``path``."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  if isinstance(data, str):
    data = data.encode("utf-8")
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    reason = e.strerror or str(e) or type(e).__name__
    raise OSError(e.errno, f"could not write {path}: {reason}") from None
  finally:
    if tmp is not None:
      try:
        os.remove(tmp)
      except OSError:
        pass


@contextlib.contextmanager
def lock_unless_held(workdir):
  """:func:`lock`, except that a lock this process holds already (a launcher that locked ``workdir`` before
  calling a run function) is reused instead of refused."""
  workdir = os.fspath(workdir)
  try:
    with open(os.path.join(workdir, LOCK_NAME)) as f:
      holder = f.read(64).strip()
  except OSError:
    holder = ""
  try:
    cm = lock(workdir)
    cm.__enter__()
  except WorkdirError:
    if holder != str(os.getpid()):
      raise
    yield workdir  # (flock is per open file: this process's other descriptor holds it)
    return
  try:
    yield workdir
  finally:
    cm.__exit__(None, None, None)


def write_arrays(path, arrays, meta):
  """A checkpoint file: the numpy ``arrays`` (dict name -> array) and ``meta`` (a JSON-ready dict) in one
  ``.npz`` written with :func:`atomic_write`, so a kill mid-write keeps the previous file whole."""
  import io  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  if "__meta__" in arrays:
    raise ValueError("'__meta__' is reserved for the checkpoint's metadata")
  blob = np.frombuffer(json.dumps(meta, sort_keys=True, default=str).encode("utf-8"), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, __meta__=blob, **arrays)
  atomic_write(path, buf.getvalue())


def read_arrays(path):
  """``(arrays, meta)`` of a file :func:`write_arrays` wrote. A damaged or truncated file raises one
  WorkdirError naming it (the file is left as it is)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}  # reads every member: zip CRCs are checked
    meta = json.loads(bytes(arrays.pop("__meta__")).decode("utf-8"))
    if not isinstance(meta, dict):
      raise ValueError("metadata is not a JSON object")
  except Exception as e:  # pylint: disable=broad-except   (BadZipFile, EOFError, KeyError, ValueError, ...)
    first = (str(e).strip().splitlines() or [""])[0]
    raise WorkdirError(f"checkpoint {path} is damaged or truncated ({type(e).__name__}: {first[:200]}); "
                       "nothing was changed: move it away to start the run again from its beginning, or use a "
                       "new --workdir") from None
  return arrays, meta


def truncate_tensorboard(tb_dir, last_step, drop_hparams=False):
  """Rewrites the event files in ``tb_dir`` and its runs (sub-directories, e.g. ``tb/seed_3``) without the
  summaries after ``last_step`` (and without a record cut short by a kill), so steps redone after a resume appear
  once in TensorBoard. ``drop_hparams``: also without the HParams plugin's summaries (``_hparams_/...``, written at
  step 0), which the resumed run writes again."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow.core.util import event_pb2  # pylint: disable=import-outside-toplevel
  paths = []
  for folder, _, names in os.walk(os.fspath(tb_dir)):
    paths += [os.path.join(folder, n) for n in names if "tfevents" in n and not n.endswith(".truncating")]
  for path in sorted(paths):
    if not os.path.isfile(path):
      continue
    kept, changed = [], False
    try:
      for record in tf.data.TFRecordDataset(path):
        raw = record.numpy()
        event = event_pb2.Event.FromString(raw)
        if event.HasField("summary") and (event.step > last_step or
                                          (drop_hparams and
                                           any(v.tag.startswith("_hparams_/") for v in event.summary.value))):
          changed = True
        else:
          kept.append(raw)
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError):
      changed = True  # a truncated last record: keep what was complete
    if changed:
      tmp = path + ".truncating"
      try:
        with tf.io.TFRecordWriter(tmp) as w:
          for raw in kept:
            w.write(raw)
        os.replace(tmp, path)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
