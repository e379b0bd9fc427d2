# InfluxDB 1.6 (HTTP API 1.x) for the influxdb returner: 127.0.0.1:8086, data in a temporary
# folder. Sourced by scripts/services.sh.
if ! command -v influxd >/dev/null 2>&1; then
  echo "installing: influxdb"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q influxdb >/dev/null
fi
if ! up 8086; then
  influx_dir="${TMPDIR:-/tmp}/saline-influxdb"
  rm -rf "$influx_dir" && mkdir -p "$influx_dir"
  cat >"$influx_dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:8088"
[meta]
  dir = "$influx_dir/meta"
[data]
  dir = "$influx_dir/data"
  wal-dir = "$influx_dir/wal"
  query-log-enabled = false
  max-values-per-tag = 0
  max-series-per-database = 0
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:8086"
  log-enabled = false
  max-body-size = 0
CONF
  nohup influxd -config "$influx_dir/influxdb.conf" >"$influx_dir/influxd.log" 2>&1 &
  wait_port InfluxDB 8086
fi
echo "influxdb up: 8086"
