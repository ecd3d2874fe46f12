#!/bin/sh
# Runs every benchmark against a release build: bench_* executables in the build tree, then
# tests/bench/*.sh scripts (side-by-side comparisons). Figures go to stdout; copy them with
# the machine and date into docs/benchmarks.md.
set -eu
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
echo "# vivimd benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m)"
found=0
for b in "$build"/bench_*; do
    [ -x "$b" ] || continue
    found=1
    echo "## $(basename "$b")"
    VIVIM_SHARED_DATA="$here/../../../shared/data" "$b"
done
for s in "$here"/bench_*.sh; do
    [ -f "$s" ] || continue
    found=1
    echo "## $(basename "$s")"
    sh "$s" "$build"
done
[ "$found" = 1 ] || echo "no benchmarks yet"
