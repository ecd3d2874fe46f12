#!/bin/sh
# Pubsub on loopback, side by side (issue 12, "Benchmarks"): N vivimd processes and N
# js-libp2p gossipsub processes on 127.0.0.1, same dial pattern, one topic, 256-byte signed
# messages at rising total rates: delivery ratio, p50/p99 latency, duplicates per delivery,
# CPU seconds per 1,000 deliveries (tests/bench/pubsub/bench.mjs says how). Figures go into
# docs/benchmarks.md, "Pubsub on loopback (anchor: js-libp2p gossipsub)".
#
# The anchor's versions are pinned in pubsub/package.json and pubsub/package-lock.json;
# `npm ci` installs them on first use. Without npm or the registry only vivimd's rows are
# measured. Parameters from the environment: PUBSUB_BENCH_NODES (10,20,32),
# PUBSUB_BENCH_RATES (2,10,25,50,100,200), PUBSUB_BENCH_DURATION (8 s per rate),
# PUBSUB_BENCH_DRAIN (3 s), PUBSUB_BENCH_IMPLS (vivimd,js), PUBSUB_BENCH_SEED (1).
# JSON lines go to $build/bench_pubsub_loopback.json.
set -eu
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
    echo "bench_pubsub_loopback: node (Node.js 20) drives both sides; skipped"
    exit 0
fi
vivimd="$build/vivimd"
impls=${PUBSUB_BENCH_IMPLS:-vivimd,js}
if [ ! -x "$vivimd" ]; then
    echo "bench_pubsub_loopback: $vivimd is missing; vivimd's rows skipped"
    impls=$(echo "$impls" | sed 's/vivimd,\{0,1\}//; s/,$//')
fi
case ",$impls," in
*,js,*)
    if [ ! -d "$here/pubsub/node_modules/@chainsafe/libp2p-gossipsub" ]; then
        if ! command -v npm >/dev/null 2>&1 ||
            ! (cd "$here/pubsub" && npm ci --no-audit --no-fund >/dev/null 2>&1); then
            echo "bench_pubsub_loopback: npm ci of the js-libp2p anchor failed (offline?); its rows skipped"
            impls=$(echo "$impls" | sed 's/,\{0,1\}js//; s/^,//')
        fi
    fi
    ;;
esac
[ -n "$impls" ] || { echo "bench_pubsub_loopback: nothing to run"; exit 0; }
mkdir -p "$build"
json="$build/bench_pubsub_loopback.json"
: >"$json"
vivimd_abs=$(cd "$(dirname "$vivimd")" && pwd)/vivimd
CLK_TCK=$(getconf CLK_TCK) node "$here/pubsub/bench.mjs" --vivimd "$vivimd_abs" --impl "$impls" \
    --nodes "${PUBSUB_BENCH_NODES:-10,20,32}" --rates "${PUBSUB_BENCH_RATES:-2,10,25,50,100,200}" \
    --duration "${PUBSUB_BENCH_DURATION:-8}" --drain "${PUBSUB_BENCH_DRAIN:-3}" \
    --seed "${PUBSUB_BENCH_SEED:-1}" --json "$json"
echo "JSON: $json"
