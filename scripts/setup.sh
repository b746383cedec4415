#!/usr/bin/env bash
# Creates .venv (once) and installs the project with pinned versions. Usage: scripts/setup.sh [EXTRAS]
# EXTRAS defaults to "server"; the tests use "server,test". Needs only Python 3.11+ and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-server}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[${extras}]"
