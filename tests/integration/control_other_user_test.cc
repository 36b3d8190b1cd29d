// The control plane across users (issue 12). Root's `rbtrace stat PID`
// reaches a process of another uid: the CLI finds the process's control
// directory as the process chose it (its uid from /proc/PID/status, its
// RBTRACE_CONTROL_DIR / XDG_RUNTIME_DIR from /proc/PID/environ, else the
// defaults for its uid), and refuses, with a message that names the
// directory and what is wrong with it, a directory that is a symlink or
// belongs to a third uid, without connecting through it. A default
// directory another user made first (/tmp/rbtrace-<uid>, or a symlink
// there) makes Server::start fail with a message that says so and how to
// fix it. /run/user/<uid>/rbtrace is preferred when XDG_RUNTIME_DIR is
// unset, and the CLI finds a server wherever the rule put it.
//
// The target is rbtrace_control_target (control_target.cc), started in a
// forked child that drops to another uid (setgroups, setresgid, setresuid:
// nothing is created as root before) and execs it with an environment of
// its own, so /proc/PID/environ holds what its Server::start saw. It says
// "ready <socket>" (or "error ...") on stdout and lives until its stdin
// closes: nothing here waits for time to pass, only for a line or an exit.
//
// Uids: 65534 (nobody) and 65533 for the directories in a temporary base;
// for the default directories (/tmp/rbtrace-<uid>, /run/user/<uid>) a uid
// of this run's own (1900000000 + 2 * (pid % 1000000), and the next one as
// "another user"): no account has it, so no real user's directory and no
// concurrent run of this test is touched; every such path is removed at the
// end. The tests need root (they run as root in CI).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;
constexpr uid_t kThird = 65533;

// This run's own uids for the default directories (see the top).
uid_t run_uid() { return 1900000000u + static_cast<uid_t>(getpid() % 1000000) * 2; }
uid_t run_uid_other() { return run_uid() + 1; }

std::string tmp_default(uid_t uid) { return "/tmp/rbtrace-" + std::to_string(uid); }

bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

// A directory owned by `uid` with `mode` (made by root, as a test's setup).
void make_dir(const std::string& p, uid_t uid, mode_t mode) {
  ASSERT_EQ(mkdir(p.c_str(), mode), 0) << p << ": " << std::strerror(errno);
  ASSERT_EQ(chown(p.c_str(), uid, uid), 0) << p;
  ASSERT_EQ(chmod(p.c_str(), mode), 0) << p;
}

// A symlink as another user would plant it.
void plant_link(const std::string& target, const std::string& at, uid_t uid) {
  ASSERT_EQ(symlink(target.c_str(), at.c_str()), 0) << at;
  ASSERT_EQ(lchown(at.c_str(), uid, uid), 0) << at;
}

// Our environment without the two variables that choose a control
// directory: the CLI must find the process's directory on its own.
std::vector<std::string> clean_env() {
  std::vector<std::string> env;
  for (char** e = environ; *e; e++) {
    if (std::strncmp(*e, "RBTRACE_CONTROL_DIR=", 20) == 0) continue;
    if (std::strncmp(*e, "XDG_RUNTIME_DIR=", 16) == 0) continue;
    env.emplace_back(*e);
  }
  return env;
}

// A child running `argv` as `uid` (dropping root first when it is not
// ours) with exactly `env`; its stdin and its stdout+stderr are pipes.
struct Child {
  pid_t pid = -1;
  int in = -1;   // its stdin (write end): closing it ends a target
  int out = -1;  // its stdout and stderr (read end)
};

