"""Tables 5-7: a fixed learned optimizer tested with A2C under other GAE lambda / entropy / discount values.

  python launch/robustness.py --config=configs/robustness.py \
      --config.meta_params=runs/meta_bdl/phi.npz --workdir=runs/robustness
  # reduced budget:
  python launch/robustness.py --config=configs/robustness.py:small_dense_short \
      --config.meta_params=runs/meta_bdl/phi.npz --config.num_seeds=3 --config.train_steps=1e6 \
      --workdir=runs/robustness_small
  # only rebuild the report from finished runs:
  python launch/robustness.py --config=configs/robustness.py ... --workdir=runs/robustness --report_only

Writes WORKDIR/<task>/<setting>/ (one A2C run each, see launch/train.py), WORKDIR/robustness.md (the tables
beside the paper's numbers) and WORKDIR/robustness.json. Finished runs are reused (config.resume).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/robustness.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the report from finished runs only.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/robustness.py")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from optim4rl_tf.configs import a2c as a2c_configs
  from optim4rl_tf.analysis import robustness
  from optim4rl_tf.utils import config_checks as cc
  rc = _CONFIG.value
  try:
    cc.check_writable_dir(_WORKDIR.value)
    if _REPORT_ONLY.value:
      results = []
      for task, setting, cells in robustness.plan(rc):
        p = os.path.join(_WORKDIR.value, task, robustness.setting_key(setting), robustness.RESULT_FILE)
        if os.path.isfile(p):
          with open(p) as f:
            r = json.load(f)
          r["cells"] = [list(c) for c in cells]
          results.append(r)
    else:
      results = robustness.run_all(rc, _WORKDIR.value, a2c_configs.get_config)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  path = robustness.write_report(rc, results, _WORKDIR.value)
  with open(path) as f:
    print(f.read())
  print(f"report: {path}")


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
