#!/usr/bin/env bash
# Install Portal into a temporary prefix, then build and run the quickstart
# example against it twice: through find_package(Portal) and through pkg-config.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/install" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
	-DQUICKSTART_SRC="$src/examples/quickstart.c" >/dev/null
cmake --build "$tmp/cmake" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/cmake/quickstart" | grep -c "child got" | grep -qx 3
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib/x86_64-linux-gnu/pkgconfig"
cc -std=c11 "$src/examples/quickstart.c" $(pkg-config --cflags --libs portal) -o "$tmp/qs-pc"
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib/x86_64-linux-gnu" "$tmp/qs-pc" | grep -c "child got" | grep -qx 3
echo "install test: find_package(Portal) and pkg-config both build and run the quickstart"