Child spawn(uid_t uid, const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  Child c;
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return c;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return c;
  }
  // Everything the child needs is made before fork.
  std::vector<std::string> a = argv, e = env;
  std::vector<char*> av, ev;
  for (auto& s : a) av.push_back(s.data());
  av.push_back(nullptr);
  for (auto& s : e) ev.push_back(s.data());
  ev.push_back(nullptr);
  const bool drop = uid != geteuid();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    if (drop && (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
                 setresuid(uid, uid, uid) != 0)) {
      dprintf(1, "error setuid: %s\n", std::strerror(errno));
      _exit(126);
    }
    if (chdir("/") != 0) _exit(125);
    execve(av[0], av.data(), ev.data());
    dprintf(1, "error exec %s: %s\n", av[0], std::strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  if (pid < 0) {
    close(in[1]);
    close(out[0]);
    return c;
  }
  c.pid = pid;
  c.in = in[1];
  c.out = out[0];
  return c;
}

// One line from `fd` (without its newline), waiting at most 60 s for it
// (an upper bound for a start that takes milliseconds).
std::string read_line(int fd) {
  std::string line;
  const auto end = SteadyClock::now() + std::chrono::seconds(60);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now()).count();
    if (left <= 0) return line + " [no complete line within 60 s]";
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char ch;
    const ssize_t n = read(fd, &ch, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || ch == '\n') return line;
    line.push_back(ch);
  }
}

// Everything `fd` gives until EOF.
std::string read_all(int fd) {
  std::string s;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return s;
    s.append(buf, static_cast<size_t>(n));
  }
}

struct Proc {
  int status = -1;
  std::string out;
};

// `rbtrace ARGS` as `uid` with `env`: exit status and output.
Proc run_cli(uid_t uid, const std::vector<std::string>& args,
             const std::vector<std::string>& env = clean_env()) {
  std::vector<std::string> argv = {RBTRACE_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c = spawn(uid, argv, env);
  Proc r;
  if (c.pid < 0) return r;
  close(c.in);
  r.out = read_all(c.out);
  close(c.out);
  int st = 0;
  if (waitpid(c.pid, &st, 0) == c.pid && WIFEXITED(st)) r.status = WEXITSTATUS(st);
  return r;
}

// A listening socket made by root at `path` (non-blocking: accept says
// at once whether anyone connected).
int listen_at(const std::string& path) {
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return -1;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(s, 8) != 0) {
    close(s);
    return -1;
  }
  return s;
}

// Connections waiting on listener `l` (each taken and closed).
int connections_made(int l) {
  int n = 0;
  for (;;) {
    const int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return n;
    close(c);
    n++;
  }
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// Shows a message the test checks (for the log: what a person would read).
void show(const std::string& what, const std::string& msg) {
  std::printf("[ info ] %s: %s\n", what.c_str(), msg.c_str());
}

class ControlOtherUser : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "these tests act as other users: they need root";
    char tmpl[] = "/tmp/rbtrace-xuser-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    ASSERT_EQ(chmod(base_.c_str(), 0755), 0);  // other uids reach their directories in it
    // The defaults of this run's uids: nobody else's, and left by nobody
    // (a run with our pid that crashed, at most).
    for (uid_t u : {run_uid(), run_uid_other()}) {
      remove_later(tmp_default(u));
      remove_later("/run/user/" + std::to_string(u));
      std::system(("rm -rf " + tmp_default(u) + " /run/user/" + std::to_string(u)).c_str());
    }
  }
  void TearDown() override {
    for (Child& c : targets_) stop(&c);
    for (const std::string& p : remove_) std::system(("rm -rf " + p).c_str());
    std::system(("rm -rf " + base_).c_str());
  }
  void remove_later(const std::string& p) { remove_.push_back(p); }

  // Starts the target as `uid` with `env` (plus PATH); its first line in
  // *line ("ready <socket>", "ready -" when idle, or "error ...").
  pid_t start_target(uid_t uid, std::vector<std::string> env, std::string* line,
                     bool idle = false) {
    env.emplace_back("PATH=/usr/bin:/bin");
    std::vector<std::string> argv = {RBTRACE_CONTROL_TARGET};
    if (idle) argv.emplace_back("--idle");
    Child c = spawn(uid, argv, env);
    if (c.pid < 0) return -1;
    targets_.push_back(c);
    *line = read_line(c.out);
    return c.pid;
  }
  // Closes the target's stdin and waits for it to exit (its server removes
  // its socket).
  void stop(Child* c) {
    if (c->pid < 0) return;
    close(c->in);
    close(c->out);
    int st = 0;
    waitpid(c->pid, &st, 0);
    c->pid = -1;
  }
  void stop_all() {
    for (Child& c : targets_) stop(&c);
  }

  // `rbtrace stat PID` as root: succeeds and shows the target's ring.
  void expect_stat_works(pid_t pid, uid_t as = 0,
                         const std::vector<std::string>& env = clean_env()) {
    const Proc r = run_cli(as, {"stat", std::to_string(pid)}, env);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(contains(r.out, "process " + std::to_string(pid) + " (")) << r.out;
    EXPECT_TRUE(contains(r.out, ": 2 CPUs, 4 pages of 4096 bytes per CPU, overwrite mode"))
        << r.out;
  }

  std::string base_;
  std::vector<Child> targets_;
  std::vector<std::string> remove_;
};

