// control_client.cc - the client side of the control plane, as the
// `rbtrace` CLI uses it: connect, one request and its reply, the list of
// traced processes. See rbtrace/control.h.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control {

using namespace detail;

std::string socket_path(pid_t pid, const std::string& dir) {
  return (dir.empty() ? default_dir() : dir) + "/" + std::to_string(pid) + ".sock";
}

namespace {

// Why a connect failed, for a person.
std::string connect_failure(int e, std::chrono::milliseconds timeout) {
  switch (e) {
    case ETIMEDOUT:
      return "no room in its control server's queue within " + std::to_string(timeout.count()) +
             " ms (the server is stalled or flooded with connections)";
    case ENOENT:
      return "no control socket (the process does not serve one, or has exited)";
    case ECONNREFUSED:
      return "connection refused (a stale socket: the process has exited or stopped its server)";
    default:
      return std::strerror(e);
  }
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The whole of a small file (a /proc one: read until EOF, at most `max`
// bytes). false when it cannot be opened or read.
bool read_small(const std::string& path, size_t max, std::string* out) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;
  out->clear();
  char buf[8192];
  bool ok = true;
  while (out->size() < max) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return ok;
}

// The effective uid of process `pid`: the second field of the "Uid:" line
// of /proc/<pid>/status (real, effective, saved, file system). false when
// there is no such process in our /proc.
bool proc_euid(pid_t pid, uid_t* uid) {
  std::string s;
  if (!read_small("/proc/" + std::to_string(pid) + "/status", 1 << 16, &s)) return false;
  const size_t at = s.find("\nUid:");
  if (at == std::string::npos) return false;
  unsigned long real = 0, eff = 0;
  if (std::sscanf(s.c_str() + at + 5, "%lu %lu", &real, &eff) != 2) return false;
  *uid = static_cast<uid_t>(eff);
  return true;
}

// RBTRACE_CONTROL_DIR and XDG_RUNTIME_DIR as process `pid` was started
// with them (/proc/<pid>/environ: readable by its user and by root; the
// first of a name wins, as getenv finds it). false when unreadable.
bool proc_env(pid_t pid, std::string* control_dir, std::string* runtime_dir) {
  std::string env;
  if (!read_small("/proc/" + std::to_string(pid) + "/environ", 16u << 20, &env)) return false;
  bool have_control = false, have_runtime = false;
  size_t i = 0;
  while (i < env.size()) {
    size_t end = env.find('\0', i);
    if (end == std::string::npos) end = env.size();
    const std::string_view v(env.data() + i, end - i);
    constexpr std::string_view kControl = "RBTRACE_CONTROL_DIR=", kRuntime = "XDG_RUNTIME_DIR=";
    if (!have_control && v.substr(0, kControl.size()) == kControl) {
      *control_dir = std::string(v.substr(kControl.size()));
      have_control = true;
    } else if (!have_runtime && v.substr(0, kRuntime.size()) == kRuntime) {
      *runtime_dir = std::string(v.substr(kRuntime.size()));
      have_runtime = true;
    }
    i = end + 1;
  }
  return true;
}

// Connects to <pid>.sock in the checked directory `dirfd`, through
// /proc/self/fd, waiting at most `timeout` for room in the queue. The
// socket, or -errno.
int connect_in(int dirfd, pid_t pid, std::chrono::milliseconds timeout, std::string* err) {
  sockaddr_un sa;
  if (!socket_address(dirfd, std::to_string(pid) + ".sock", &sa, err)) return -ENAMETOOLONG;
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    const int e = errno;
    if (err) *err = std::string("socket: ") + std::strerror(e);
    return -e;
  }
  // A Unix socket's connect completes at once, or, when the listener's
  // queue is full, waits for room: not for ever. A non-blocking connect
  // would fail with EAGAIN at once and nothing can be polled for, so the
  // wait is a blocking one bounded by SO_SNDTIMEO (which bounds a Unix
  // connect's wait, then EAGAIN), set to what is left of `timeout`.
  const Clock::time_point deadline = Clock::now() + timeout;
  int rc;
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::microseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      rc = -ETIMEDOUT;
      break;
    }
    const timeval tv{static_cast<time_t>(left.count() / 1000000),
                     static_cast<suseconds_t>(left.count() % 1000000)};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      rc = s;
      break;
    }
    if (errno == EINTR) continue;  // still unconnected: try again with what is left
    rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
    break;
  }
  if (rc != s) {
    close(s);
    return rc;
  }
  const timeval none{0, 0};  // call() never blocks; a caller's own I/O is not bounded by us
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  return s;
}

// A place to look for a process's socket, and why it is there (no
// source: given explicitly).
struct Candidate {
  std::string dir;
  bool has_source = false;
  DirSource source = DirSource::kTmp;
};

