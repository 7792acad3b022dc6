#!/usr/bin/env bash
# Creates ./.venv with Python 3.11 and installs the pinned requirements (no root needed).
# Idempotent: re-running with unchanged requirements.txt does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt launch/setup_env.sh | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  # tf-keras would pull the full tensorflow wheel; tensorflow-probability only needs it importable.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps tf-keras==2.21.0
  # Make the package importable from the checkout (like an editable install, without a build step).
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$PWD" > "$site/optim4rl_tf_checkout.pth"
  echo "$want" > "$stamp"
fi
