# Warnings and sanitizers for rbtrace's own targets: rbtrace_target_options(T).
add_library(rbtrace_warnings INTERFACE)
target_compile_options(rbtrace_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
  -Wnull-dereference -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
if(RBTRACE_WERROR)
  target_compile_options(rbtrace_warnings INTERFACE -Werror)
endif()

set(_rbtrace_san_flags "")
if(RBTRACE_SANITIZE)
  if(RBTRACE_SANITIZE MATCHES "thread" AND RBTRACE_SANITIZE MATCHES "address")
    message(FATAL_ERROR "RBTRACE_SANITIZE: thread cannot be combined with address")
  endif()
  set(_rbtrace_san_flags -fsanitize=${RBTRACE_SANITIZE} -fno-omit-frame-pointer)
  if(RBTRACE_SANITIZE MATCHES "undefined")
    list(APPEND _rbtrace_san_flags -fno-sanitize-recover=undefined)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC 12's -fsanitize=null check on the initial-exec thread_local
      # binding table tests stale flags and aborts on the first event; the
      # rest of UBSan stays on.
      list(APPEND _rbtrace_san_flags -fno-sanitize=null)
    endif()
  endif()
  # Sanitizers apply to everything built here, tests and dependencies alike.
  add_compile_options(${_rbtrace_san_flags})
  add_link_options(${_rbtrace_san_flags})
endif()

function(rbtrace_target_options target)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:rbtrace_warnings>)
endfunction()
