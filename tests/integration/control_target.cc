// rbtrace_control_target: a traced process for the tests of the control
// plane across users (control_other_user_test.cc), which start it as
// another uid with an environment of their own, so that /proc/<pid>/environ
// holds what its Server::start saw.
//
//   rbtrace_control_target           serves a control socket with default
//                                    options (the directory choose_dir gives
//                                    its environment and uid)
//   rbtrace_control_target --idle    serves nothing
//
// Prints one line on stdout: "ready <socket path>" ("ready -" when idle)
// once serving, or "error <code> <message>" (then exits 1). Then waits for
// EOF on stdin and exits 0 (the server removes its socket and lock file).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "rbtrace/control.h"
#include "rbtrace/snapshot.h"

int main(int argc, char** argv) {
  const bool idle = argc > 1 && std::strcmp(argv[1], "--idle") == 0;
  rbtrace::Options o;
  o.ncpus = 2;
  o.max_cpus = 2;
  o.pages_per_cpu = 4;
  o.mode = rbtrace::Mode::kOverwrite;
  rbtrace::Error err;
  std::unique_ptr<rbtrace::Snapshot> snap;
  std::unique_ptr<rbtrace::control::Server> server;
  if (!idle) {
    snap = rbtrace::Snapshot::create(o, &err);
    if (snap)
      server = rbtrace::control::Server::start(*snap, rbtrace::control::ServerOptions{}, &err);
    if (!server) {
      std::printf("error %d %s\n", err.code, err.message.c_str());
      return 1;
    }
  }
  std::printf("ready %s\n", server ? server->socket_path().c_str() : "-");
  std::fflush(stdout);
  char c;
  for (;;) {
    const ssize_t n = read(0, &c, 1);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    break;  // EOF (or an error): the test is done with us
  }
  return 0;
}
