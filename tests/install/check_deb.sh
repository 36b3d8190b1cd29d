#!/usr/bin/env bash
# The Debian packages of cmake/RbtracePackage.cmake, from BUILD_DIR: made by
# cpack; their control fields (dpkg-deb --info) and files (dpkg-deb -c)
# checked against the source tree; then unpacked with dpkg -x into a
# staging root (no Debian chroot here: that needs debootstrap and root)
# and used from there: a program built with pkg-config (through
# PKG_CONFIG_SYSROOT_DIR) and one with find_package (CMAKE_PREFIX_PATH),
# run, and the packaged CLI run.
#
#   check_deb.sh BUILD_DIR
set -euo pipefail
build_dir=$(cd "$1" && pwd)
src_dir=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$src_dir/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "deb: $*"; exit 1; }

cpack -G DEB --config "$build_dir/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack failed"; }
arch=$(dpkg --print-architecture)
cli="$work/pkg/rbtrace_0.1.0_$arch.deb"
dev="$work/pkg/librbtrace-dev_0.1.0_$arch.deb"
[ -f "$cli" ] && [ -f "$dev" ] || fail "cpack made: $(ls "$work/pkg")"
for d in "$cli" "$dev"; do
  echo "== dpkg-deb --info $(basename "$d")"
  dpkg-deb --info "$d" | sed -n '/^ Architecture:/,$p'
done

# Control fields.
field() { dpkg-deb -f "$1" "$2"; }
want_field() {  # want_field DEB FIELD REGEX
  field "$1" "$2" | grep -E -- "$3" >/dev/null || fail "$(basename "$1") $2 '$(field "$1" "$2")' does not match '$3'"
}
for d in "$cli" "$dev"; do
  want_field "$d" Version '^0\.1\.0$'
  want_field "$d" Architecture "^$arch\$"
  want_field "$d" Maintainer '.'
  want_field "$d" Description '.'
done
want_field "$cli" Package '^rbtrace$'
want_field "$dev" Package '^librbtrace-dev$'
# The CLI's: dpkg-shlibdeps on bin/rbtrace (libc, libstdc++, libgcc).
want_field "$cli" Depends '(^|, )libc6 \(>= [0-9.]+\)(,|$)'
want_field "$cli" Depends '(^|, )libstdc\+\+6 \(>= [0-9.]+\)(,|$)'
# The -dev's: what building against it needs.
want_field "$dev" Depends '(^|, )libboost-dev \(>= 1\.74\)(,|$)'
want_field "$dev" Depends '(^|, )liburing-dev( \(>= [0-9.]+\))?(,|$)'
want_field "$dev" Depends '(^|, )libc6-dev(,|$)'
want_field "$dev" Depends '(^|, )libstdc\+\+-12-dev \| libstdc\+\+-dev(,|$)'

# Files: exactly what is expected, nothing outside /usr.
files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' | sort; }
echo "/usr/bin/rbtrace" >"$work/want-cli"
diff -u "$work/want-cli" <(files "$cli") || fail "rbtrace: files differ from the expected (above)"
libdir=$(files "$dev" | sed -n 's|^/usr/\(lib[^ ]*\)/librbtrace_ringbuf\.a$|\1|p')
[ -n "$libdir" ] || fail "librbtrace-dev: no librbtrace_ringbuf.a"
{
  for d in ringbuf/include consumer/tracedat/include consumer/include snapshot/include; do
    (cd "$root_dir/$d" && find rbtrace -name '*.h' | sed 's|^|/usr/include/|')
  done
  for l in ringbuf tracedat consumer autostart snapshot; do
    echo "/usr/$libdir/librbtrace_$l.a"
    echo "/usr/$libdir/pkgconfig/rbtrace-$l.pc"
  done
  echo "/usr/$libdir/pkgconfig/rbtrace.pc"
  for f in rbtraceConfig rbtraceConfigVersion rbtraceLiburing rbtraceTargets; do
    echo "/usr/$libdir/cmake/rbtrace/$f.cmake"
  done
  files "$dev" | grep "^/usr/$libdir/cmake/rbtrace/rbtraceTargets-[a-z]*\.cmake$"
} | sort >"$work/want-dev"
diff -u "$work/want-dev" <(files "$dev") || fail "librbtrace-dev: files differ from the expected (above)"
echo "deb: files: rbtrace $(files "$cli" | wc -l), librbtrace-dev $(files "$dev" | wc -l), as expected"

# Unpacked into a staging root and used from there.
stage="$work/root"
dpkg -x "$cli" "$stage"
dpkg -x "$dev" "$stage"
file "$stage/usr/bin/rbtrace" | grep "ELF 64-bit LSB pie executable" >/dev/null || fail "$(file "$stage/usr/bin/rbtrace")"
grep -qx "prefix=/usr" "$stage/usr/$libdir/pkgconfig/rbtrace.pc" || fail "rbtrace.pc: prefix is not /usr"

# pkg-config: the packaged .pc files say /usr; the sysroot maps them to the
# staging root (liburing's own .pc stays the system's).
export PKG_CONFIG_SYSROOT_DIR="$stage"
export PKG_CONFIG_PATH="$stage/usr/$libdir/pkgconfig"
flags=$(pkg-config --static --cflags --libs rbtrace)
grep -q -- "-I$stage/usr/include" <<<"$flags" || fail "pkg-config flags: $flags"
# shellcheck disable=SC2086  # pkg-config's flags are words
g++ -std=c++20 -Wall -Wextra -Wpedantic -Werror "$src_dir/downstream/record.cc" \
  -o "$work/record-pkgconfig" $flags
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH
"$work/record-pkgconfig" "$work/trace-pkgconfig"

# find_package: the staged /usr as a prefix.
cmake -S "$src_dir/downstream" -B "$work/build" -DCMAKE_PREFIX_PATH="$stage/usr" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
grep -q "^rbtrace_DIR:PATH=$stage/usr/$libdir/cmake/rbtrace$" "$work/build/CMakeCache.txt" ||
  fail "find_package found $(grep '^rbtrace_DIR' "$work/build/CMakeCache.txt")"
cmake --build "$work/build" -j 2 --target downstream-record >/dev/null
"$work/build/downstream-record" "$work/trace-cmake"

# (grep reads it all: -q ending the pipe early would fail it under pipefail)
"$stage/usr/bin/rbtrace" report "$work"/trace-cmake/*.dat | grep " record: *n=999 who=downstream$" >/dev/null ||
  fail "the packaged rbtrace does not report the recorded trace"
echo "deb: unpacked, built against with pkg-config and find_package, ran; the packaged rbtrace runs"
