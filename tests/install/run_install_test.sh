#!/usr/bin/env bash
# A program outside the tree built against an installed rbtrace, as a user
# builds it: with find_package(rbtrace CONFIG) (tests/install/downstream)
# and with pkg-config, listing only rbtrace's own modules; then run. Also the
# installed bin/rbtrace, run from the prefix.
#
#   run_install_test.sh static BUILD_DIR
#       installs BUILD_DIR (the project's build: static libraries)
#   run_install_test.sh shared BUILD_DIR CXX
#       configures and builds the libraries and the CLI only (no tests,
#       examples or benchmarks: about a minute on 2 cores) with
#       BUILD_SHARED_LIBS=ON in BUILD_DIR/install-shared with compiler CXX,
#       and installs that
#
# The pkg-config build uses clang++ and the CMake one the default compiler,
# both with -Wall -Wextra -Wpedantic -Werror on the program that records to
# disk (downstream/record.cc).
set -euo pipefail
mode=$1
build_dir=$(cd "$2" && pwd)
src_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
fail() { echo "install ($mode): $*"; exit 1; }

case "$mode" in
  static)
    cmake --install "$build_dir" --prefix "$prefix" >/dev/null
    ;;
  shared)
    shared_build="$build_dir/install-shared"
    start=$(date +%s)
    cmake -S "$src_dir/../.." -B "$shared_build" -DCMAKE_CXX_COMPILER="$3" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_SHARED_LIBS=ON -DRBTRACE_WERROR=ON \
      -DRBTRACE_BUILD_TESTS=OFF -DRBTRACE_BUILD_EXAMPLES=OFF -DRBTRACE_BUILD_BENCH=OFF >/dev/null
    cmake --build "$shared_build" -j 2 >/dev/null
    echo "install (shared): libraries and CLI built in $(( $(date +%s) - start )) s"
    cmake --install "$shared_build" --prefix "$prefix" >/dev/null
    ;;
  *) fail "mode: static or shared" ;;
esac
libdir=$(cd "$prefix" && ls -d lib*/pkgconfig | sed 's|/pkgconfig$||')
libs=(ringbuf tracedat consumer snapshot)

# What is installed: a library per module, static or shared with a soname.
for l in "${libs[@]}"; do
  if [ "$mode" = static ]; then
    [ -f "$prefix/$libdir/librbtrace_$l.a" ] || fail "no $libdir/librbtrace_$l.a"
    ! ls "$prefix/$libdir"/librbtrace_$l.so* >/dev/null 2>&1 || fail "a shared librbtrace_$l in a static install"
  else
    so="$prefix/$libdir/librbtrace_$l.so"
    [ "$(readlink "$so")" = "librbtrace_$l.so.0.1" ] || fail "$so is not a link to librbtrace_$l.so.0.1"
    [ -f "$so.0.1.0" ] || fail "no $so.0.1.0"
    readelf -d "$so.0.1.0" | grep "SONAME.*\[librbtrace_$l.so.0.1\]" >/dev/null || fail "$so.0.1.0: soname is not librbtrace_$l.so.0.1"
  fi
  [ -f "$prefix/$libdir/pkgconfig/rbtrace-$l.pc" ] || fail "no $libdir/pkgconfig/rbtrace-$l.pc"
done
# rbtrace::autostart: static in both (a shared one would be dropped by
# --as-needed), its own .pc, not in the umbrella.
[ -f "$prefix/$libdir/librbtrace_autostart.a" ] || fail "no $libdir/librbtrace_autostart.a"
[ -f "$prefix/$libdir/pkgconfig/rbtrace-autostart.pc" ] || fail "no rbtrace-autostart.pc"

# pkg-config: every module valid, its prefix the install's; the consumer's
# liburing a private dependency: in --static's list, not in the plain one
# (a shared librbtrace_consumer carries it: no overlinking).
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
for m in rbtrace "${libs[@]/#/rbtrace-}"; do
  pkg-config --validate "$m" || fail "pkg-config --validate $m"
  [ "$(pkg-config --modversion "$m")" = 0.1.0 ] || fail "$m: version $(pkg-config --modversion "$m")"
  [ "$(pkg-config --variable=prefix "$m")" = "$prefix" ] || fail "$m: prefix $(pkg-config --variable=prefix "$m")"
