"""MNIST training data for the supervised gradient collection (docs/fidelity.md §8.1), read from local files,
or the scikit-learn digits STAND-IN when no path is given (nothing is downloaded).

  x, y, label, stand_in = load_data(config)     # x: uint8/float [N, 28, 28, 1], y: int32 [N]

See ``optim4rl_tf.analysis.supervised`` for the accepted layouts (IDX files, Keras' mnist.npz, official train.npz).
"""

import gzip
import os
import struct

import numpy as np

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_HELP = ("download the MNIST training set -- train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from the "
              "MNIST database (yann.lecun.com/exdb/mnist or a mirror), or Keras' mnist.npz "
              "(storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) -- and put the files in that directory "
              "(or pass the .npz file itself as --config.data.path); leave --config.data.path empty to use the "
              "scikit-learn digits stand-in")
MNIST_STEPS = 4200  # 10 epochs x 420 batches of the official run
STAND_IN_LABEL = "STAND-IN: scikit-learn digits (8x8) resized to 28x28, not MNIST"


# ----- data --------------------------------------------------------------------------------------------
def read_idx(path):
  """Reads an IDX file (optionally gzipped) into a numpy array (unsigned-byte and other IDX types)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(f"{path}: not an IDX file (bad magic number)")
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  code, ndim = raw[2], raw[3]
  if code not in dtypes:
    raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
  dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
  dtype = np.dtype(dtypes[code])
  count = int(np.prod(dims)) if dims else 1
  offset = 4 + 4 * ndim
  if len(raw) - offset < count * dtype.itemsize:
    raise ValueError(f"{path}: truncated IDX file ({len(raw) - offset} data bytes for shape {dims})")
  return np.frombuffer(raw, dtype, count, offset).reshape(dims)


def _find(directory, names):
  for n in names:
    p = os.path.join(directory, n)
    if os.path.isfile(p):
      return p
  return None


def _load_npz(path):
  with np.load(path, allow_pickle=False) as d:
    for kx, ky in (("x_train", "y_train"), ("x", "y")):
      if kx in d.files and ky in d.files:
        return np.asarray(d[kx]), np.asarray(d[ky])
    raise ValueError(f"{path}: expected arrays x_train/y_train (Keras mnist.npz) or x/y (official "
                     f"train.npz), found {d.files}")


def load_mnist(path):
  """MNIST training set from local files (see module docstring).

  Returns (x float32 [N, 28, 28, 1] in 0..255, y int32 [N], description).
  Raises FileNotFoundError naming what to download and where to put it.
  """
  path = os.path.expanduser(os.fspath(path))
  if os.path.isfile(path):
    if path.endswith(".npz"):
      x, y = _load_npz(path)
      src = path
    elif "idx3" in os.path.basename(path):
      directory = os.path.dirname(path)
      return load_mnist(directory)
    else:
      raise ValueError(f"data.path {path!r} is neither a directory nor an .npz / IDX file")
  elif os.path.isdir(path):
    img = _find(path, ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte",
                       "train-images.idx3-ubyte.gz"))
    lab = _find(path, ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte", "train-labels.idx1-ubyte",
                       "train-labels.idx1-ubyte.gz"))
    npz = _find(path, ("mnist.npz", "train.npz"))
    if img and lab:
      x, y, src = read_idx(img), read_idx(lab), f"{img} + {lab}"
    elif npz:
      x, y = _load_npz(npz)
      src = npz
    elif img or lab:
      missing = "train-labels-idx1-ubyte.gz" if img else "train-images-idx3-ubyte.gz"
      raise FileNotFoundError(f"MNIST in {path!r} is incomplete: {missing} is missing; {MNIST_HELP}")
    else:
      raise FileNotFoundError(f"no MNIST training files in {path!r}; {MNIST_HELP}")
  else:
    raise FileNotFoundError(f"MNIST data path {path!r} does not exist; {MNIST_HELP}")
  x = np.asarray(x)
  y = np.asarray(y).reshape(-1).astype(np.int32)
  if x.ndim == 2 and x.shape[1] == 784:
    x = x.reshape(-1, 28, 28)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3 or x.shape[1:] != (28, 28) or x.shape[0] != y.shape[0]:
    raise ValueError(f"{src}: expected images [N, 28, 28] and N labels, got {x.shape} and {y.shape}")
  if y.min() < 0 or y.max() > 9:
    raise ValueError(f"{src}: labels must be 0..9, got range [{y.min()}, {y.max()}]")
  x = x.astype(np.float32)
  if x.max() <= 1.0:  # already scaled to [0, 1]: back to 0..255
    x = x * 255.0
  name = "Fashion-MNIST" if "fashion" in src.lower() else "MNIST"
  return x[..., None], y, f"{name} ({x.shape[0]} training images from {src})"


def load_digits_stand_in():
  """scikit-learn's digits as a 28x28 MNIST stand-in: (x float32 [1797, 28, 28, 1] in 0..255, y, label)."""
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    raise ImportError("the default MNIST stand-in needs scikit-learn (its digits data ship inside the "
                      "wheel): pip install scikit-learn==1.9.1 -- or point --config.data.path to local "
                      "MNIST files") from None
  from scipy import ndimage
  d = load_digits()
  imgs = d.images.astype(np.float64) * (255.0 / 16.0)  # 0..16 -> 0..255
  small = np.stack([ndimage.zoom(im, 20.0 / 8.0, order=1, mode="nearest", grid_mode=True) for im in imgs])
  x = np.zeros((len(imgs), 28, 28), np.float32)
  x[:, 4:24, 4:24] = np.clip(small, 0.0, 255.0)
  return x[..., None], d.target.astype(np.int32), STAND_IN_LABEL


def load_data(config):
  """(x [N,28,28,1] 0..255, y, label, stand_in) for ``config.data``."""
  path = config.data.path
  if path:
    x, y, label = load_mnist(path)
    return x, y, label, "Fashion-MNIST" in label
  x, y, label = load_digits_stand_in()
  return x, y, label, True
