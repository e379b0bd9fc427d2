# memcached 1.6 for the memcache returner: 127.0.0.1:11211, 256 MiB, items up to 16 MiB.
# Sourced by scripts/services.sh (which defines up/wait_port and sets -euo pipefail).
if ! command -v memcached >/dev/null 2>&1; then
  echo "installing: memcached"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q memcached >/dev/null
fi
if ! up 11211; then
  memcached -d -u root -l 127.0.0.1 -p 11211 -m 256 -I 16m -P /tmp/saline-memcached.pid
  wait_port memcached 11211
fi
echo "memcached up: 11211"
