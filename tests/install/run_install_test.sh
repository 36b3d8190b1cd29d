#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, builds the downstream
# project against it with find_package(rbtrace CONFIG), and runs it; runs
# the installed bin/rbtrace on a trace.dat of the corpus.
set -euo pipefail
build_dir=$1
src_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$src_dir/downstream" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
"$work/build/downstream"

# The installed CLI: there, runs from the prefix, reads a trace.dat.
rbtrace="$work/prefix/bin/rbtrace"
[ -x "$rbtrace" ] || { echo "install: no bin/rbtrace in the installed package"; exit 1; }
expect() {  # expect PATTERN OUTPUT
  grep -q "$1" <<<"$2" || { echo "install: bin/rbtrace printed no '$1':"; head -5 <<<"$2"; exit 1; }
}
expect "^usage: rbtrace <command>" "$("$rbtrace" --help)"
expect "^usage: rbtrace report" "$("$rbtrace" report --help)"
expect "EVENTS DROPPED" "$("$rbtrace" report "$src_dir/../corpus/tracedat/valid_two_cpus.dat")"
echo "install: bin/rbtrace runs"
