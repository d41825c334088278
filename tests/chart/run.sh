#!/usr/bin/env bash
# Tests of the Helm chart, the Prometheus alert rules and the Grafana dashboard. Offline: the Helm
# SDK and the Kubernetes schemas come from PyPI packages (requirements.txt), installed once into a
# venv outside the repository and reused while requirements.txt is unchanged.
#
#   bash tests/chart/run.sh            # all
#   bash tests/chart/run.sh -k sidecar # extra arguments go to pytest
#
# OUTBOX_CACHE_DIR moves the cache (default ~/.cache/outbox-relay); PYTHON picks the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OUTBOX_CACHE_DIR:-${HOME:-/tmp}/.cache/outbox-relay}"
venv="$cache/chart-venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tests/chart: installing $(grep -c '==' "$here/requirements.txt") pinned packages into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

# No __pycache__ or .pytest_cache in the work tree.
export PYTHONDONTWRITEBYTECODE=1
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q --rootdir "$here" "$here" "$@"
