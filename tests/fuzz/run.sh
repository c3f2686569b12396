#!/bin/sh
# run.sh BINARY SEEDS WORK [DICT] - one bounded libFuzzer run, as ctest
# runs each fuzz target (tests/fuzz/README.md).
#   FUZZ_SECONDS  how long (default 60)
# The seeds (tests/fuzz/corpus/TARGET) are only read. New inputs go to
# WORK/corpus, which starts empty; a finding (crash-*, leak-*, timeout-*,
# oom-*) to WORK/, with the command that replays it. The full log is
# WORK/fuzz.log. Exit 0, or 1 on any finding.
set -eu
bin=$1 seeds=$2 work=$3 dict=${4:-}
secs=${FUZZ_SECONDS:-60}
rm -rf "$work"
mkdir -p "$work/corpus"
set -- -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -error_exitcode=1 \
    -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/"
if [ -n "$dict" ]; then set -- "$@" -dict="$dict"; fi
if ! command -v llvm-symbolizer >/dev/null 2>&1; then
    for s in /usr/lib/llvm-*/bin/llvm-symbolizer; do
        if [ -x "$s" ]; then export ASAN_SYMBOLIZER_PATH="$s"; fi
    done
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
echo "fuzz: $bin for ${secs}s, seeds $seeds"
rc=0
# libFuzzer stops itself after max_total_time; timeout(1) is for a hang
# libFuzzer cannot see (a wedged process).
timeout -k 10 $((secs + 300)) "$bin" "$@" "$work/corpus" "$seeds" >"$work/fuzz.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    # Everything but the progress lines: the report of the finding.
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$work/fuzz.log" || true
    for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
        if [ -e "$f" ]; then echo "fuzz: finding saved as $f; replay: $bin $f"; fi
    done
    echo "fuzz: FAILED (exit $rc), log in $work/fuzz.log"
    # Again, last, the lines that say what it was (a CI log keeps its end).
    grep -E '^(SUMMARY|==[0-9]+==ERROR|fuzz_[a-z]+: |.*runtime error)' "$work/fuzz.log" |
        head -n 8 | sed 's/^/fuzz: finding: /' || true
    exit 1
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|Done )' "$work/fuzz.log" || true
echo "fuzz: corpus $(ls "$work/corpus" | wc -l) new inputs in $work/corpus"
