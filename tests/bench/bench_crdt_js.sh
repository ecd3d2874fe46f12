#!/bin/sh
# The CRDT anchors (Yjs, Automerge, Loro, diamond-types) on every shared editing trace,
# run by `make bench` right after vivimd's own bench_crdt so the figures are side by side.
# Versions are pinned in crdt-js/package.json; npm installs them on first use.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
traces="$here/../../../shared/data/editing-traces"
if [ ! -d "$traces" ]; then
    echo "bench_crdt_js: $traces is missing (the shared data sits beside the repository); skipped"
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "bench_crdt_js: node and npm are needed for the anchors; skipped"
    exit 0
fi
cd "$here/crdt-js"
[ -d node_modules/yjs ] || npm install --no-audit --no-fund --no-package-lock >/dev/null
node bench.mjs --runs "${CRDT_BENCH_RUNS:-5}" "$traces"/*.json.gz
