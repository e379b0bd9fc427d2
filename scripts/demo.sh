#!/usr/bin/env bash
# Install saline and run the demo: a master and one minion on 127.0.0.1 with the embedded
# defaults (job cache in SQLite, no external server).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e . 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
exec python3 scripts/demo.py "$@"
