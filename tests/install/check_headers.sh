#!/usr/bin/env bash
# Every installed public header compiles alone, as the only #include of a
# translation unit, under -Wall -Wextra -Wpedantic -Werror with GCC and with
# Clang: users' strict builds include them (a header that needs another
# first, or warns, breaks those). Compiled to an object at -O2, where some
# of GCC's warnings only appear.
#
#   check_headers.sh BUILD_DIR [GCC] [CLANG]   (default g++, clang++)
set -euo pipefail
build_dir=$1
compilers=("${2:-g++}" "${3:-clang++}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --component dev --prefix "$work/prefix" >/dev/null
mapfile -t headers < <(cd "$work/prefix/include" && find rbtrace -name '*.h' | sort)
[ ${#headers[@]} -ge 20 ] || { echo "headers: only ${#headers[@]} installed"; exit 1; }
for cxx in "${compilers[@]}"; do
  command -v "$cxx" >/dev/null || { echo "headers: no compiler $cxx"; exit 1; }
  "$cxx" --version | head -1
done

# One TU per header and compiler, two at a time; a failure's output is kept.
for h in "${headers[@]}"; do
  for cxx in "${compilers[@]}"; do
    printf '%s\0%s\0' "$cxx" "$h"
  done
done | xargs -0 -n 2 -P 2 sh -c '
  cxx=$1 h=$2 tu="$0/$(echo "$cxx-$h" | tr / _).cc"
  printf "#include <%s>\n" "$h" >"$tu"
  if ! "$cxx" -std=c++20 -O2 -Wall -Wextra -Wpedantic -Werror -I"$0/prefix/include" \
       -c "$tu" -o "$tu.o" >"$tu.log" 2>&1; then
    echo "headers: $cxx: <$h> does not compile alone cleanly:"; head -20 "$tu.log"; touch "$0/failed"
  fi' "$work"
[ ! -e "$work/failed" ] || exit 1
echo "headers: ${#headers[@]} headers compile alone under -Wall -Wextra -Wpedantic -Werror with ${compilers[*]}"
