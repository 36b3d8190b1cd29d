# pkg-config files for the installed libraries: one per library and the
# umbrella `rbtrace` (every library). Each is written from its target's own
# link properties, so a dependency added with target_link_libraries (or an
# INTERFACE link option) reaches the .pc without editing this file; a kind
# of dependency not mapped below stops the configure, naming it.
#
#   link item                  .pc                          why
#   one of our libraries       Requires: its module         (rbtrace_pkgconfig_module)
#   rbtrace::liburing          Requires: liburing           liburing-dev ships liburing.pc
#   Threads::Threads           Libs: -pthread               std::thread in headers and sources
#   Boost::headers             Cflags: -I<dir> unless a     Boost has no .pc; Debian's headers
#                              system directory             are in /usr/include
#   -flag, LINKER:a,b          Libs: -flag, -Wl,a,b         e.g. -Wl,--undefined=<symbol>
#   plain name                 Libs: -l<name>
#
# Public dependencies (in INTERFACE_LINK_LIBRARIES) go to Requires/Libs;
# private ones (LINK_LIBRARIES only, or $<LINK_ONLY:> of a static library) to
# Requires.private/Libs.private: a shared library carries them itself, and a
# static one is linked with `pkg-config --static`, as pkg-config intends.
#
# The prefix is the one given at install time (cmake --install --prefix P,
# CPack's /usr), written by install(CODE); a staged copy (dpkg -x, DESTDIR)
# is used with PKG_CONFIG_SYSROOT_DIR or `pkg-config --define-prefix`.

# rbtrace_pkgconfig_module(TARGET OUT): the module name of one of our
# libraries (rbtrace_consumer, rbtrace::consumer -> rbtrace-consumer), or "".
function(rbtrace_pkgconfig_module item out)
  set(name "")
  if(item MATCHES "^rbtrace::(.+)$")
    set(item "rbtrace_${CMAKE_MATCH_1}")
  endif()
  if(item IN_LIST RBTRACE_INSTALLED_LIBRARIES)
    string(REPLACE "_" "-" name "${item}")
  endif()
  set(${out} "${name}" PARENT_SCOPE)
endfunction()

