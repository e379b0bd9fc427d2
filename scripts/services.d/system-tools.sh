# System tools the execution-module tests run on this machine: ping (network.ping) and w (status.w).
# Sourced by scripts/services.sh.
need_tools=()
command -v ping >/dev/null 2>&1 || need_tools+=(iputils-ping)
command -v w >/dev/null 2>&1 || need_tools+=(procps)
if [ ${#need_tools[@]} -gt 0 ]; then
  echo "installing: ${need_tools[*]}"
  apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_tools[@]}" >/dev/null
fi
