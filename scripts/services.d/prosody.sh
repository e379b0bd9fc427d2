# Prosody 0.12 (XMPP) for the xmpp returner: 127.0.0.1:5222, virtual host "localhost", users
# saline@localhost (password saline-secret, the sender) and receiver@localhost (password
# receiver-secret, the tests' receiving end). Plain authentication without TLS on loopback only.
# Sourced by scripts/services.sh (which defines up/wait_port).
if ! command -v prosody >/dev/null 2>&1; then
  echo "installing: prosody"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prosody >/dev/null
fi
if ! up 5222; then
  prosody_dir="${TMPDIR:-/tmp}/saline-prosody"
  rm -rf "$prosody_dir" && mkdir -p "$prosody_dir/data" "$prosody_dir/certs"
  cat >"$prosody_dir/prosody.cfg.lua" <<CFG
pidfile = "$prosody_dir/prosody.pid"
data_path = "$prosody_dir/data"
certificates = "$prosody_dir/certs"
daemonize = false
log = { info = "$prosody_dir/prosody.log"; error = "$prosody_dir/prosody.err" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { 5222 }
s2s_ports = { }
http_ports = { }
https_ports = { }
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "offline"; "smacks" }
modules_disabled = { "s2s"; "tls" }
VirtualHost "localhost"
CFG
  chown -R prosody:prosody "$prosody_dir" 2>/dev/null || true
  prosodyctl --config "$prosody_dir/prosody.cfg.lua" register saline localhost saline-secret
  prosodyctl --config "$prosody_dir/prosody.cfg.lua" register receiver localhost receiver-secret
  chown -R prosody:prosody "$prosody_dir" 2>/dev/null || true
  # the daemon refuses to run as root: start it as the prosody user the package made
  if [ "$(id -u)" = 0 ] && id prosody >/dev/null 2>&1; then
    nohup runuser -u prosody -- prosody --config "$prosody_dir/prosody.cfg.lua" >"$prosody_dir/prosody.out" 2>&1 &
  else
    nohup prosody --config "$prosody_dir/prosody.cfg.lua" >"$prosody_dir/prosody.out" 2>&1 &
  fi
  wait_port Prosody 5222
fi
echo "Prosody (XMPP) up: 5222"