// XDG_RUNTIME_DIR set in the process's environment (a directory of its
// own): root's CLI, with neither variable, finds <xdg>/rbtrace. Before,
// it looked in root's own directory (/tmp/rbtrace-0) and found nothing.
TEST_F(ControlOtherUser, RootReachesAProcessThroughItsXdgRuntimeDir) {
  const std::string xdg = base_ + "/xdg";
  make_dir(xdg, kNobody, 0700);
  std::string line;
  const pid_t pid = start_target(kNobody, {"XDG_RUNTIME_DIR=" + xdg}, &line);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(line, "ready " + xdg + "/rbtrace/" + std::to_string(pid) + ".sock");
  expect_stat_works(pid);
  // snapshot too: root makes the file, the process writes into it.
  const std::string out = base_ + "/snap.dat";
  const Proc r = run_cli(0, {"snapshot", std::to_string(pid), "-o", out});
  EXPECT_EQ(r.status, 0) << r.out;
  struct stat st {};
  EXPECT_EQ(stat(out.c_str(), &st), 0) << r.out;
  EXPECT_EQ(st.st_uid, 0u);
}

// RBTRACE_CONTROL_DIR in the process's environment.
TEST_F(ControlOtherUser, RootReachesAProcessThroughItsRbtraceControlDir) {
  const std::string home = base_ + "/home";
  make_dir(home, kNobody, 0700);
  const std::string dir = home + "/ctl";  // made by the process
  std::string line;
  const pid_t pid = start_target(kNobody, {"RBTRACE_CONTROL_DIR=" + dir}, &line);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(line, "ready " + dir + "/" + std::to_string(pid) + ".sock");
  expect_stat_works(pid);
  // The CLI's own RBTRACE_CONTROL_DIR still wins: pointed at the
  // process's directory (the process's uid's: root accepts it), it finds
  // it; pointed elsewhere, it does not.
  std::vector<std::string> env = clean_env();
  env.push_back("RBTRACE_CONTROL_DIR=" + dir);
  expect_stat_works(pid, 0, env);
  env.back() = "RBTRACE_CONTROL_DIR=" + base_ + "/nowhere";
  const Proc r = run_cli(0, {"stat", std::to_string(pid)}, env);
  EXPECT_EQ(r.status, 5) << r.out;  // not traced: no socket there
  EXPECT_TRUE(contains(r.out, base_ + "/nowhere/" + std::to_string(pid) + ".sock")) << r.out;
}

