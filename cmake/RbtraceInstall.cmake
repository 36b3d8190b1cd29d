# What `cmake --install` puts in the prefix, in two components (the .deb
# packages of cmake/RbtracePackage.cmake):
#   runtime  bin/rbtrace; with BUILD_SHARED_LIBS the shared libraries (SONAME
#            files: what the CLI and users' programs load)
#   dev      headers, the static libraries or the .so links, the CMake
#            package (find_package(rbtrace CONFIG)), the pkg-config files
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
include(RbtracePkgConfig)

# The installed libraries, with their pkg-config descriptions: the one list
# to extend when a library is added.
set(RBTRACE_INSTALLED_LIBRARIES rbtrace_ringbuf rbtrace_tracedat rbtrace_consumer rbtrace_autostart
  rbtrace_snapshot)
set(RBTRACE_PC_DESCRIPTION_rbtrace_ringbuf "rbtrace per-CPU ring buffer, events and writers")
set(RBTRACE_PC_DESCRIPTION_rbtrace_tracedat "rbtrace trace.dat writer, reader and exports")
set(RBTRACE_PC_DESCRIPTION_rbtrace_consumer "rbtrace consumer: records a ring to trace.dat files")
set(RBTRACE_PC_DESCRIPTION_rbtrace_autostart "rbtrace: RBTRACE_RECORD=DIR records the process ring (link it into a program)")
set(RBTRACE_PC_DESCRIPTION_rbtrace_snapshot "rbtrace snapshots and the control socket")

# Sonames: while the major version is 0 the ABI may change with every minor
# version (the version file below says SameMinorVersion too), so the soname
# carries major.minor (librbtrace_ringbuf.so.0.1); from 1.0 the major alone.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(RBTRACE_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
else()
  set(RBTRACE_SOVERSION ${PROJECT_VERSION_MAJOR})
endif()
# RPATH $ORIGIN: a shared library finds its siblings (librbtrace_consumer
# needs librbtrace_ringbuf) in an installed prefix off the loader's path;
# the CLI's own RPATH (snapshot/CMakeLists.txt) covers only its direct needs.
set_target_properties(${RBTRACE_INSTALLED_LIBRARIES} PROPERTIES
  VERSION ${PROJECT_VERSION} SOVERSION ${RBTRACE_SOVERSION} INSTALL_RPATH "$ORIGIN")

install(TARGETS ${RBTRACE_INSTALLED_LIBRARIES} EXPORT rbtraceTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(dir ringbuf/include consumer/tracedat/include consumer/include snapshot/include)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/rbtrace DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
    COMPONENT dev)
endforeach()
install(EXPORT rbtraceTargets NAMESPACE rbtrace:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace
  COMPONENT dev)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/rbtraceConfig.cmake.in
  ${PROJECT_BINARY_DIR}/rbtraceConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rbtraceConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/rbtraceConfig.cmake ${PROJECT_BINARY_DIR}/rbtraceConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/rbtraceLiburing.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace COMPONENT dev)

# pkg-config: rbtrace-ringbuf, -tracedat, -consumer, -autostart, -snapshot,
# and rbtrace (all of them but autostart, for `pkg-config --libs rbtrace`:
# autostart runs code before main, which a program asks for by name).
set(umbrella "")
foreach(lib IN LISTS RBTRACE_INSTALLED_LIBRARIES)
  rbtrace_pkgconfig(${lib} "${RBTRACE_PC_DESCRIPTION_${lib}}")
  rbtrace_pkgconfig_module(${lib} module)
  if(NOT lib STREQUAL "rbtrace_autostart")
    list(PREPEND umbrella ${module})  # the top layer first, as a link line
  endif()
endforeach()
list(JOIN umbrella " " umbrella)
rbtrace_pkgconfig_write(rbtrace "${PROJECT_DESCRIPTION}: every library" "${umbrella}" "" "" "" "")
rbtrace_pkgconfig_install(dev)