done
pkg-config --static --libs rbtrace-consumer | grep -- "-luring" >/dev/null || fail "pkg-config --static --libs rbtrace-consumer has no -luring"
! pkg-config --libs rbtrace-consumer | grep -- "-luring" >/dev/null || fail "pkg-config --libs rbtrace-consumer lists -luring"
[ "$(pkg-config --libs rbtrace | grep -o -- '-lrbtrace_[a-z]*' | tr '\n' ' ')" = \
  "-lrbtrace_snapshot -lrbtrace_consumer -lrbtrace_tracedat -lrbtrace_ringbuf " ] ||
  fail "pkg-config --libs rbtrace: $(pkg-config --libs rbtrace)"
pkg-config --libs rbtrace-autostart | grep -- "-Wl,--undefined=rbtrace_autostart_anchor" >/dev/null ||
  fail "pkg-config --libs rbtrace-autostart: $(pkg-config --libs rbtrace-autostart)"

# The program built with pkg-config (static libraries: --static, as for
# any static library with dependencies of its own; shared: the RPATH is
# the user's to choose).
pc_flags=(--cflags --libs)
link_extra=()
if [ "$mode" = static ]; then
  pc_flags=(--static --cflags --libs)
else
  link_extra=("-Wl,-rpath,$prefix/$libdir")
fi
# shellcheck disable=SC2046  # pkg-config's flags are words
clang++ -std=c++20 -Wall -Wextra -Wpedantic -Werror "$src_dir/downstream/record.cc" \
  -o "$work/record-pkgconfig" $(pkg-config "${pc_flags[@]}" rbtrace) "${link_extra[@]}"
"$work/record-pkgconfig" "$work/trace-pkgconfig"
# shellcheck disable=SC2046
clang++ -std=c++20 -Wall -Wextra -Wpedantic -Werror "$src_dir/downstream/autohost.cc" \
  -o "$work/autohost-pkgconfig" $(pkg-config "${pc_flags[@]}" rbtrace-autostart) "${link_extra[@]}"

# The programs built with find_package.
cmake -S "$src_dir/downstream" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
"$work/build/downstream"
"$work/build/downstream-record" "$work/trace-cmake"
# The environment alone records a program with no rbtrace set-up (linked
# with rbtrace::autostart both ways); without it, nothing is written.
for p in "$work/autohost-pkgconfig" "$work/build/downstream-autohost"; do
  out=$("$p")
  [ "$out" = "written=0 nodev=500 other=0" ] || fail "$p without RBTRACE_RECORD: $out"
  d="$work/auto-$(basename "$p")"
  out=$(RBTRACE_RECORD="$d" "$p")
  [ "$out" = "written=500 nodev=0 other=0" ] || fail "$p with RBTRACE_RECORD: $out"
  n=$("$prefix/bin/rbtrace" report "$d"/*.dat | grep -c " auto_tick: ")
  [ "$n" = 500 ] || fail "$p: $n auto_tick events in $d, expected 500"
done
if [ "$mode" = shared ]; then
  for p in "$work/record-pkgconfig" "$work/build/downstream-record"; do
    # (grep reads it all: -q ending the pipe early would fail it under pipefail)
    ldd "$p" | grep "librbtrace_consumer.so.0.1 => $prefix/$libdir/" >/dev/null ||
      fail "$p does not load the installed librbtrace_consumer.so.0.1"
  done
fi

# The installed CLI: there, runs from the prefix, reads a trace.dat.
rbtrace="$prefix/bin/rbtrace"
[ -x "$rbtrace" ] || fail "no bin/rbtrace in the installed package"
expect() {  # expect PATTERN OUTPUT
  grep -q "$1" <<<"$2" || { echo "install ($mode): bin/rbtrace printed no '$1':"; head -5 <<<"$2"; exit 1; }
}
expect "^usage: rbtrace <command>" "$("$rbtrace" --help)"
expect "^usage: rbtrace report" "$("$rbtrace" report --help)"
expect "EVENTS DROPPED" "$("$rbtrace" report "$src_dir/../corpus/tracedat/valid_two_cpus.dat")"
expect " record: *n=999 who=downstream$" "$("$rbtrace" report "$work"/trace-pkgconfig/*.dat)"
echo "install ($mode): built with pkg-config and find_package, ran; bin/rbtrace runs"
