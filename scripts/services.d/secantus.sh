# SecantusDB (MongoDB wire protocol; PyPI secantusdb, its storage engine inside the wheel) for the
# mongo and mongo_return returners. The tests start their own servers on free ports in temporary
# folders (tests/conftest.py: mongo_server); this installs it where missing and checks that one
# starts and answers. Sourced by scripts/services.sh (which defines up/wait_port).
if ! python3 -c 'import secantus, pymongo' 2>/dev/null; then
  echo "installing: secantusdb pymongo (pip)"
  python3 -m pip install -q 'secantusdb>=0.7.0b3' 'pymongo>=4.6' 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
fi
secantus_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
secantus_dir="${TMPDIR:-/tmp}/saline-secantus"
mkdir -p "$secantus_dir"
python3 -m secantus --host 127.0.0.1 --port "$secantus_port" --storage-path :memory: --standalone \
  --log-level WARNING >"$secantus_dir/check.log" 2>&1 &
secantus_pid=$!
secantus_ok=""
for _ in $(seq 1 120); do
  if up "$secantus_port" && python3 -c 'import sys, pymongo
pymongo.MongoClient("127.0.0.1", int(sys.argv[1]), serverSelectionTimeoutMS=5000).admin.command("ping")' \
      "$secantus_port" 2>/dev/null; then
    secantus_ok=1
    break
  fi
  kill -0 "$secantus_pid" 2>/dev/null || break
  sleep 0.5
done
kill "$secantus_pid" 2>/dev/null || true
wait "$secantus_pid" 2>/dev/null || true
if [ -z "$secantus_ok" ]; then
  echo "ERROR: SecantusDB did not start (see $secantus_dir/check.log)" >&2
  exit 1
fi
echo "SecantusDB works (the tests start their own, on free ports)"
