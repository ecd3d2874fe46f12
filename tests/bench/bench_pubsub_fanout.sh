#!/bin/sh
# Local fan-out to ten subscribers, vivimd's RPC notifications beside Redis PUBLISH
# (tests/bench/bench_pubsub_fanout.py says how; redis-server from .ci/debian-packages-bench,
# its row skipped when missing). Figures go into docs/benchmarks.md, "Pubsub on one node".
set -eu
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$build/vivimd" ]; then
    echo "bench_pubsub_fanout: $build/vivimd is missing; skipped"
    exit 0
fi
VIVIMD="$build/vivimd" VIVIMCTL="$build/vivimctl" python3 "$here/bench_pubsub_fanout.py" \
    "${PUBSUB_FANOUT_MESSAGES:-20000}"
