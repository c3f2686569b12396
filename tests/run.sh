#!/usr/bin/env bash
# tests/run.sh - the test command: install what is missing (Debian/Ubuntu,
# as root or with sudo), build, run every test with ctest.
#   SANITIZE=1  build with AddressSanitizer + UBSan (what CI runs) in build-asan/
#   BUILD_DIR   the build folder (default build/, or build-asan/ with SANITIZE=1)
#   JOBS        tests run side by side (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/install-deps build runtime test fuzz
flags=()
dir=${BUILD_DIR:-build}
if [ "${SANITIZE:-0}" = 1 ]; then
    dir=${BUILD_DIR:-build-asan}
    flags=(-DSANITIZE=ON)
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j"${JOBS:-2}"
