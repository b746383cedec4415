#!/usr/bin/env bash
# Installs the project with its test tools into .venv and runs the whole test suite
# (unit, servicer on loopback, and end to end with the real embedded model). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh server,test,google,bench,multilingual
exec .venv/bin/python -m pytest "$@"
