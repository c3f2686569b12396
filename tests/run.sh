#!/usr/bin/env bash
# tests/run.sh - the test command: install what is missing (Debian/Ubuntu,
# as root or with sudo), build, run every test with ctest.
#   SANITIZE=1  build with AddressSanitizer + UBSan (what CI runs) in build-asan/
#   BUILD_DIR   the build folder (default build/, or build-asan/ with SANITIZE=1)
#   JOBS        tests run side by side (default 2)
#   WERROR=0    let warnings pass (default 1: -DWERROR=ON, warnings are errors)
#   FUZZ=0      leave the libFuzzer targets out (default 1: -DFUZZ=ON, six
#               ctests of 60 s each)
set -euo pipefail
cd "$(dirname "$0")/.."
groups=(build runtime test)
flags=(-DWERROR=ON)
[ "${WERROR:-1}" != 0 ] || flags=(-DWERROR=OFF)
if [ "${FUZZ:-1}" != 0 ]; then
    groups+=(fuzz)
    flags+=(-DFUZZ=ON)
else
    flags+=(-DFUZZ=OFF)
fi
.ci/install-deps "${groups[@]}"
dir=${BUILD_DIR:-build}
if [ "${SANITIZE:-0}" = 1 ]; then
    dir=${BUILD_DIR:-build-asan}
    flags+=(-DSANITIZE=ON)
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j"${JOBS:-2}"
