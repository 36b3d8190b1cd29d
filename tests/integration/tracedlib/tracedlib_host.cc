// tracedlib_host - a host of tracedlib with no rbtrace code of its own
// (integration_process_tracer runs it):
//   tracedlib_host none N      nobody set up tracing: every tracedlib::work
//                              returns -ENODEV; prints "none ok"
//   tracedlib_host record N    linked with rbtrace::autostart: with
//                              RBTRACE_RECORD=DIR the N calls are recorded
//                              into DIR by the environment alone
//   tracedlib_host fork N      as record, and a forked child makes N calls
//                              too and exits through exit() (its atexit
//                              must not stop or touch the parent's
//                              recording); the parent's N are recorded
// Exit 0, or 1 with what went wrong on stderr.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tracedlib.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tracedlib_host none|record|fork N\n");
    return 2;
  }
  const char* mode = argv[1];
  const unsigned long n = std::strtoul(argv[2], nullptr, 10);
  if (std::strcmp(mode, "fork") == 0) {
    const pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
      for (unsigned long i = 0; i < n; i++) tracedlib::work(1000000 + i);
      std::exit(0);
    }
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "the forked child failed (status %d)\n", st);
      return 1;
    }
  }
  int bad = 0;
  for (unsigned long i = 0; i < n; i++) {
    const int rc = tracedlib::work(i);
    const int want = std::strcmp(mode, "none") == 0 ? -ENODEV : 0;
    if (rc != want && bad++ == 0)
      std::fprintf(stderr, "work(%lu) returned %d, expected %d\n", i, rc, want);
  }
  if (bad != 0) return 1;
  std::printf("%s ok\n", mode);
  return 0;
}
