#!/bin/sh
# DHT lookups on loopback, side by side (issue 11, "Benchmarks"): N nodes on 127.0.0.1, L
# values put under distinct keys, then L gets from other nodes, timed to the first value and
# to completion, on the intact network and right after a fraction of the nodes is stopped.
# The anchor is OpenDHT (Debian's python3-opendht, rate limits off), then the same on N vivimd
# processes. Figures go into docs/benchmarks.md, "DHT lookups on loopback".
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
# The same measurement on N vivimd processes (tests/bench/dht/vivimd_bench.py, standard
# library only): N release vivimd on 127.0.0.1 bootstrapped through the first, L provider
# records (dht.publishContent) from random nodes, then dht.findProviders from other nodes,
# timed to the first dht.provider notification and to the result, on the intact network and
# after SIGKILL of the same fraction of nodes; one JSON object per phase with
# "implementation": "vivimd". Same seed, same draws: the same getters, putters and victims.
if [ -x "$build/vivimd" ]; then
    python3 "$here/dht/vivimd_bench.py" "$build" --nodes "$nodes" --lookups "$lookups" \
        --kill-fraction "$kill" --seed "$seed" --json "$json.vivimd"
    cat "$json.vivimd" >>"$json"
    rm -f "$json.vivimd"
else
    echo "vivimd: no $build/vivimd (build the release first); skipped"
fi
echo "JSON: $json"
cat "$json"
