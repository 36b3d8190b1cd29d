# What `cmake --install` puts in the prefix, in two components:
#   runtime  bin/rbtrace; with BUILD_SHARED_LIBS the shared libraries (SONAME
#            files: what the CLI and users' programs load)
#   dev      headers, the static libraries or the .so links, the CMake
#            package (find_package(rbtrace CONFIG))
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The installed libraries: the one list to extend when a library is added.
set(RBTRACE_INSTALLED_LIBRARIES rbtrace_ringbuf rbtrace_tracedat rbtrace_consumer rbtrace_snapshot)

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