// Neither variable: /tmp/rbtrace-<uid>, created by the process.
TEST_F(ControlOtherUser, RootReachesAProcessInTheDefaultTmpDir) {
  const uid_t u = run_uid();
  std::string line;
  const pid_t pid = start_target(u, {}, &line);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(line, "ready " + tmp_default(u) + "/" + std::to_string(pid) + ".sock");
  expect_stat_works(pid);
  struct stat st {};
  ASSERT_EQ(lstat(tmp_default(u).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, u);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

// A user acting on its own process works as before (its own environment
// names the directory), and now also without that environment; another
// non-root user is refused at once, saying why.
TEST_F(ControlOtherUser, UsersOwnProcessAndAnotherUsers) {
  const std::string xdg = base_ + "/xdg";
  make_dir(xdg, kNobody, 0700);
  std::string line;
  const pid_t pid = start_target(kNobody, {"XDG_RUNTIME_DIR=" + xdg}, &line);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(contains(line, "ready ")) << line;
  expect_stat_works(pid, kNobody, {"XDG_RUNTIME_DIR=" + xdg});
  expect_stat_works(pid, kNobody, {});
  const Proc r = run_cli(kThird, {"stat", std::to_string(pid)}, {});
  show("uid 65533's rbtrace stat on uid 65534's process", r.out);
  EXPECT_EQ(r.status, 6) << r.out;  // refused
  EXPECT_TRUE(
      contains(r.out, "process " + std::to_string(pid) + " runs as uid 65534 and we are uid 65533"))
      << r.out;
  // Recording across users (issue 16): another user's record start is
  // refused at once; root's, into a directory of root's, is refused by the
  // process (it writes only where its own user owns the directory); into
  // one of the process's user, it records, and stops.
  const std::string out = base_ + "/out";
  make_dir(out, kNobody, 0700);
  const std::string pids = std::to_string(pid);
  Proc rec = run_cli(kThird, {"record", "start", pids, "-o", out}, {});
  EXPECT_EQ(rec.status, 6) << rec.out;
  const std::string root_dir = base_ + "/root-out";
  make_dir(root_dir, 0, 0700);
  rec = run_cli(0, {"record", "start", pids, "-o", root_dir}, {});
  show("root's record start into a directory of root's", rec.out);
  EXPECT_EQ(rec.status, 6) << rec.out;
  EXPECT_TRUE(contains(rec.out, "owned by uid 0, not by the traced process's user (uid 65534)"))
      << rec.out;
  rec = run_cli(0, {"record", "start", pids, "-o", out}, {});
  EXPECT_EQ(rec.status, 0) << rec.out;
  rec = run_cli(kThird, {"record", "stop", pids}, {});
  EXPECT_EQ(rec.status, 6) << rec.out;
  rec = run_cli(0, {"record", "stop", pids}, {});
  EXPECT_EQ(rec.status, 0) << rec.out;
  EXPECT_TRUE(contains(rec.out, "recording stopped")) << rec.out;
}

// The process's RBTRACE_CONTROL_DIR is a symlink another uid planted, to a
// directory of the process's uid holding a socket with the process's
// name: root refuses the link, says so, and does not connect through it.
TEST_F(ControlOtherUser, RootRefusesASymlinkedDirectory) {
  const std::string trap = base_ + "/trap", link = base_ + "/link";
  make_dir(trap, kNobody, 0700);
  plant_link(trap, link, kThird);
  std::string line;
  const pid_t pid = start_target(kNobody, {"RBTRACE_CONTROL_DIR=" + link}, &line, true);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(line, "ready -");
  const int l = listen_at(trap + "/" + std::to_string(pid) + ".sock");
  ASSERT_GE(l, 0);
  const Proc r = run_cli(0, {"stat", std::to_string(pid)});
  show("root's rbtrace stat, symlinked directory", r.out);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "process " + std::to_string(pid) +
                                  " runs as uid 65534; its control directory " + link +
                                  " is a symbolic link (made by uid 65533, to " + trap + ")"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "refused")) << r.out;
  EXPECT_FALSE(contains(r.out, "Not a directory")) << r.out;
  EXPECT_EQ(connections_made(l), 0) << "the CLI connected through the link";
  close(l);
}

