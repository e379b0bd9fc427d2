#!/usr/bin/env bash
# The test command: install saline with its test dependencies, start the servers, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh --packages  # Debian packages first: pip builds mysqlclient against libmariadb-dev
python3 -m pip install -q -e '.[test]' 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
scripts/services.sh
exec python3 -m pytest -q -p no:cacheprovider "$@"
