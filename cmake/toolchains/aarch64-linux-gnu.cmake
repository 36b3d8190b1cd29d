# Cross-compiling rbtrace for arm64 with Debian's aarch64-linux-gnu toolchain
# (g++-aarch64-linux-gnu), running the results under qemu-user:
#
#   cmake -S . -B build-arm64 \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#
# Libraries come from Debian's multiarch packages for arm64 (dpkg
# --add-architecture arm64; apt-get install libboost-dev:arm64
# libgtest-dev:arm64 libbenchmark-dev:arm64), which live in
# /usr/lib/aarch64-linux-gnu and /usr/include; the C library of the
# toolchain lives in /usr/aarch64-linux-gnu. bench/arm64-smoke does it all.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Search the toolchain's sysroot and the multiarch directories of the host
# (CMAKE_LIBRARY_ARCHITECTURE keeps the x86-64 libraries out); programs come
# from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config: only the arm64 .pc files (an x86-64 liblttng-ust-dev on the
# host must not be taken for an arm64 one).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# ctest and add_test run the binaries through qemu-user. With Debian's
# multiarch libc6:arm64 installed (/lib/ld-linux-aarch64.so.1, pulled in by
# the :arm64 library packages) qemu must use it as is: with
# -L /usr/aarch64-linux-gnu it would take the loader of the cross toolchain
# (libc6-arm64-cross) and the libc of libc6:arm64 through the host's
# ld.so.cache, two different glibc builds, and the first pthread_create
# hangs. Without libc6:arm64, -L points qemu at the toolchain's own libraries.
find_program(RBTRACE_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(RBTRACE_QEMU_AARCH64)
  if(EXISTS /lib/ld-linux-aarch64.so.1)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${RBTRACE_QEMU_AARCH64})
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${RBTRACE_QEMU_AARCH64} -L /usr/aarch64-linux-gnu)
  endif()
endif()
