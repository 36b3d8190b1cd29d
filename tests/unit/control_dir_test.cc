// Where the control directory is (choose_dir, the one rule the server and
// the client share) and what the server says when it refuses one (issue
// 12): the directory, what is wrong with it (owner, mode, a symbolic link
// and whose) and how to fix it, never a bare "Not a directory".
//
// choose_dir takes its bases (/run/user, /tmp) as a parameter: the
// /run/user/<uid> cases run in a temporary directory. Run as root (CI), the
// wrong-owner cases chown to 65533/65534.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "rbtrace/control.h"

using namespace rbtrace::control;

namespace {

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// Saves and restores the two variables that choose a control directory.
class EnvGuard {
 public:
  EnvGuard() {
    for (int i = 0; i < 2; i++) {
      const char* v = std::getenv(kNames[i]);
      had_[i] = v != nullptr;
      if (v) old_[i] = v;
    }
  }
  ~EnvGuard() {
    for (int i = 0; i < 2; i++) {
      if (had_[i])
        setenv(kNames[i], old_[i].c_str(), 1);
      else
        unsetenv(kNames[i]);
    }
  }

 private:
  static constexpr const char* kNames[2] = {"RBTRACE_CONTROL_DIR", "XDG_RUNTIME_DIR"};
  bool had_[2] = {false, false};
  std::string old_[2];
};

class ControlDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-dirchoice-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    bases_.run_user = base_ + "/run/user";
    bases_.tmp = base_ + "/tmp";
    ASSERT_EQ(mkdir((base_ + "/run").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(bases_.run_user.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(bases_.tmp.c_str(), 01777), 0);
  }
  void TearDown() override { std::system(("rm -rf " + base_).c_str()); }

  // <run_user>/<uid> as logind makes it: the user's, 0700.
  std::string make_run_user(uid_t uid, mode_t mode = 0700) {
    const std::string d = bases_.run_user + "/" + std::to_string(uid);
    EXPECT_EQ(mkdir(d.c_str(), mode), 0);
    EXPECT_EQ(chmod(d.c_str(), mode), 0);
    EXPECT_EQ(chown(d.c_str(), uid, uid), 0);
    return d;
  }
  std::string base_;
  DirBases bases_;
};

TEST_F(ControlDir, TheEnvironmentComesFirst) {
  DirChoice c = choose_dir("/c/ctl", "/x", 1000, bases_);
  EXPECT_EQ(c.dir, "/c/ctl");
  EXPECT_EQ(c.source, DirSource::kControlDirEnv);
  c = choose_dir("", "/x", 1000, bases_);
  EXPECT_EQ(c.dir, "/x/rbtrace");
  EXPECT_EQ(c.source, DirSource::kRuntimeDirEnv);
  make_run_user(geteuid());
  c = choose_dir("", "/x", geteuid(), bases_);  // XDG_RUNTIME_DIR still wins over /run/user
  EXPECT_EQ(c.source, DirSource::kRuntimeDirEnv);
}

// XDG_RUNTIME_DIR unset: /run/user/<uid>/rbtrace when /run/user/<uid> is a
// real directory of the uid's with mode 0700, else /tmp/rbtrace-<uid>.
TEST_F(ControlDir, RunUserIsPreferredWhenItIsTheUsers) {
  ASSERT_EQ(geteuid(), 0u) << "chown needs root";
  const uid_t u = 65534;
  const std::string tmp = bases_.tmp + "/rbtrace-65534";
  DirChoice c = choose_dir("", "", u, bases_);
  EXPECT_EQ(c.dir, tmp) << "no runtime directory";
  EXPECT_EQ(c.source, DirSource::kTmp);

  const std::string run = make_run_user(u);
  c = choose_dir("", "", u, bases_);
  EXPECT_EQ(c.dir, run + "/rbtrace");
  EXPECT_EQ(c.source, DirSource::kRunUser);

  ASSERT_EQ(chmod(run.c_str(), 0750), 0);
  EXPECT_EQ(choose_dir("", "", u, bases_).dir, tmp) << "mode 0750 is not logind's";
  ASSERT_EQ(chmod(run.c_str(), 0700), 0);
  ASSERT_EQ(chown(run.c_str(), 65533, 65533), 0);
  EXPECT_EQ(choose_dir("", "", u, bases_).dir, tmp) << "another uid's";
  ASSERT_EQ(chown(run.c_str(), u, u), 0);
  EXPECT_EQ(choose_dir("", "", u, bases_).dir, run + "/rbtrace");

  // A symlink to a directory that would pass, and a file: not followed,
  // not used.
  const std::string real = base_ + "/real";
  ASSERT_EQ(mkdir(real.c_str(), 0700), 0);
  ASSERT_EQ(chown(real.c_str(), u, u), 0);
  ASSERT_EQ(rmdir(run.c_str()), 0);
  ASSERT_EQ(symlink(real.c_str(), run.c_str()), 0);
  EXPECT_EQ(choose_dir("", "", u, bases_).dir, tmp) << "a symlink was followed";
  ASSERT_EQ(unlink(run.c_str()), 0);
  const int fd = open(run.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0700);
  ASSERT_GE(fd, 0);
  close(fd);
  ASSERT_EQ(chown(run.c_str(), u, u), 0);
  EXPECT_EQ(choose_dir("", "", u, bases_).dir, tmp);
}

// default_dir is choose_dir with our environment and euid: the server's
// choice is the rule the client applies to a process.
TEST_F(ControlDir, DefaultDirIsTheRuleAppliedToUs) {
  EnvGuard guard;
  setenv("RBTRACE_CONTROL_DIR", "/some/ctl", 1);
  setenv("XDG_RUNTIME_DIR", "/some/xdg", 1);
  EXPECT_EQ(default_dir(), "/some/ctl");
  unsetenv("RBTRACE_CONTROL_DIR");
  EXPECT_EQ(default_dir(), "/some/xdg/rbtrace");
  setenv("RBTRACE_CONTROL_DIR", "", 1);  // empty is unset
  EXPECT_EQ(default_dir(), "/some/xdg/rbtrace");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(default_dir(), choose_dir("", "", geteuid()).dir);
  const std::string d = default_dir();
  EXPECT_TRUE(d == "/run/user/" + std::to_string(geteuid()) + "/rbtrace" ||
              d == "/tmp/rbtrace-" + std::to_string(geteuid()))
      << d;
}

// What the server says about a directory it refuses: the directory, what
// is wrong, how to fix it.
TEST_F(ControlDir, RefusalsSayWhatIsWrongAndHowToFixIt) {
  ASSERT_EQ(geteuid(), 0u) << "chown needs root";
  EnvGuard guard;
  unsetenv("RBTRACE_CONTROL_DIR");
  unsetenv("XDG_RUNTIME_DIR");
  std::string err;

  // Another user's.
  const std::string theirs = base_ + "/theirs";
  ASSERT_EQ(mkdir(theirs.c_str(), 0700), 0);
  ASSERT_EQ(chown(theirs.c_str(), 65533, 65533), 0);
  EXPECT_EQ(open_private_dir(theirs, true, &err), -EPERM);
  EXPECT_TRUE(contains(err, theirs + " is owned by uid 65533, not by us (uid 0): refused")) << err;
  EXPECT_TRUE(contains(err, "remove it (another user made it: root can)")) << err;
  EXPECT_TRUE(contains(err, "use another directory")) << err;  // given explicitly
  // The same directory as our RBTRACE_CONTROL_DIR: the fix names it.
  setenv("RBTRACE_CONTROL_DIR", theirs.c_str(), 1);
  EXPECT_EQ(open_private_dir(theirs, true, &err), -EPERM);
  EXPECT_TRUE(contains(err, "It is $RBTRACE_CONTROL_DIR")) << err;
  EXPECT_TRUE(contains(err, "set RBTRACE_CONTROL_DIR to a private directory you own")) << err;
  unsetenv("RBTRACE_CONTROL_DIR");

  // Ours, but open to others.
  const std::string open_dir = base_ + "/open";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0755), 0);
  EXPECT_EQ(open_private_dir(open_dir, true, &err), -EPERM);
  EXPECT_TRUE(
      contains(err, open_dir + " has mode 0755, which gives access to others (0700 required)"))
      << err;
  EXPECT_TRUE(contains(err, "chmod 700")) << err;

  // A symlink another user planted, to a directory that would pass: said
  // to be a symlink (whose, and where to), not "Not a directory"; with a
  // trailing slash too (which would make the kernel follow it).
  const std::string real = base_ + "/real", link = base_ + "/link";
  ASSERT_EQ(mkdir(real.c_str(), 0700), 0);
  ASSERT_EQ(symlink(real.c_str(), link.c_str()), 0);
  ASSERT_EQ(lchown(link.c_str(), 65533, 65533), 0);
  for (const std::string& p : {link, link + "/"}) {
    EXPECT_EQ(open_private_dir(p, true, &err), -EPERM) << p << ": a symlink was followed";
    EXPECT_TRUE(contains(err, "is a symbolic link (made by uid 65533, to " + real + ")")) << err;
    EXPECT_TRUE(contains(err, "remove it")) << err;
    EXPECT_FALSE(contains(err, "Not a directory")) << err;
  }

  // A file; a directory that cannot be made.
  const std::string file = base_ + "/file";
  const int fd = open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  close(fd);
  EXPECT_EQ(open_private_dir(file, true, &err), -ENOTDIR);
  EXPECT_TRUE(contains(err, file + " is not a directory (a regular file")) << err;
  EXPECT_EQ(open_private_dir(base_ + "/no/such", true, &err), -ENOENT);
  EXPECT_TRUE(contains(err, base_ + "/no/such: cannot create")) << err;
  EXPECT_EQ(open_private_dir(base_ + "/missing", false, &err), -ENOENT);

  // And one that passes.
  const int ok = open_private_dir(real, false, &err);
  EXPECT_GE(ok, 0) << err;
  if (ok >= 0) close(ok);
}

}  // namespace
