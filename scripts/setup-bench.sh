#!/usr/bin/env bash
# scripts/setup-bench.sh - installs what bench/ needs beyond the build's own
# packages (g++, cmake, libboost-dev, libgtest-dev), from Debian's archive.
#
#   scripts/setup-bench.sh            rbtrace-bench, bench/compare.py, bench/callgrind.py,
#                                     and the LTTng-UST peer
#   scripts/setup-bench.sh --arm64    also the arm64 cross toolchain, qemu-user
#                                     and the arm64 libraries (bench/arm64-smoke)
#
# Runs as root (or through sudo when it is there). Idempotent.
set -euo pipefail

arm64=0
for a in "$@"; do
  case "$a" in
    --arm64) arm64=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup-bench: unknown argument $a" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

# Google Benchmark; valgrind (callgrind, callgrind_annotate) and binutils
# (addr2line) for bench/callgrind.py; pkg-config to find LTTng-UST; python3 runs
# bench/compare.py and bench/callgrind.py (standard library only).
pkgs=(libbenchmark-dev valgrind binutils pkg-config python3
      # the peer: tracepoint provider headers and library, lttng + lttng-sessiond
      liblttng-ust-dev lttng-tools)
if [ "$arm64" = 1 ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  pkgs+=(g++-aarch64-linux-gnu qemu-user
         libboost-dev:arm64 libgtest-dev:arm64 libbenchmark-dev:arm64
         # rbtrace::consumer (io_uring backend)
         liburing-dev:arm64)
fi

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "setup-bench: installed ${pkgs[*]}"
