#!/bin/sh
# test-gdb-walk: gdb must unwind a suspended context from its saved stack
# pointer through every frame, ending at weft__ctx_trampoline.
# $1: gdb, $2: the gdb_walk program.
set -eu
gdb=$1
prog=$2
out=$("$gdb" -nx -q -batch \
    -ex 'set pagination off' \
    -ex 'break walk_checkpoint' \
    -ex 'run' \
    -ex 'set $rsp = (unsigned long)walk_saved_sp' \
    -ex 'set $pc = (unsigned long)&weft__ctx_resume_pc' \
    -ex 'bt' \
    "$prog" 2>&1)
bt=$(printf '%s\n' "$out" | grep '^#' || true)
printf '%s\n' "$bt"
fail=0
# Without debug info for the assembly (release builds), gdb shows its
# minimal symbols Ada-demangled: weft__ctx_jump appears as weft.ctx_jump.
for fn in 'weft(__|\.)ctx_jump' walk_leaf walk_middle walk_entry 'weft(__|\.)ctx_trampoline'; do
    if ! printf '%s\n' "$bt" | grep -Eq " $fn "; then
        echo "missing frame: $fn"
        fail=1
    fi
done
# The walk must end at the trampoline, not wander past it.
last=$(printf '%s\n' "$bt" | tail -n 1)
case $last in
*weft__ctx_trampoline* | *weft.ctx_trampoline*) ;;
*) echo "backtrace does not end at weft__ctx_trampoline: $last"; fail=1 ;;
esac
if [ $fail -ne 0 ]; then
    printf '%s\n' "$out"
    exit 1
fi
echo "ok: suspended context unwound"
