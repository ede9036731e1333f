#!/usr/bin/env bash
# The main job: on a fresh Debian/Ubuntu machine, install what is missing,
# build weft and its benchmark peers optimised, run the whole suite and
# write bench/results/results.{txt,md,png}.
#
#   scripts/bench.sh [run.py options]    e.g. --quick, --workers 1,2,4
#
# Takes a while: switch-cost alone does 1,000,000 round trips per run for
# each of its nine rows, and on a VM its cross-CPU rows cost ~25 us a
# switch (about 18 minutes on a 2-vCPU VM). The network benchmarks (echo,
# http with wrk, idle-conns) add about two minutes: 6 s per server and
# connection count, servers and clients on disjoint CPUs. --quick is a
# smoke run; --only echo,http,idle-conns runs just those.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
weft_install_deps

build=build-release
if [ -f "$build/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "$build" --buildtype=release
else
    meson setup "$build" --buildtype=release
fi
ninja -C "$build"

# The report's plot needs matplotlib, which the distribution installs for
# its own python3; a python3 earlier in PATH (pyenv, a venv) may lack it.
python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null && [ -x /usr/bin/python3 ] &&
   /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    python=/usr/bin/python3
fi
exec "$python" bench/run.py --build "$build" --out bench/results "$@"
