# The real clients of saline-api's tests: Debian's chromium and chromium-driver (headless, for
# Alcali's pages), and Alcali (PyPI `alcali`, which pins Django 4.2.5, DRF and an old pepper) in a
# virtualenv of its own with mysqlclient (built against libmariadb-dev). Installed once; sourced
# by scripts/services.sh. The API tests find the virtualenv at $SALINE_ALCALI_VENV or here:
alcali_venv="${SALINE_ALCALI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/saline-alcali/venv}"
need_api_apt=()
[ -x /usr/bin/chromium ] || need_api_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_api_apt+=(chromium-driver)
dpkg -s libmariadb-dev >/dev/null 2>&1 || need_api_apt+=(libmariadb-dev)
command -v pkg-config >/dev/null 2>&1 || need_api_apt+=(pkg-config)
command -v gcc >/dev/null 2>&1 || need_api_apt+=(gcc)
if [ ${#need_api_apt[@]} -gt 0 ]; then
  echo "installing: ${need_api_apt[*]}"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_api_apt[@]}" >/dev/null
fi
if [ ! -x "$alcali_venv/bin/gunicorn" ] || ! "$alcali_venv/bin/python" -c "import MySQLdb, config" 2>/dev/null; then
  echo "installing: alcali and mysqlclient into $alcali_venv"
  rm -rf "$alcali_venv"
  python3 -m venv "$alcali_venv"
  "$alcali_venv/bin/pip" install -q 'alcali==3006.3.0' 'mysqlclient>=2.1' 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
  "$alcali_venv/bin/python" -c "import MySQLdb, config" \
    || { echo "ERROR: installing Alcali into $alcali_venv failed" >&2; exit 1; }
fi
echo "API clients ready: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), Alcali in $alcali_venv"
