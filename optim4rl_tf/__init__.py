"""optim4rl-tf: Optim4RL, the learned optimizer for reinforcement learning, in TensorFlow 2 / Keras 3.

Public API:
  Optim4RL, LinearOptim, L2LGD2, STAR   Keras 3 optimizers (``model.compile(optimizer=...)``)
  load_meta_params, save_meta_params   the ``.npz`` meta-parameter interchange format
  envs                            batched in-graph gridworlds and Catch (``envs.make``)
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from optim4rl_tf.utils import malloc as _malloc  # noqa: E402  (before TensorFlow allocates anything)

_malloc.tune_malloc()

from optim4rl_tf._version import __version__  # noqa: E402
from optim4rl_tf.optimizers.keras_optimizers import L2LGD2, LinearOptim, Optim4RL  # noqa: E402
from optim4rl_tf.optimizers.keras_star import STAR  # noqa: E402
from optim4rl_tf.optimizers.meta_params import load as load_meta_params  # noqa: E402
from optim4rl_tf.optimizers.meta_params import save as save_meta_params  # noqa: E402

__all__ = ["Optim4RL", "LinearOptim", "L2LGD2", "STAR", "load_meta_params", "save_meta_params", "__version__"]
