# etcd 3.4 with the v2 API (the etcd returner writes Salt's v2 keys): 127.0.0.1:2379.
# Data in a temporary folder, no fsync (test data only); requests up to 32 MiB (the 5 MiB return
# of the contract suite; etcd's default is 1.5 MiB). Sourced by scripts/services.sh.
if ! command -v etcd >/dev/null 2>&1; then
  echo "installing: etcd-server"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
fi
if ! up 2379; then
  etcd_dir="${TMPDIR:-/tmp}/saline-etcd"
  rm -rf "$etcd_dir" && mkdir -p "$etcd_dir"
  nohup etcd --name saline-test --enable-v2=true --data-dir "$etcd_dir/data" --unsafe-no-fsync \
    --max-request-bytes 33554432 \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster saline-test=http://127.0.0.1:2380 --log-level error \
    >"$etcd_dir/etcd.log" 2>&1 &
  wait_port etcd 2379
fi
echo "etcd up: 2379 (v2 API)"
