#!/usr/bin/env bash
# Creates ./.venv with Python 3.11, installs the exact lock (requirements.txt), then this project itself as
# an editable package (pip install -e .), so `import optim4rl_tf` works from any folder. No root needed.
# Idempotent: re-running with unchanged requirements.txt / pyproject.toml / this script does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt pyproject.toml launch/setup_env.sh | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
  "${pip[@]}" install --upgrade pip
  "${pip[@]}" install -r requirements.txt
  # tf-keras would pull the full tensorflow wheel; tensorflow-probability only needs it importable.
  "${pip[@]}" install --no-deps tf-keras==2.21.0
  # An older checkout's hand-made path file, if this .venv has one.
  rm -f "$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/optim4rl_tf_checkout.pth"
  # The project itself; its dependencies (pyproject.toml's core and its extras cpu, train, plots, gym, brax,
  # ray, analysis, test) are the lock above, so no extra is named and nothing else is resolved.
  "${pip[@]}" install --no-deps -e .
  echo "$want" > "$stamp"
fi