void add_candidate(std::vector<Candidate>* v, const std::string& dir, const DirSource* source) {
  for (const Candidate& c : *v)
    if (c.dir == dir) return;
  Candidate c;
  c.dir = dir;
  if (source) {
    c.has_source = true;
    c.source = *source;
  }
  v->push_back(std::move(c));
}

// `choice`, then, after a runtime directory, <tmp>/rbtrace-<uid>: a server
// started before /run/user/<uid> appeared (the user's first login) chose
// that, and the rule, applied now, would not.
void add_choice(std::vector<Candidate>* v, const DirChoice& choice, uid_t uid) {
  add_candidate(v, choice.dir, &choice.source);
  if (choice.source == DirSource::kRunUser) {
    const DirChoice tmp{DirBases().tmp + "/rbtrace-" + std::to_string(uid), DirSource::kTmp};
    add_candidate(v, tmp.dir, &tmp.source);
  }
}

}  // namespace

int connect_to(pid_t pid, const std::string& dir_in, std::string* err,
               std::chrono::milliseconds timeout, std::string* path_out) {
  const uid_t me = geteuid();
  const std::string pids = std::to_string(pid);
  const std::string proc = "process " + pids;
  // Our own choice: a directory given, or RBTRACE_CONTROL_DIR in our
  // environment, wins over the process's.
  const bool from_env = dir_in.empty() && !env_or_empty("RBTRACE_CONTROL_DIR").empty();
  const std::string given = dir_in.empty() ? env_or_empty("RBTRACE_CONTROL_DIR") : dir_in;
  uid_t target = 0;
  const bool known = proc_euid(pid, &target);
  std::vector<Candidate> cands;
  uid_t owner = me, alt_owner = me;
  bool resolved = false;  // the directories are the process's, as it chose them
  if (!given.empty()) {
    const DirSource env_source = DirSource::kControlDirEnv;
    add_candidate(&cands, given, from_env ? &env_source : nullptr);
    if (me == 0 && known) alt_owner = target;  // root: the process's directory too
  } else if (!known) {
    // Not a process of our /proc (another pid namespace sharing the
    // directory, say): our own choice, as before.
    add_choice(&cands, choose_dir("", env_or_empty("XDG_RUNTIME_DIR"), me), me);
  } else {
    if (me != 0 && me != target) {
      if (err)
        *err = proc + " runs as uid " + std::to_string(target) + " and we are uid " +
               std::to_string(me) + ": only " +
               (target == 0 ? std::string("root") : "uid " + std::to_string(target) + " or root") +
               " can use its control socket (its server refuses anyone else)";
      if (path_out) path_out->clear();
      return -EACCES;
    }
    resolved = true;
    owner = alt_owner = target;
    std::string cd, rd;
    if (proc_env(pid, &cd, &rd)) {
      DirChoice c = choose_dir(cd, rd, target);
      // A relative path is the process's: from its working directory.
      if (!c.dir.empty() && c.dir[0] != '/') c.dir = "/proc/" + pids + "/cwd/" + c.dir;
      add_choice(&cands, c, target);
    }
    if (me == target)  // what the client did before: our own environment
      add_choice(&cands, choose_dir("", env_or_empty("XDG_RUNTIME_DIR"), me), me);
    add_choice(&cands, choose_dir("", "", target), target);  // its defaults
  }

  // Each place in turn: the first socket that answers, or what went wrong,
  // the worst first (a refused directory, then a stale socket, then none).
  int fail_rc = -ENOENT, fail_rank = 0;
  std::string fail_msg, fail_path, looked;
  auto failed = [&](int rank, int rc, const std::string& path, const std::string& msg) {
    if (rank <= fail_rank) return;
    fail_rank = rank;
    fail_rc = rc;
    fail_path = path;
    fail_msg = msg;
  };
  const std::string runs_as = resolved && me != target
                                  ? proc + " runs as uid " + std::to_string(target) + "; its"
                                  : proc + ": its";
  for (const Candidate& cand : cands) {
    const std::string path = cand.dir + "/" + pids + ".sock";
    if (!looked.empty()) looked += ", ";
    looked += cand.dir;
    DirCheck c;
    const int dirfd = open_dir_checked(cand.dir, owner, alt_owner, false, &c);
    if (dirfd < 0) {
      if (c.kind == DirCheck::kMissing) {
        failed(1, -ENOENT, path, "");
        continue;
      }
      std::string m;
      if (resolved) {
        m = runs_as + " control directory " + cand.dir + " " + dir_problem(c);
      } else {
        m = "control directory " + cand.dir + " " + dir_problem(c);
        if (c.kind == DirCheck::kOwner) {
          m += ", not by uid " + std::to_string(me) + " (ours)";
          if (alt_owner != owner)
            m += " nor uid " + std::to_string(alt_owner) + " (" + proc + "'s)";
        }
      }
      if (c.kind != DirCheck::kError) m += ": refused";
      const std::string fix = dir_fix(c, cand.has_source ? &cand.source : nullptr, resolved);
      if (!fix.empty()) m += ". " + fix;
      failed(3, dirfd, path, m);
      continue;
    }
    std::string why;
    const int s = connect_in(dirfd, pid, timeout, &why);
    close(dirfd);
    if (s >= 0) {
      // Root through another user's directory: the server behind the
      // socket must be that user's (its credentials at listen()).
      if (c.uid != me) {
        ucred cr{};
        socklen_t len = sizeof cr;
        if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || cr.uid != c.uid) {
          close(s);
          if (err)
            *err = "cannot connect to " + proc + " (" + path + "): its server runs as uid " +
                   std::to_string(cr.uid) + ", not as uid " + std::to_string(c.uid) +
                   " (the owner of the directory): refused";
          if (path_out) *path_out = path;
          return -EPERM;
        }
      }
      if (path_out) *path_out = path;
      return s;
    }
    if (s == -ENOENT || s == -ECONNREFUSED) {
      failed(s == -ENOENT ? 1 : 2, s, path, "");
      continue;
    }
    if (err) {
      const bool said = s == -ENAMETOOLONG || why.rfind("socket:", 0) == 0;
      *err = "cannot connect to " + proc + " (" + path + "): " +
             (said ? why : connect_failure(-s, timeout));
    }
    if (path_out) *path_out = path;
    return s;
  }
  if (err) {
    if (fail_rank == 3) {
      *err = fail_msg;
    } else {
      *err = "cannot connect to " + proc + " (" + fail_path + "): " +
             connect_failure(-fail_rc, timeout);
      if (cands.size() > 1) *err += "; looked in " + looked;
    }
  }
  if (path_out) *path_out = fail_path;
  return fail_rc;
}

