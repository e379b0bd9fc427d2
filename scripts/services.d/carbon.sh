# graphite-carbon (carbon-cache) for the carbon returner: plaintext 127.0.0.1:2003, pickle 2004,
# cache query 7002; whisper files in a temporary folder, one-second points kept ten minutes,
# written in arrival order (naive: the sorted strategy re-sorts about once a second, so files
# appear late).
# Sourced by scripts/services.sh.
if ! command -v carbon-cache >/dev/null 2>&1; then
  echo "installing: graphite-carbon"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphite-carbon >/dev/null
fi
if ! up 2003 || ! up 2004 || ! up 7002; then
  carbon_dir="${TMPDIR:-/tmp}/saline-carbon"
  [ -f "$carbon_dir/carbon-cache-a.pid" ] && kill "$(cat "$carbon_dir/carbon-cache-a.pid")" 2>/dev/null || true
  rm -rf "$carbon_dir" && mkdir -p "$carbon_dir/whisper" "$carbon_dir/log" "$carbon_dir/lists"
  cat >"$carbon_dir/carbon.conf" <<CONF
[cache]
STORAGE_DIR = $carbon_dir/
LOCAL_DATA_DIR = $carbon_dir/whisper/
WHITELISTS_DIR = $carbon_dir/lists/
CONF_DIR = $carbon_dir/
LOG_DIR = $carbon_dir/log/
PID_DIR = $carbon_dir/
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
CACHE_WRITE_STRATEGY = naive
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = 2003
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 2004
USE_INSECURE_UNPICKLER = False
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 7002
LOG_LISTENER_CONN_SUCCESS = False
LOG_UPDATES = False
LOG_CREATES = False
LOG_CACHE_HITS = False
WHISPER_AUTOFLUSH = False
WHISPER_FALLOCATE_CREATE = False
CONF
  cat >"$carbon_dir/storage-schemas.conf" <<CONF
[carbon]
pattern = ^carbon\.
retentions = 60:1d

[default]
pattern = .*
retentions = 1s:10m
CONF
  carbon-cache --config="$carbon_dir/carbon.conf" --pidfile="$carbon_dir/carbon-cache-a.pid" \
    --logdir="$carbon_dir/log/" start >"$carbon_dir/start.log" 2>&1 \
    || { cat "$carbon_dir/start.log" >&2; echo "ERROR: carbon-cache did not start" >&2; exit 1; }
  wait_port carbon-plaintext 2003
  wait_port carbon-pickle 2004
  wait_port carbon-cache-query 7002
fi
echo "carbon up: 2003 (text), 2004 (pickle), 7002 (cache query)"
