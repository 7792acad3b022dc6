"""optim4rl-tf: Optim4RL, the learned optimizer for reinforcement learning, in TensorFlow 2 / Keras 3.

Public API:
  Optim4RL, LinearOptim, L2LGD2, STAR   Keras 3 optimizers (``model.compile(optimizer=...)``)
  load_meta_params, save_meta_params   the ``.npz`` meta-parameter interchange format
  envs                                 batched in-graph gridworlds and Catch (``envs.make``)

Importing the package loads TensorFlow only when one of these names is first used (PEP 562 lazy
attributes), so a launcher can call ``optim4rl_tf.utils.runtime.configure_process()`` before TensorFlow
starts. The one global change is ``register_keras_names()``: it adds the string identifiers "optim4rl",
"linear_optim", "l2lgd2", "star" to Keras's custom objects, at import only where keras is already imported.
"""

import importlib
import sys

import importlib.util

if importlib.util.find_spec("tensorflow") is None:  # (found without importing it)
  raise ImportError("optim4rl_tf needs TensorFlow (2.18 to 2.21), which is not installed. Install the package with "
                    "the extra for your machine: pip install 'optim4rl-tf[cpu]' (tensorflow-cpu) or, on Linux with "
                    "an NVIDIA GPU, pip install 'optim4rl-tf[gpu]' (tensorflow[and-cuda]); from a checkout: "
                    "pip install '.[cpu]' or '.[gpu]'.")

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

__all__ = [
    "Optim4RL", "LinearOptim", "L2LGD2", "STAR", "load_meta_params", "save_meta_params", "envs", "register_keras_names",
    "__version__"
]

# String identifiers Keras resolves (``model.compile(optimizer="optim4rl")``) -> class name.
KERAS_NAMES = {"optim4rl": "Optim4RL", "linear_optim": "LinearOptim", "l2lgd2": "L2LGD2", "star": "STAR"}


class KerasName:
  """What Keras finds for one of ``KERAS_NAMES``: ``keras.optimizers.get(name)`` calls ``from_config`` with
  the identifier's config ({} for a plain string), which returns ``<class>.from_keras_name(config)``. The
  class is imported then (and TensorFlow with it), not when the name is registered."""

  def __init__(self, class_name):
    self.class_name = class_name

  def from_config(self, config=None):
    return getattr(sys.modules[__name__], self.class_name).from_keras_name(config)

  def __repr__(self):
    return f"optim4rl_tf.KerasName({self.class_name!r})"


def register_keras_names():
  """Makes Keras resolve the string identifiers of ``KERAS_NAMES`` ("optim4rl", "linear_optim", "l2lgd2",
  "star") to these optimizers, in ``model.compile(optimizer=...)`` and ``keras.optimizers.get``.

  Keras looks a string up in its own optimizer table and in the global custom-object dict; this function
  adds one ``KerasName`` per identifier to that dict through its public accessor,
  ``keras.saving.get_custom_objects()`` (the dict ``keras.saving.register_keras_serializable`` fills;
  registering the classes there gives them the name "optim4rl_tf>Optim4RL", which a plain string does not
  match). Names already bound to another object are left alone. It runs at ``import optim4rl_tf`` where keras
  is already imported, and when the Keras optimizers are first imported; call it yourself after importing
  keras if you imported optim4rl_tf first and use a string before any optimizer class. Imports keras (not
  TensorFlow when keras has another backend); idempotent. Returns the names now registered."""
  import keras  # pylint: disable=import-outside-toplevel
  objects = keras.saving.get_custom_objects()
  registered = []
  for name, class_name in KERAS_NAMES.items():
    if objects.get(name) is None or isinstance(objects[name], KerasName):
      objects[name] = KerasName(class_name)
      registered.append(name)
  return registered


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


if getattr(sys.modules.get("keras"), "saving", None) is not None:
  register_keras_names()
