# osmem-server (in-memory, OpenSearch-compatible REST) for the elasticsearch returner:
# 127.0.0.1:9200. pip installs it with opensearch-py. Sourced by scripts/services.sh.
osmem_bin() { python3 -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))' 2>/dev/null; }
if [ ! -x "$(osmem_bin)" ]; then
  echo "installing: osmem-server opensearch-py (pip)"
  python3 -m pip install -q osmem-server opensearch-py 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
fi
if ! up 9200; then
  osmem_dir="${TMPDIR:-/tmp}/saline-osmem"
  mkdir -p "$osmem_dir"
  nohup "$(osmem_bin)" -addr 127.0.0.1:9200 -no-stdin-watch >"$osmem_dir/osmem.log" 2>&1 &
  wait_port osmem-server 9200
fi
echo "osmem-server up: 9200"