// The process's directory belongs to a third uid (a directory another
// user made where the process's RBTRACE_CONTROL_DIR points, with a socket
// of the process's name in it): refused, named, not connected to.
TEST_F(ControlOtherUser, RootRefusesADirectoryOfAThirdUser) {
  const std::string dir = base_ + "/third";
  make_dir(dir, kThird, 0700);
  std::string line;
  const pid_t pid = start_target(kNobody, {"RBTRACE_CONTROL_DIR=" + dir}, &line, true);
  ASSERT_GT(pid, 0);
  const int l = listen_at(dir + "/" + std::to_string(pid) + ".sock");
  ASSERT_GE(l, 0);
  const Proc r = run_cli(0, {"stat", std::to_string(pid)});
  show("root's rbtrace stat, a third uid's directory", r.out);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "process " + std::to_string(pid) +
                                  " runs as uid 65534; its control directory " + dir +
                                  " is owned by uid 65533: refused"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "remove it")) << r.out;
  EXPECT_EQ(connections_made(l), 0) << "the CLI connected through another user's directory";
  close(l);
  // Group or other bits on the process's own directory: refused too.
  const std::string open_dir = base_ + "/open";
  make_dir(open_dir, kNobody, 0755);
  const pid_t pid2 = start_target(kNobody, {"RBTRACE_CONTROL_DIR=" + open_dir}, &line, true);
  ASSERT_GT(pid2, 0);
  const Proc r2 = run_cli(0, {"stat", std::to_string(pid2)});
  show("root's rbtrace stat, a directory open to others", r2.out);
  EXPECT_EQ(r2.status, 6) << r2.out;
  EXPECT_TRUE(contains(r2.out, open_dir + " has mode 0755")) << r2.out;
}

// The directory is the process's uid's, but the socket in it is served by
// another uid (root made it here): the CLI checks the server's
// credentials and refuses.
TEST_F(ControlOtherUser, RootRefusesAServerOfAnotherUid) {
  const std::string dir = base_ + "/own";
  make_dir(dir, kNobody, 0700);
  std::string line;
  const pid_t pid = start_target(kNobody, {"RBTRACE_CONTROL_DIR=" + dir}, &line, true);
  ASSERT_GT(pid, 0);
  const int l = listen_at(dir + "/" + std::to_string(pid) + ".sock");
  ASSERT_GE(l, 0);
  const Proc r = run_cli(0, {"stat", std::to_string(pid)});
  show("root's rbtrace stat, a server of another uid", r.out);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "its server runs as uid 0, not as uid 65534")) << r.out;
  close(l);
}

// /tmp/rbtrace-<uid> made first by another user: the process's
// Server::start fails with a message naming the directory, its owner and
// the fix (before: "owned by uid N, not by us: refused", no way out
// offered); root's CLI says the same about the process.
TEST_F(ControlOtherUser, DefaultDirectoryMadeByAnotherUserIsAClearError) {
  const uid_t u = run_uid(), other = run_uid_other();
  const std::string d = tmp_default(u);
  make_dir(d, other, 0700);
  std::string line;
  const pid_t pid = start_target(u, {}, &line);
  ASSERT_GT(pid, 0);
  show("Server::start, /tmp/rbtrace-<uid> made by another uid", line);
  EXPECT_TRUE(contains(line, "error ")) << line;
  EXPECT_TRUE(contains(line, d + " is owned by uid " + std::to_string(other) + ", not by us (uid " +
                                 std::to_string(u) + "): refused"))
      << line;
  EXPECT_TRUE(contains(line, "default control directory")) << line;
  EXPECT_TRUE(contains(line, "remove it")) << line;
  EXPECT_TRUE(contains(line, "RBTRACE_CONTROL_DIR or XDG_RUNTIME_DIR")) << line;
  const pid_t idle = start_target(u, {}, &line, true);
  ASSERT_GT(idle, 0);
  const Proc r = run_cli(0, {"stat", std::to_string(idle)});
  show("root's rbtrace stat, /tmp/rbtrace-<uid> made by another uid", r.out);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "process " + std::to_string(idle) + " runs as uid " +
                                  std::to_string(u) + "; its control directory " + d +
                                  " is owned by uid " + std::to_string(other) + ": refused"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "remove it")) << r.out;
}

