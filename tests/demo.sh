#!/usr/bin/env bash
# tests/demo.sh - the README's first command. On a fresh Debian 12 or Ubuntu
# (as root, or with sudo): installs the missing packages of the build,
# runtime and demo groups of .ci/packages, builds into build/ (or $BUILD_DIR),
# then runs tests/demo/demo.py: two simulated GPUs (ollama-sim), the proxy in
# front of them, the bundled 1,525 items classified three ways, then two
# clients at once through the proxy (-j 5 and -j 200, told apart by their
# keys), with a table and two PNG charts in build/demo/ (throughput.png,
# shares.png). A little over a minute; it stops everything it started, also
# on Ctrl-C.
#   DEMO_TIME_SCALE  how much faster than real time the sims run (default 100)
#   DEMO_DIR         where results go (default build/demo)
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
