# PouchDB Server (CouchDB HTTP API, in memory) for the couchdb returner: 127.0.0.1:5984.
# npm installs it once into a cache folder. Sourced by scripts/services.sh.
if ! command -v npm >/dev/null 2>&1; then
  echo "installing: nodejs npm"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null
fi
pouch_home="${XDG_CACHE_HOME:-$HOME/.cache}/saline-pouchdb"
if [ ! -x "$pouch_home/node_modules/.bin/pouchdb-server" ]; then
  echo "installing: pouchdb-server (npm)"
  mkdir -p "$pouch_home"
  (cd "$pouch_home" && npm install --silent --no-audit --no-fund --ignore-scripts pouchdb-server@4 >/dev/null 2>&1) \
    || { echo "ERROR: npm install pouchdb-server failed" >&2; exit 1; }
fi
if ! up 5984; then
  pouch_dir="${TMPDIR:-/tmp}/saline-pouchdb"
  rm -rf "$pouch_dir" && mkdir -p "$pouch_dir"
  # its log.txt and config.json land in the current folder: run it from the temporary one
  (cd "$pouch_dir" && exec "$pouch_home/node_modules/.bin/pouchdb-server" --host 127.0.0.1 --port 5984 \
    --in-memory --no-stdout-logs) >"$pouch_dir/pouchdb.log" 2>&1 </dev/null &
  wait_port "PouchDB Server" 5984
fi
echo "pouchdb-server up: 5984"
