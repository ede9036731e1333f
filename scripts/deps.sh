#!/usr/bin/env bash
# Build, test and benchmark dependencies of weft on Debian/Ubuntu.
#
# Source it and call weft_install_deps (scripts/bench.sh and scripts/test.sh
# do), or run it. It asks dpkg-query first and runs apt-get only for what is
# missing, so on a machine that has everything it costs one dpkg-query call
# and touches nothing. Uses sudo only when not root. On a system without
# dpkg/apt-get it says so and returns 0: the build then reports whatever is
# really missing.

WEFT_DEPS=(
    build-essential meson ninja-build pkg-config
    libhwloc-dev libjemalloc-dev libdw-dev libelf-dev
    check libsubunit-dev
    libboost-context-dev libboost-fiber-dev libtbb-dev golang-go
    python3-matplotlib valgrind gdb
    wrk
)

# Print the packages of WEFT_DEPS that are not installed, one per line.
weft_missing_deps() {
    local installed
    # Status-Abbrev "ii " = wanted and installed; unknown packages are
    # reported on stderr and simply never appear as installed.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${WEFT_DEPS[@]}" \
                2>/dev/null | awk '$2 == "ii" { print $1 }')
    local p
    for p in "${WEFT_DEPS[@]}"; do
        grep -qxF -- "$p" <<<"$installed" || echo "$p"
    done
}

weft_install_deps() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        echo "deps.sh: no dpkg/apt-get here; install by hand: ${WEFT_DEPS[*]}" >&2
        return 0
    fi
    local missing
    missing=$(weft_missing_deps)
    [ -z "$missing" ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "deps.sh: installing:" $missing >&2
    # shellcheck disable=SC2086  # one word per package
    "${sudo[@]}" apt-get update -q &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $missing
}

# Run directly: install.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    weft_install_deps
fi
