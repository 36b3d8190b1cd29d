# install(EXPORT) with a Config file and a version file: find_package(rbtrace CONFIG).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS rbtrace_ringbuf rbtrace_tracedat rbtrace_consumer rbtrace_autostart rbtrace_snapshot EXPORT rbtraceTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/ringbuf/include/rbtrace DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/consumer/tracedat/include/rbtrace DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/consumer/include/rbtrace DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/snapshot/include/rbtrace DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT rbtraceTargets NAMESPACE rbtrace:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/rbtraceConfig.cmake.in
  ${PROJECT_BINARY_DIR}/rbtraceConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rbtraceConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/rbtraceConfig.cmake ${PROJECT_BINARY_DIR}/rbtraceConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/rbtrace)
