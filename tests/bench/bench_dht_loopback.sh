#!/bin/sh
# DHT lookups on loopback, side by side (issue 11, "Benchmarks"): N nodes on 127.0.0.1, L
# values put under distinct keys, then L gets from other nodes, timed to the first value and
# to completion, on the intact network and right after a fraction of the nodes is stopped.
# The anchor is OpenDHT (Debian's python3-opendht, rate limits off); vivimd's row comes when
# its DHT exists. Figures go into docs/benchmarks.md, "DHT lookups on loopback".
#
# Parameters from the environment: DHT_BENCH_NODES (200), DHT_BENCH_LOOKUPS (1000),
# DHT_BENCH_KILL (0.3), DHT_BENCH_SEED (1). JSON lines go to $build/bench_dht_loopback.json.
set -eu
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
nodes=${DHT_BENCH_NODES:-200}
lookups=${DHT_BENCH_LOOKUPS:-1000}
kill=${DHT_BENCH_KILL:-0.3}
seed=${DHT_BENCH_SEED:-1}
mkdir -p "$build"
json="$build/bench_dht_loopback.json"
: >"$json"

# --- OpenDHT (anchor) ---
# python3-opendht installs into Debian's own interpreter; a python3 earlier on PATH (pyenv,
# a venv) may not see it, so take the first one that can import the module.
py=""
for c in python3 /usr/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import opendht' 2>/dev/null; then
        py=$c
        break
    fi
done
if [ -n "$py" ]; then
    "$py" "$here/dht/opendht_bench.py" --nodes "$nodes" --lookups "$lookups" \
        --kill-fraction "$kill" --seed "$seed" --json "$json.opendht"
    cat "$json.opendht" >>"$json"
    rm -f "$json.opendht"
else
    echo "opendht: python3-opendht is missing (make bench-deps installs it); skipped"
fi

# --- vivimd ---
# The same measurement on N vivimd processes goes here once the DHT of issue 11 exists:
# start N vivimd on 127.0.0.1 with [dht] enabled, bootstrap them through the first, publish
# L provider records (dht.publishContent) from random nodes, then time dht.findProviders
# (first dht.provider notification, then the result) from other nodes, on the intact network
# and after SIGKILL of the same fraction of nodes, and append one JSON object per phase with
# "implementation": "vivimd" and the fields opendht_bench.py writes.
echo "vivimd: DHT not built yet"
echo "JSON: $json"
cat "$json"