# rbtrace_pkgconfig_item(ITEM VISIBILITY): appends ITEM's pkg-config form to
# the caller's _requires[_private], _libs[_private], _cflags.
macro(rbtrace_pkgconfig_item item vis)
  set(_i "${item}")
  set(_sfx "")
  if(NOT "${vis}" STREQUAL "public")
    set(_sfx "_private")
  endif()
  rbtrace_pkgconfig_module("${_i}" _mod)
  if(_mod)
    list(APPEND _requires${_sfx} "${_mod}")
  elseif(_i STREQUAL "rbtrace::liburing")
    list(APPEND _requires${_sfx} liburing)
  elseif(_i STREQUAL "Threads::Threads")
    list(APPEND _libs${_sfx} -pthread)
  elseif(_i STREQUAL "Boost::headers")
    foreach(_d IN LISTS Boost_INCLUDE_DIRS)
      if(NOT _d IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
        list(APPEND _cflags "-I${_d}")
      endif()
    endforeach()
  elseif(_i MATCHES "^LINKER:(.*)$")
    list(APPEND _libs${_sfx} "-Wl,${CMAKE_MATCH_1}")
  elseif(_i MATCHES "^-")
    list(APPEND _libs${_sfx} "${_i}")
  elseif(_i MATCHES "^[A-Za-z0-9_.+-]+$" AND NOT TARGET "${_i}")
    list(APPEND _libs${_sfx} "-l${_i}")
  else()
    message(FATAL_ERROR "cmake/RbtracePkgConfig.cmake: no pkg-config form for '${_i}' "
      "(a link dependency of ${_target}): map it in rbtrace_pkgconfig_item")
  endif()
endmacro()

# rbtrace_pkgconfig_strip(ITEM OUT): the install-time item in ITEM, or "" for
# a build-only one. $<LINK_ONLY:x> (a static library's private dependency)
# and $<INSTALL_INTERFACE:x> give x, $<BUILD_INTERFACE:x> nothing.
function(rbtrace_pkgconfig_strip item out)
  set(i "${item}")
  while(i MATCHES "^\\$<(LINK_ONLY|INSTALL_INTERFACE):(.*)>$")
    set(i "${CMAKE_MATCH_2}")
  endwhile()
  if(i MATCHES "^\\$<BUILD_INTERFACE:")
    set(i "")
  elseif(i MATCHES "\\$<")
    message(FATAL_ERROR "cmake/RbtracePkgConfig.cmake: cannot read the generator expression "
      "'${item}' (a link dependency of a library): extend rbtrace_pkgconfig_strip")
  endif()
  set(${out} "${i}" PARENT_SCOPE)
endfunction()

# rbtrace_pkgconfig(TARGET DESCRIPTION): writes the module of TARGET.
function(rbtrace_pkgconfig _target description)
  rbtrace_pkgconfig_module(${_target} name)
  get_target_property(output ${_target} OUTPUT_NAME)
  get_target_property(all ${_target} LINK_LIBRARIES)
  get_target_property(iface ${_target} INTERFACE_LINK_LIBRARIES)
  get_target_property(iface_opts ${_target} INTERFACE_LINK_OPTIONS)
  foreach(v all iface iface_opts)
    if(NOT ${v})
      set(${v} "")
    endif()
  endforeach()
  set(_requires "")
  set(_requires_private "")
  set(_libs "")
  set(_libs_private "")
  set(_cflags "")
  set(public "")
  foreach(item IN LISTS iface)
    if(NOT item MATCHES "^\\$<LINK_ONLY:")
      rbtrace_pkgconfig_strip("${item}" i)
      if(i)
        list(APPEND public "${i}")
        rbtrace_pkgconfig_item("${i}" public)
      endif()
    endif()
  endforeach()
  foreach(item IN LISTS all iface)
    rbtrace_pkgconfig_strip("${item}" i)
    if(i AND NOT i IN_LIST public)
      rbtrace_pkgconfig_item("${i}" private)
    endif()
  endforeach()
  # INTERFACE link options come before the library: -Wl,--undefined=<symbol>
  # must precede the archive it pulls the symbol from.
  set(pre_libs "")
  foreach(item IN LISTS iface_opts)
    rbtrace_pkgconfig_strip("${item}" i)
    if(i MATCHES "^LINKER:(.*)$")
      set(i "-Wl,${CMAKE_MATCH_1}")
    endif()
    if(i)
      list(APPEND pre_libs "${i}")
    endif()
  endforeach()
  foreach(v _requires _requires_private _libs _libs_private _cflags)
    list(REMOVE_DUPLICATES ${v})
  endforeach()
  list(JOIN pre_libs " " pre_libs)
  list(JOIN _requires " " requires)
  list(JOIN _requires_private " " requires_private)
  list(JOIN _libs " " libs)
  list(JOIN _libs_private " " libs_private)
  list(JOIN _cflags " " cflags)
  string(STRIP "-L\${libdir} ${pre_libs} -l${output} ${libs}" libs)
  string(REGEX REPLACE "  +" " " libs "${libs}")
  rbtrace_pkgconfig_write(${name} "${description}" "${requires}" "${requires_private}"
    "${libs}" "${libs_private}" "-I\${includedir} ${cflags}")
endfunction()

# rbtrace_pkgconfig_write(NAME DESCRIPTION REQUIRES REQUIRES_PRIVATE LIBS
# LIBS_PRIVATE CFLAGS): NAME.pc.in in the build tree, with @RBTRACE_PC_PREFIX@
# for install(CODE) to fill in; adds it to the files to install.
function(rbtrace_pkgconfig_write name description requires requires_private libs libs_private cflags)
  foreach(dir LIBDIR INCLUDEDIR)
    string(TOLOWER ${dir} var)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
      set(${var} "${CMAKE_INSTALL_${dir}}")
    else()
      set(${var} "\${prefix}/${CMAKE_INSTALL_${dir}}")
    endif()
  endforeach()
  string(STRIP "${cflags}" cflags)
  set(text "prefix=@RBTRACE_PC_PREFIX@\nlibdir=${libdir}\nincludedir=${includedir}\n\n")
  string(APPEND text "Name: ${name}\nDescription: ${description}\n")
  string(APPEND text "Version: ${PROJECT_VERSION}\n")
  # The fields that have a value: pairs of field and variable.
  set(fields Requires requires Requires.private requires_private Libs libs
    Libs.private libs_private Cflags cflags)
  while(fields)
    list(POP_FRONT fields field var)
    if(NOT "${${var}}" STREQUAL "")
      string(APPEND text "${field}: ${${var}}\n")
    endif()
  endwhile()
  file(WRITE ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc.in "${text}")
  set_property(GLOBAL APPEND PROPERTY RBTRACE_PC_FILES ${name})
endfunction()

# rbtrace_pkgconfig_install(COMPONENT): at install time, each .pc.in with the
# install prefix, into LIBDIR/pkgconfig.
function(rbtrace_pkgconfig_install component)
  get_property(names GLOBAL PROPERTY RBTRACE_PC_FILES)
  # The filled-in files go through a directory of their own per install:
  # installs of one build tree may run at once (the tests' cmake --install
  # beside cpack).
  install(CODE "
    string(RANDOM LENGTH 12 tmp)
    set(tmp \"${PROJECT_BINARY_DIR}/pkgconfig/install-\${tmp}\")
    foreach(name ${names})
      set(RBTRACE_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
      configure_file(\"${PROJECT_BINARY_DIR}/pkgconfig/\${name}.pc.in\" \"\${tmp}/\${name}.pc\" @ONLY)
      file(INSTALL \"\${tmp}/\${name}.pc\"
        DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig\")
    endforeach()
    file(REMOVE_RECURSE \"\${tmp}\")" COMPONENT ${component})
endfunction()
