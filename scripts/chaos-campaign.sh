#!/usr/bin/env bash
# A chaos-mode stress campaign: run each of test-sync, test-chan, test-io
# and test-sched RUNS times from BUILD (an ASan or TSan build, made as
# scripts/test.sh makes them), each run with its own WEFT_DEBUG_CHAOS
# seed (FIRST, FIRST+1, ...). Prints one line per failure with the seed
# to replay, then "chaos: N runs, M failed".
#   bash scripts/chaos-campaign.sh BUILD [RUNS] [FIRST]
# CHAOS_SUITES overrides the suites (default: "sync chan io sched").
set -uo pipefail
build=${1:?usage: chaos-campaign.sh BUILD [RUNS] [FIRST]}
runs=${2:-100}
first=${3:-1000}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
wrap=()
if grep -q "b_sanitize=thread\|-fsanitize=thread" "$build/build.ninja" 2>/dev/null &&
    setarch "$(uname -m)" -R true 2>/dev/null; then
    wrap=(setarch "$(uname -m)" -R)
fi
total=0
bad=0
log=$(mktemp)
for ((i = 0; i < runs; i++)); do
    seed=$((first + i))
    for t in ${CHAOS_SUITES:-sync chan io sched}; do
        total=$((total + 1))
        if ! WEFT_DEBUG_CHAOS=$seed "${wrap[@]}" "$build/tests/test-$t" >"$log" 2>&1; then
            bad=$((bad + 1))
            echo "FAIL test-$t WEFT_DEBUG_CHAOS=$seed: $(grep -m1 -E ':[EF]:|ERROR|WARNING: ThreadSanitizer|runtime error' "$log")"
        fi
    done
done
rm -f "$log"
echo "chaos: $total runs, $bad failed"
[ "$bad" -eq 0 ]