// A symlink there: the symlink message, not "Not a directory", and
// nothing made where it points.
TEST_F(ControlOtherUser, SymlinkAtTheDefaultDirectoryIsAClearError) {
  const uid_t u = run_uid(), other = run_uid_other();
  const std::string d = tmp_default(u), elsewhere = base_ + "/elsewhere";
  make_dir(elsewhere, u, 0700);
  plant_link(elsewhere, d, other);
  std::string line;
  const pid_t pid = start_target(u, {}, &line);
  ASSERT_GT(pid, 0);
  show("Server::start, /tmp/rbtrace-<uid> a symlink", line);
  EXPECT_TRUE(contains(line, "error ")) << line;
  EXPECT_TRUE(contains(line, d + " is a symbolic link (made by uid " + std::to_string(other) +
                                 ", to " + elsewhere + ")"))
      << line;
  EXPECT_TRUE(contains(line, "remove it")) << line;
  EXPECT_FALSE(contains(line, "Not a directory")) << line;
  EXPECT_FALSE(exists(elsewhere + "/" + std::to_string(pid) + ".sock"));
  EXPECT_FALSE(exists(elsewhere + "/" + std::to_string(pid) + ".lock"));
  const pid_t idle = start_target(u, {}, &line, true);
  ASSERT_GT(idle, 0);
  const Proc r = run_cli(0, {"stat", std::to_string(idle)});
  show("root's rbtrace stat, /tmp/rbtrace-<uid> a symlink", r.out);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "its control directory " + d + " is a symbolic link")) << r.out;
  EXPECT_FALSE(contains(r.out, "Not a directory")) << r.out;
}

// XDG_RUNTIME_DIR unset and /run/user/<uid> there (ours, 0700): the
// server uses /run/user/<uid>/rbtrace, and root's CLI finds it there. A
// server started before /run/user/<uid> appeared (in /tmp) is still found.
TEST_F(ControlOtherUser, RunUserIsPreferredAndFoundByTheCli) {
  // A machine without /run/user (a container, no logind) gets one made
  // for the test (root's, 0755, as logind makes it), removed after.
  struct stat st {};
  bool made_run_user = false;
  if (stat("/run/user", &st) != 0) {
    ASSERT_EQ(mkdir("/run/user", 0755), 0) << std::strerror(errno);
    made_run_user = true;
  }
  ASSERT_TRUE(stat("/run/user", &st) == 0 && S_ISDIR(st.st_mode)) << "/run/user is not a directory";
  struct RemoveRunUser {
    bool on;
    ~RemoveRunUser() {
      if (on) rmdir("/run/user");
    }
  } remove_run_user{made_run_user};
  const uid_t u = run_uid();
  const std::string run = "/run/user/" + std::to_string(u);
  // Started first, before the runtime directory exists: /tmp.
  std::string line;
  const pid_t early = start_target(u, {}, &line);
  ASSERT_GT(early, 0);
  ASSERT_EQ(line, "ready " + tmp_default(u) + "/" + std::to_string(early) + ".sock");
  make_dir(run, u, 0700);
  const pid_t late = start_target(u, {}, &line);
  ASSERT_GT(late, 0);
  ASSERT_EQ(line, "ready " + run + "/rbtrace/" + std::to_string(late) + ".sock");
  expect_stat_works(late);
  expect_stat_works(early);
  expect_stat_works(late, u, {});  // the user itself, no environment
}

}  // namespace
