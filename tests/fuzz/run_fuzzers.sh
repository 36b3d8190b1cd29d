#!/usr/bin/env bash
# tests/fuzz/run_fuzzers.sh - build the libFuzzer targets with clang (the
# fuzz preset: build-fuzz, AddressSanitizer + UBSan + coverage) and run each one for a
# bounded time, seeded from tests/corpus/tracedat. CI runs this; the whole
# script stays under ~3 minutes on 2 cores.
#
#   FUZZ_SECONDS=60   run time per target (libFuzzer -max_total_time)
#   JOBS=2            build parallelism
#   CXX=clang++-14    the compiler (clang with libFuzzer)
#
# Exit status: non-zero if the build fails or a fuzzer finds a crash, a
# sanitizer report, a leak or a timeout (the reproducer is left in
# build-fuzz/findings/).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
jobs=${JOBS:-2}
cxx=${CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++-14 clang++; do
    if command -v "$c" >/dev/null 2>&1; then cxx=$c; break; fi
  done
fi
if [ -z "$cxx" ] || ! "$cxx" --version 2>/dev/null | grep -q clang; then
  echo "run_fuzzers.sh: clang++ is needed (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

build=build-fuzz  # the fuzz preset's binaryDir
echo "== configure + build: preset fuzz ($cxx)"
cmake --preset fuzz -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build --preset fuzz -j "$jobs"

mkdir -p "$build/findings"
status=0
for target in tracedat_fuzz control_fuzz; do
  seeds=tests/corpus/${target%_fuzz}  # tracedat, control
  work="$build/corpus/$target"  # grows across runs; seeds stay read-only
  mkdir -p "$work"
  echo "== $target: ${seconds}s, seeds from $seeds"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$build/bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/findings/$target-" \
        "$work" "$seeds"; then
    echo "== $target FAILED: reproducer in $build/findings/" >&2
    status=1
  fi
done
exit $status
