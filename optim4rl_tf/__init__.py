"""optim4rl-tf: Optim4RL, the learned optimizer for reinforcement learning, in TensorFlow 2 / Keras 3.

Public API:
  Optim4RL, LinearOptim, L2LGD2, STAR   Keras 3 optimizers (``model.compile(optimizer=...)``)
  load_meta_params, save_meta_params   the ``.npz`` meta-parameter interchange format
  envs                                 batched in-graph gridworlds and Catch (``envs.make``)

Importing the package changes nothing global and loads TensorFlow only when one of these names is first
used (PEP 562 lazy attributes), so a launcher can call ``optim4rl_tf.utils.runtime.configure_process()``
before TensorFlow starts.
"""

import importlib

from optim4rl_tf._version import __version__

_LAZY = {
    "Optim4RL": ("optim4rl_tf.optimizers.keras_optimizers", "Optim4RL"),
    "LinearOptim": ("optim4rl_tf.optimizers.keras_optimizers", "LinearOptim"),
    "L2LGD2": ("optim4rl_tf.optimizers.keras_optimizers", "L2LGD2"),
    "STAR": ("optim4rl_tf.optimizers.keras_star", "STAR"),
    "load_meta_params": ("optim4rl_tf.optimizers.meta_params", "load"),
    "save_meta_params": ("optim4rl_tf.optimizers.meta_params", "save"),
    "envs": ("optim4rl_tf.envs", None),
}

__all__ = ["Optim4RL", "LinearOptim", "L2LGD2", "STAR", "load_meta_params", "save_meta_params", "envs", "__version__"]


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'optim4rl_tf' has no attribute {name!r}")
  module_name, attr = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attr is None else getattr(module, attr)
  globals()[name] = value
  return value


def __dir__():
  return sorted(list(globals()) + [n for n in _LAZY if n not in globals()])
