#!/bin/sh
# test-gdb-fibers: tools/weft-gdb.py's `info weft-fibers` and `weft-bt`
# on gdb_fibers.c's parked fibers, first in the live process stopped at
# gdb_fibers_ready, then in a core file of it written by gcore.
# $1: gdb, $2: the gdb-fibers program, $3: weft-gdb.py.
# Exits 77 (skipped) when gdb has no Python or the build has no debug
# information for weft's structs; fails on anything else.
set -eu
gdb=$1
prog=$2
helper=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-gdb-fibers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! "$gdb" -nx -q -batch -ex 'python print("py-ok")' 2>/dev/null | grep -q py-ok; then
    echo "SKIP: $gdb has no Python support"
    exit 77
fi

# The commands both runs check: the listing, every parked fiber's
# backtrace, the errors, and that the frame selected before weft-bt is
# selected after it.
set -- \
    -ex 'set pagination off' \
    -ex 'set width 0' \
    -ex 'printf "ids %lu %lu %lu %lu %lu %lu\n", gdb_fibers_main_id, gdb_fibers_ids[0], gdb_fibers_ids[1], gdb_fibers_ids[2], gdb_fibers_ids[3], gdb_fibers_ids[4]' \
    -ex 'printf "objs %p %p %d\n", gdb_fibers_chan, &gdb_fibers_mutex, gdb_fibers_pipe[0]' \
    -ex 'frame 1' \
    -ex 'echo ==info==\n' \
    -ex 'info weft-fibers' \
    -ex 'echo ==bt sleep==\n' -ex 'weft-bt gdb_fibers_ids[0]' \
    -ex 'echo ==bt join==\n' -ex 'weft-bt gdb_fibers_ids[1]' \
    -ex 'echo ==bt recv==\n' -ex 'weft-bt gdb_fibers_ids[2]' \
    -ex 'echo ==bt lock==\n' -ex 'weft-bt gdb_fibers_ids[3]' \
    -ex 'echo ==bt read==\n' -ex 'weft-bt gdb_fibers_ids[4]' \
    -ex 'echo ==after==\n' -ex 'frame' \
    -ex 'echo ==errors==\n' \
    -ex 'weft-bt gdb_fibers_main_id' \
    -ex 'weft-bt 999999999' \
    -ex 'echo ==end==\n'

# section NAME: the lines of the last output between ==NAME== and the
# next marker.
section() {
    awk -v want="==$1==" '/^==.*==$/ { on = ($0 == want); next } on' "$tmp/out"
}

fail=0
check() {
    # check WHAT PATTERN TEXT: TEXT must have a line matching PATTERN.
    if ! printf '%s\n' "$3" | grep -Eq -- "$2"; then
        echo "FAIL ($run): $1"
        echo "  no line matches: $2"
        fail=1
    fi
}

# The one reason to skip: the helper needs the structs' debug info.
skip_without_types() {
    if grep -q "no debug information for weft's internals" "$tmp/out"; then
        echo "SKIP: no debug information for weft's structs in this build:"
        grep "no debug information" "$tmp/out" | head -n 1
        exit 77
    fi
}

