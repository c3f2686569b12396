#!/usr/bin/env bash
# tests/demo.sh - the README's first command. On a fresh Debian 12 or Ubuntu
# (as root, or with sudo): installs the missing packages of the build,
# runtime and demo groups of .ci/packages, builds into build/ (or $BUILD_DIR),
# then runs tests/demo/demo.py: the job of 1,525 items on two simulated GPUs
# (ollama-sim on a published batching curve), in seven rows: straight to one
# GPU at Ollama's default parallel 1, with 200 in flight, with parallel 16;
# then through the proxy (fixed caps 16, then adaptive caps with a ceiling of
# 64), the job's -j 5 client alone and beside a -j 200 batch (told apart by
# their keys). A table, and two PNG charts in build/demo/ (throughput.png:
# each backend's items/s, slots busy and the proxy's effective cap over time;
# shares.png: row 7's clients). About a minute; it stops everything it
# started, also on Ctrl-C.
#   DEMO_TIME_SCALE  how much faster than real time the sims run (default 10;
#                    more distorts the adaptive rows, see demo.py)
#   DEMO_DIR         where results go (default build/demo)
#   --quick          fewer items, and check the rows' properties (ctest demo_quick)
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/install-deps build runtime demo
export BUILD_DIR=${BUILD_DIR:-build}
mkdir -p "$BUILD_DIR"
log="$BUILD_DIR/demo-build.log"
echo "building into $BUILD_DIR/ (log: $log)"
if ! { cmake -S . -B "$BUILD_DIR" &&
       cmake --build "$BUILD_DIR" -j"$(nproc)" --target ollama-proxy ollama-sim ollama-classify
     } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "demo: the build failed (full log: $log)" >&2
    exit 1
fi
exec python3 tests/demo/demo.py "$@"
