# rbtrace::liburing - liburing for rbtrace::consumer's io_uring backend.
# Included by the build (top-level CMakeLists.txt) and installed beside
# rbtraceConfig.cmake, which includes it too: a static rbtrace::consumer
# links liburing into the user's program, so the installed package finds it
# the same way the build did (pkg-config first, then a plain search) instead
# of naming -luring and hoping. Leaves rbtrace::liburing undefined when
# liburing is missing; the caller says what to install.
if(NOT TARGET rbtrace::liburing)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(RBTRACE_LIBURING QUIET IMPORTED_TARGET liburing)
  endif()
  if(TARGET PkgConfig::RBTRACE_LIBURING)
    add_library(rbtrace::liburing INTERFACE IMPORTED)
    set_target_properties(rbtrace::liburing PROPERTIES
      INTERFACE_LINK_LIBRARIES PkgConfig::RBTRACE_LIBURING)
  else()
    find_library(RBTRACE_URING_LIBRARY NAMES uring)
    find_path(RBTRACE_URING_INCLUDE_DIR NAMES liburing.h)
    if(RBTRACE_URING_LIBRARY AND RBTRACE_URING_INCLUDE_DIR)
      add_library(rbtrace::liburing INTERFACE IMPORTED)
      set_target_properties(rbtrace::liburing PROPERTIES
        INTERFACE_LINK_LIBRARIES "${RBTRACE_URING_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${RBTRACE_URING_INCLUDE_DIR}")
    endif()
  endif()
endif()
