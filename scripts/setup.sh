#!/usr/bin/env bash
# Install what Portal needs from Debian's packages, then configure and build.
# Sourced by bench.sh and test.sh; usable alone: scripts/setup.sh [BUILD_DIR] [cmake args...]
set -euo pipefail

# Build and tests: compilers, cmocka, zlib; spin (the protocol model), clang and its
# runtimes (libFuzzer, TSan); QEMU, busybox and cpio (the VM tests).
# Benchmark peers: nng, ZeroMQ, iceoryx, DPDK, Concurrency Kit, liburcu; gnuplot for plots.
PORTAL_PACKAGES=(gcc make cmake pkg-config libcmocka-dev zlib1g-dev
	spin clang-14 libclang-rt-14-dev qemu-system-x86 busybox-static cpio
	libnng-dev libzmq3-dev iceoryx libiceoryx-binding-c-dev libdpdk-dev libck-dev liburcu-dev
	gnuplot-nox linux-perf)

portal_install_deps() {
	local missing=() p
	for p in "${PORTAL_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "portal: missing Debian packages: ${missing[*]}" >&2
		echo "portal: run as root:  $cmd" >&2
		return 1
	fi
	echo "portal: installing ${missing[*]}" >&2
	if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		       "${missing[@]}" >/dev/null; }; then
		echo "portal: installing packages failed; run by hand:  $cmd" >&2
		return 1
	fi
}

# portal_build DIR [cmake args...]
portal_build() {
	local dir=$1
	shift
	cmake -S "$PORTAL_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j "$(nproc)"
}

PORTAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	portal_install_deps
	portal_build "${1:-$PORTAL_ROOT/build}" "${@:2}"
fi
