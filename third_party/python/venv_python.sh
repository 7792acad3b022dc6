#!/bin/sh
# The Python toolchain's interpreter (//third_party/python:venv_runtime): the project's .venv, found from this
# file's real location (Bazel runs it through a runfiles symlink), so the checkout can live anywhere.
here="$(dirname "$(readlink -f "$0")")"
python="$here/../../.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "$python not found: create the project's .venv first (launch/setup_env.sh)" >&2
  exit 127
fi
exec "$python" "$@"
