#!/usr/bin/env bash
# The main job end to end on the embedded tiny.en model: install, start a server, stream a real
# recording through the SDK at real-time pace (grey interim text settling into final text), stop.
# Usage: scripts/demo.sh [RECORDING]   (default: samples/lj_paragraph.flac, 50 s)
set -euo pipefail
cd "$(dirname "$0")/.."
recording=${1:-samples/lj_paragraph.flac}
echo "Installing (first run only takes a minute or two)..."
scripts/setup.sh server
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/transcriber-server --host 127.0.0.1 --port "$port" --log-level WARNING &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
.venv/bin/python scripts/live.py --file "$recording" --endpoints "127.0.0.1:$port" --wait-s 120