int call(int sock, const Request& req, int pass_fd, Reply* reply, std::string* err,
         std::chrono::milliseconds timeout) {
  // One deadline for the whole exchange (sending the request, the process
  // serving it, receiving the whole reply), not one per read: a server that
  // trickles cannot hold us for longer than `timeout`.
  const Clock::time_point deadline = Clock::now() + timeout;
  const std::string within = " within " + std::to_string(timeout.count()) + " ms";
  MessageWriter out(encode_request(req), pass_fd);
  int sent = 0;
  while ((sent = out.write_some(sock)) == 0) {
    if (!wait_for(sock, POLLOUT, deadline)) {
      if (err) *err = "the process did not take the request" + within;
      return -ETIMEDOUT;
    }
  }
  // A server that refused the connection at once (too many connections,
  // another uid) answered before it closed: read that answer even when
  // our request could not be sent.
  const bool refused = sent < 0 && (sent == -EPIPE || sent == -ECONNRESET);
  if (sent < 0 && !refused) {
    if (err) *err = std::string("send: ") + std::strerror(-sent);
    return sent;
  }
  MessageReader in(kMaxReplyPayload, 0);
  std::string why;
  int rc;
  while ((rc = in.read_some(sock, &why)) == 0) {
    if (!wait_for(sock, POLLIN, deadline)) {
      if (err) *err = "no complete reply" + within;
      return -ETIMEDOUT;
    }
  }
  if (rc == 1) rc = parse_reply(in.bytes().data(), in.bytes().size(), req.type, reply, &why);
  if (rc != 0) {
    if (refused) {
      if (err) *err = std::string("send: ") + std::strerror(-sent);
      return sent;
    }
    if (err) *err = "bad reply: " + (why.empty() ? std::string(std::strerror(-rc)) : why);
  }
  return rc;
}

std::vector<pid_t> list_processes(const std::string& dir_in) {
  std::vector<pid_t> out;
  const std::string dir = dir_in.empty() ? default_dir() : dir_in;
  std::string err;
  const int dirfd = open_private_dir(dir, false, &err);
  if (dirfd < 0) return out;
  const int rfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  close(dirfd);
  if (rfd < 0) return out;
  DIR* d = fdopendir(rfd);
  if (!d) {
    close(rfd);
    return out;
  }
  while (dirent* de = readdir(d)) {
    const std::string n = de->d_name;
    if (n.size() < 6 || n.compare(n.size() - 5, 5, ".sock") != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(n.c_str(), &end, 10);
    if (end != n.c_str() + n.size() - 5 || pid <= 0) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace rbtrace::control
