"""The gradient collection command (``optim4rl-collect-gradients``, launch/collect_gradients.py): agent or
supervised gradients for Fig. 1, Fig. 5 and Table 4 (docs/fidelity.md §8) into WORKDIR/grads
(optim4rl_tf.analysis.collect: the store; the runs: optim4rl_tf.agents.a2c_train, optim4rl_tf.analysis.supervised).

  python launch/collect_gradients.py --config=configs/collect.py:bdl --workdir=runs/collect_bdl
  python launch/collect_gradients.py --config=configs/collect.py:mnist --workdir=runs/collect_mnist
  python launch/collect_gradients.py --config=configs/collect.py:mnist --config.data.path=~/data/mnist \
      --workdir=runs/collect_mnist

Then: python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4
See configs/collect.py for the variants.

This module imports no TensorFlow (the runs are imported by :func:`main`), so that :func:`console` sets the
process up before TensorFlow loads.
"""

import os

from absl import flags

from optim4rl_tf.utils import cli
from optim4rl_tf.utils import runtime


def define_flags(flag_values, argv=None):
  """The command line, defined on ``flag_values`` (``argv``: where ml_collections reads ``--config.*``
  overrides; None: ``sys.argv``)."""
  cli.define_config_flag(flag_values, argv, "configs/collect.py:bdl")
  flags.DEFINE_string("workdir", None, "Output directory (the gradients go to WORKDIR/grads).", flag_values=flag_values)


def main(argv, flag_values):
  """The command: the config's run (``kind`` 'a2c' or 'supervised') with its gradients recorded under
  ``--workdir``. A bad config or a missing dataset: one line ``error: ...``, exit 2."""
  cli.check_config_and_workdir(argv, flag_values, "configs/collect.py:bdl")
  config, workdir = flag_values.config, flag_values.workdir
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  try:
    if config.kind == "a2c":
      from optim4rl_tf.agents import a2c_train
      from optim4rl_tf.analysis import collect
      a2c_train.train(config, workdir, gradient_probe=collect.gradient_probe_for(config))
    elif config.kind == "supervised":
      from optim4rl_tf.analysis import supervised
      supervised.train(config, workdir)
    else:
      raise ValueError(f"unknown config kind {config.kind!r} (expected 'a2c' or 'supervised')")
  except (ValueError, FileNotFoundError, ImportError) as e:
    cli.fail(e)
  print(f"gradients written to {os.path.join(workdir, config.collect.subdir)}", flush=True)


def console():
  """The ``optim4rl-collect-gradients`` console script (and launch/collect_gradients.py)."""
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  cli.run_command(define_flags, main)