verify() {
    set -- $(sed -n 's/^ids //p' "$tmp/out")
    if [ $# -ne 6 ]; then
        echo "FAIL ($run): the program did not stop at gdb_fibers_ready"
        cat "$tmp/out"
        exit 1
    fi
    main=$1 sleep=$2 join=$3 recv=$4 lock=$5 read=$6
    set -- $(sed -n 's/^objs //p' "$tmp/out")
    chan=$1 mutex=$2 fd=$3

    info=$(section info)
    check "runtime line" '^weft runtime: running, 2 workers$' "$info"
    check "worker 0" '^  0  +[0-9?]+  +[a-z]+' "$info"
    check "worker 1" '^  1  +[0-9?]+  +[a-z]+' "$info"
    check "main fiber" "^  $main  +main  +running  +[01]  +\\(running on worker [01]\\)" "$info"
    # Id, name, state, worker, wait, where (the first frame not weft's).
    check "sleeper" "^  $sleep  +sleeper  +parked  +[01]  +sleep until [0-9.]+ s \\(3[0-9]{3}\\.[0-9] s after it parked\\)  +gdb_fibers_sleep_here " "$info"
    check "joiner" "^  $join  +joiner  +parked  +[01]  +join fiber $sleep  +gdb_fibers_join_here " "$info"
    check "channel reader" "^  $recv  +chan-reader  +parked  +[01]  +chan recv $chan  +gdb_fibers_recv_here " "$info"
    check "mutex waiter" "^  $lock  +mutex-waiter  +parked  +[01]  +mutex $mutex  +gdb_fibers_lock_here " "$info"
    check "pipe reader" "^  $read  +pipe-reader  +parked  +[01]  +fd $fd read  +gdb_fibers_read_here " "$info"

    for what in sleep join recv lock read; do
        bt=$(section "bt $what")
        check "weft-bt ($what): header" "^fiber [0-9]+ '[a-z-]+', parked, saved sp 0x[0-9a-f]+:$" "$bt"
        # Without debug info for the assembly (release builds), gdb shows
        # its minimal symbols Ada-decoded: weft__ctx_jump as weft.ctx_jump.
        check "weft-bt ($what): frame 0" '^#0 +0x[0-9a-f]+ in weft__ctx_jump' "$bt"
        check "weft-bt ($what): frame 1" '^#1 +0x[0-9a-f]+ in ' "$bt"
        check "weft-bt ($what): the waiting function" \
            "^#[0-9]+ +0x[0-9a-f]+ in gdb_fibers_${what}_here \\(.*gdb_fibers\\.c:[0-9]+\\)$" "$bt"
        check "weft-bt ($what): fiber_main" '^#[0-9]+ +0x[0-9a-f]+ in fiber_main ' "$bt"
        last=$(printf '%s\n' "$bt" | tail -n 1)
        check "weft-bt ($what): ends at the trampoline" 'in weft(__|\.)ctx_trampoline' "$last"
    done

    check "frame selection restored" '^#1 .* in main_fiber ' "$(section after)"
    errors=$(section errors)
    check "running fiber refused" \
        "^weft-bt: fiber $main is running on worker [01] \\(gdb thread [0-9]+\\), so it has no saved context" "$errors"
    check "unknown id refused" '^weft-bt: no fiber with id 999999999$' "$errors"
    if [ $fail -ne 0 ]; then
        echo "---- gdb output ($run) ----"
        cat "$tmp/out"
        exit 1
    fi
    echo "ok ($run)"
}

# 1. The live process: first just after the first spawn, whose fiber has
# not started (weft-bt gets it by the pointer weft_spawn_ex returned);
# then stopped at gdb_fibers_ready. The spawn puts the fiber in its
# worker's run-next slot, which no other worker takes from, but under
# WEFT_DEBUG_MIGRATE in the other worker's inbox, which that worker
# drains as soon as it runs: so `finish` runs the spawning thread alone
# (scheduler-locking), and the fiber is unstarted in both modes.
run=live
"$gdb" -nx -q -batch -x "$helper" \
    -ex 'break weft_spawn_ex' -ex 'run' \
    -ex 'set scheduler-locking on' -ex 'finish' -ex 'set scheduler-locking off' \
    -ex 'echo ==unstarted==\n' \
    -ex 'info weft-fibers' -ex 'weft-bt (struct weft_fiber *)$rax' \
    -ex 'delete' -ex 'break gdb_fibers_ready' -ex 'continue' "$@" \
    --args "$prog" >"$tmp/out" 2>&1 || true
skip_without_types
unstarted=$(section unstarted)
check "unstarted fiber listed" \
    '^  [0-9]+  +sleeper  +runnable  +-  +\(not started: fiber_main( \(.*gdb_fibers\.c:[0-9]+\))?\)$' "$unstarted"
check "unstarted fiber refused" \
    '^weft-bt: fiber [0-9]+ has not started yet: no stack, no frames \(it will run fiber_main' "$unstarted"
verify
sed -n '/^==info==$/,/^==bt sleep==$/p' "$tmp/out" | sed '1d;$d'

# 2. A core file of it. The program's stacks get PROT_NONE guard pages
# here: gcore leaves out a whole mapping when part of it cannot be read,
# and guard pages installed with MADV_GUARD_INSTALL (weft's choice where
# the kernel has it) cannot be (see gdb_fibers.c).
run=gcore
"$gdb" -nx -q -batch \
    -ex 'break gdb_fibers_ready' -ex 'run' -ex "gcore $tmp/core" \
    --args "$prog" mprotect-guard >"$tmp/gcore.log" 2>&1 || true
if [ ! -s "$tmp/core" ]; then
    echo "FAIL (gcore): no core file written"
    cat "$tmp/gcore.log"
    exit 1
fi
run=core
"$gdb" -nx -q -batch -x "$helper" "$@" "$prog" "$tmp/core" >"$tmp/out" 2>&1 || true
skip_without_types
verify
sed -n '/^==bt lock==$/,/^==bt read==$/p' "$tmp/out" | sed '1d;$d'
