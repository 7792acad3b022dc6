"""Fig. 1 / Fig. 5 histograms and Table 4 Wasserstein distances from collected gradients (docs/fidelity.md §8).

  python launch/analyze_gradients.py --grads=runs/collect_bdl --grads=runs/collect_mnist --out=runs/table4

Each --grads is a launch/collect_gradients.py workdir (or its grads/ directory). Writes into --out:
fig1_<name>.png (RL collections), fig5_<name>.png (supervised ones), table4.md (measured beside the paper's
numbers) and table4.json. The distances are computed on the raw gradient values (see table4.md).
"""
import sys

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from optim4rl_tf.utils import runtime  # noqa: E402

_GRADS = flags.DEFINE_multi_string("grads", [], "Collection workdir(s) (repeat the flag for several).")
_OUT = flags.DEFINE_string("out", None, "Output directory for figures and table4.md.")
_PARTS = flags.DEFINE_integer("num_parts", 30, "Consecutive parts along time (paper: 30).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not _GRADS.value:
    raise app.UsageError("give at least one --grads=WORKDIR")
  if not _OUT.value:
    raise app.UsageError("--out is required")
  from optim4rl_tf.analysis import gradients
  try:
    res = gradients.run_analysis(_GRADS.value, _OUT.value, num_parts=_PARTS.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  with open(res["table"]) as f:
    print(f.read())
  for p in res["figures"]:
    print(f"figure: {p}")
  print(f"table: {res['table']}")


if __name__ == "__main__":
  runtime.configure_process()  # allocators and log level, before TensorFlow loads
  app.run(main)
