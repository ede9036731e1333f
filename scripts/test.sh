#!/usr/bin/env bash
# Build weft and run every test suite, as CI does:
#   1. release (-O2, -Werror), all suites
#   2. the ctx, coro and examples suites again under valgrind
#   3. ASan + UBSan build, all suites
#   4. TSan build, all suites
#   5. chaos pass: the sync, chan, sched and lifetime suites again
#      under ASan+UBSan and under TSan with WEFT_DEBUG_CHAOS set, for three
#      fixed seeds and two drawn for this run
# Installs what it needs first (scripts/deps.sh; apt-get, as root or via
# sudo). Build directories: build-ci-{release,asan,tsan}. Ends with one
# line "tests: N passed, M failed"; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

passed=0
failed=0
status=0

setup() { # dir, meson options...
    local dir=$1
    shift
    local log
    log=$(mktemp)
    local reconf=()
    [ -f "$dir/build.ninja" ] && reconf=(--reconfigure)
    meson setup "${reconf[@]}" "$dir" "$@" >"$log" 2>&1 || { cat "$log"; rm -f "$log"; return 1; }
    rm -f "$log"
    ninja -C "$dir"
}

# Run `meson test` in dir with the given arguments and add its results to
# the totals, read from the JSON test log.
run_tests() { # label, dir, meson test args...
    local label=$1 dir=$2
    shift 2
    echo "== $label"
    local rc=0
    meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" || rc=$?
    local counts
    counts=$(python3 - "$dir/meson-logs/testlog"*.json <<'PY'
import json, os, sys
ok = bad = 0
# Only the log of the run just made: the newest file.
path = max(sys.argv[1:], key=os.path.getmtime)
for line in open(path):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r != "SKIP":
        bad += 1
print(ok, bad)
PY
)
    read -r ok bad <<<"$counts"
    echo "-- $label: $ok passed, $bad failed"
    [ "$bad" -eq 0 ] || [ -z "${WEFT_DEBUG_CHAOS:-}" ] ||
        echo "-- $label: replay with WEFT_DEBUG_CHAOS=$WEFT_DEBUG_CHAOS"
    passed=$((passed + ok))
    failed=$((failed + bad))
    [ "$rc" -eq 0 ] || status=1
}

# TSan needs the address space layout it was built for; where the kernel
# randomises more mmap bits than it handles, run without ASLR.
tsan_wrap=()
if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
    tsan_wrap=(--wrapper "setarch $(uname -m) -R")
fi

setup build-ci-release --buildtype=release -Doptimization=2 -Dwerror=true
run_tests "release" build-ci-release
run_tests "valgrind (ctx, coro, examples)" build-ci-release \
    --setup valgrind --suite ctx --suite coro --suite examples

# A consumer's view: install into a staging directory and build the
# README's example against it through pkg-config.
consumer_check() {
    echo "== install + pkg-config consumer"
    local stage
    stage=$(mktemp -d)
    DESTDIR="$stage" meson install -C build-ci-release --quiet
    local pcdir
    pcdir=$(dirname "$(find "$stage" -name weft.pc | head -n 1)")
    local src="$stage/readme_example.c"
    # The example is the C block of README.md's "Example" section.
    awk '/^## Example/{e=1} e&&/^```c/{c=1;next} c&&/^```/{exit} c' README.md >"$src"
    local ok=1
    # shellcheck disable=SC2046  # pkg-config prints several words
    cc -o "$stage/ex" "$src" \
        $(PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$stage" pkg-config --cflags --libs weft) \
        || ok=0
    if [ $ok -eq 1 ]; then
        local out
        out=$(LD_LIBRARY_PATH="$pcdir/.." "$stage/ex" | tr '\n' ' ')
        [ "$out" = "1 4 9 16 25 " ] || { echo "README example printed: $out"; ok=0; }
    fi
    rm -rf "$stage"
    if [ $ok -eq 1 ]; then
        echo "-- consumer: 1 passed, 0 failed"
        passed=$((passed + 1))
    else
        echo "-- consumer: 0 passed, 1 failed"
        failed=$((failed + 1))
    fi
}
consumer_check

setup build-ci-asan -Db_sanitize=address,undefined -Djemalloc=disabled \
    -Dbenchmarks=disabled -Dwerror=true
run_tests "asan+ubsan" build-ci-asan

setup build-ci-tsan -Db_sanitize=thread -Djemalloc=disabled \
    -Dbenchmarks=disabled -Dwerror=true
run_tests "tsan" build-ci-tsan "${tsan_wrap[@]}"

# Chaos pass (WEFT_DEBUG_CHAOS=SEED, src/sched/chaos.h): yields, spins,
# short sleeps and forced migrations at the runtime's race windows. Each
# test's log starts with "weft: chaos mode, seed N"; a failure is replayed
# with WEFT_DEBUG_CHAOS=N and the same suite.
# The io suite is not in it yet: chaos mode found a lost read edge in the
# netpoller (a reader parked with a byte in its socket; test-io
# waiter_last_touch, about 1 run in 50 under ASan), which is open - see
# docs/design.md, "Chaos mode". Run it by hand with
# scripts/chaos-campaign.sh (CHAOS_SUITES="io").
chaos_suites=(--suite sync --suite chan --suite sched --suite lifetime)
chaos_seeds=(1 2 3 "$(( (RANDOM << 15 | RANDOM) + 4 ))" "$(( (RANDOM << 15 | RANDOM) + 4 ))")
for seed in "${chaos_seeds[@]}"; do
    WEFT_DEBUG_CHAOS=$seed run_tests "asan+ubsan chaos (WEFT_DEBUG_CHAOS=$seed)" \
        build-ci-asan "${chaos_suites[@]}"
    WEFT_DEBUG_CHAOS=$seed run_tests "tsan chaos (WEFT_DEBUG_CHAOS=$seed)" \
        build-ci-tsan "${tsan_wrap[@]}" "${chaos_suites[@]}"
done

echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
