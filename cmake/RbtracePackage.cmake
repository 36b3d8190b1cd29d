# CPack: `cpack -G DEB` in a build tree makes two Debian packages from the
# install components of cmake/RbtraceInstall.cmake:
#   rbtrace          the CLI (and, with BUILD_SHARED_LIBS, the shared
#                    libraries it loads); Depends from dpkg-shlibdeps (libc6,
#                    libstdc++6, libgcc-s1, liburing2)
#   librbtrace-dev   headers, libraries, the CMake package, the pkg-config
#                    files; Depends on what building against them needs
# Split so that reading traces and talking to a traced process (the CLI)
# does not pull compilers' headers and Boost. The libraries are packaged
# static (the default build): their ABI is not stable before 1.0 (soname
# 0.1 would need a package per minor version, librbtrace0.1), and the
# writer's thread-local state is initial-exec TLS, which a static link
# always satisfies. Package from a build configured with
# -DCMAKE_INSTALL_PREFIX=/usr for Debian's multiarch libdir; otherwise the
# files go to /usr/lib, which Debian searches too.
set(CPACK_PACKAGE_NAME rbtrace)
set(CPACK_PACKAGE_VENDOR "rbtrace")
set(CPACK_PACKAGE_CONTACT "rbtrace maintainers <rbtrace@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The pkg-config files take the install prefix at install time
# (RbtracePkgConfig.cmake): DESTDIR staging keeps it /usr, not CPack's
# temporary directory.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)

set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME rbtrace)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
# Its dependencies are what bin/rbtrace loads: libc6, libstdc++6 and
# libgcc-s1 (the CLI uses no io_uring, so liburing2 is not among them; a
# shared build's librbtrace_consumer would add it).
# Each package's description: CPack puts the project's description first,
# as the synopsis; this text is the extended description.
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "The command-line tool.
rbtrace lists the processes traced with the rbtrace libraries, takes
snapshots over their control socket, reports and exports trace.dat files
and recovers the spool of a recording after a crash.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME librbtrace-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# Building against the package: Boost's preprocessor headers (rbtrace/event.h),
# liburing to link the consumer (liburing-dev: the .so link and liburing.pc,
# and liburing2 through it), a C++20 compiler's libc and libstdc++ headers.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libboost-dev (>= 1.74), liburing-dev (>= 2.1), libc6-dev, libstdc++-12-dev | libstdc++-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "rbtrace (= ${PROJECT_VERSION}), pkg-config, cmake")
set(_rbtrace_libs "static libraries")
if(BUILD_SHARED_LIBS)
  # The shared libraries are in the runtime package: -dev needs them.
  string(APPEND CPACK_DEBIAN_DEV_PACKAGE_DEPENDS ", rbtrace (= ${PROJECT_VERSION})")
  set(_rbtrace_libs "links to the shared libraries")
endif()
set(CPACK_DEBIAN_DEV_DESCRIPTION "The development files.
Headers, ${_rbtrace_libs}, the CMake package (find_package(rbtrace)) and
the pkg-config files (rbtrace, rbtrace-ringbuf, rbtrace-tracedat,
rbtrace-consumer, rbtrace-snapshot) for programs that trace into rbtrace's
ring buffer and record to trace-cmd trace.dat files.")

include(CPack)
