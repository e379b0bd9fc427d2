#!/usr/bin/env bash
# Start (installing where missing) the real servers the test suite talks to: MariaDB,
# PostgreSQL, Redis, and the ODBC drivers. Idempotent; fails loudly when a server cannot start.
# With --packages: only install the Debian packages below and stop (scripts/test.sh runs that
# before pip, which builds mysqlclient against libmariadb-dev).
set -euo pipefail

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
ls /etc/postgresql >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/*/odbc/libsqlite3odbc.so >/dev/null 2>&1 || need_apt+=(libsqliteodbc)
ls /usr/lib/*/odbc/libmaodbc.so >/dev/null 2>&1 || ls /usr/lib/*/libmaodbc.so >/dev/null 2>&1 || need_apt+=(odbc-mariadb)
command -v odbcinst >/dev/null 2>&1 || need_apt+=(unixodbc unixodbc-dev)
# mysqlclient (the C MySQL driver of the mysql-c extra, in the test extra) has no Linux wheel:
# pip builds it against these
dpkg -s libmariadb-dev >/dev/null 2>&1 || need_apt+=(libmariadb-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
if [ "${1:-}" = "--packages" ]; then exit 0; fi

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do up "$2" && return 0; sleep 0.5; done
  echo "ERROR: $1 did not start on port $2" >&2; exit 1
}

if ! up 3306; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port MariaDB 3306
fi
if ! up 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port PostgreSQL 5432
fi
if ! up 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  wait_port Redis 6379
fi
echo "servers up: MariaDB 3306, PostgreSQL 5432, Redis 6379"

# Servers of the other returners: one script each, sourced so they share up()/wait_port().
for extra in "$(dirname "$0")"/services.d/*.sh; do
  [ -e "$extra" ] || continue
  # shellcheck source=/dev/null
  . "$extra"
done
