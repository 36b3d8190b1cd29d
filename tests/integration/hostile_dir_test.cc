// Directories another user can touch (issue 12): recover and the consumer
// refuse an output directory writable by others (unless sticky) or owned
// by another user, never go through a symbolic link planted as spool/,
// tmp/ or a spool file, and leave what such a link points at alone. Run as
// root these are the attacks of the issue against root's recover (the
// links and the directory handed to uid 65534, "nobody").
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace_test/consumer_common.h"

namespace {

constexpr uid_t kNobody = 65534;

void touch(const std::string& p, const std::string& text = "keep") {
  const int fd = open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << p;
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
}
bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}
// A link as another user would plant it (owned by nobody when we are root).
void plant_link(const std::string& target, const std::string& at) {
  ASSERT_EQ(symlink(target.c_str(), at.c_str()), 0) << at;
  if (geteuid() == 0) {
    ASSERT_EQ(lchown(at.c_str(), kNobody, kNobody), 0);
  }
}

// A process records with one segment and is SIGKILLed: its spool is left.
void record_and_die(const std::string& dir) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    rbtrace::Options o;
    o.ncpus = 1;
    o.pages_per_cpu = 32;
    o.mode = rbtrace::Mode::kProducerConsumer;
    auto rb = rbtrace::RingBuffer::create(o);
    rbtrace::ConsumerOptions co;
    co.dir = dir;
    co.period_us = 1000;
    co.segment_bytes = 0;
    co.fsync = false;
    auto c = rbtrace::Consumer::create(*rb, co);
    if (!c) _exit(11);
    std::thread([&] {
      unsigned char p[ctest::kPayload];
      for (uint64_t s = 0; s < 2000;) {
        ctest::make_payload(p, 0, s);
        if (rb->write(p, ctest::kPayload) == 0) s++;
        else std::this_thread::yield();
      }
    }).join();
    for (int ms = 0; c->stats().pages_written < 5; ms++) {
      if (ms > 60000) _exit(12);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    kill(getpid(), SIGKILL);
  }
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(st)) << st;
}

std::string only_session(const std::string& dir) {
  const auto s = ctest::list(dir + "/spool");
  return s.size() == 1 ? s[0] : "";
}

}  // namespace

TEST(HostileDir, AnOutputDirectoryWritableByOthersIsRefused) {
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-w");
  ASSERT_EQ(chmod(dir.c_str(), 0777), 0);
  auto rb = rbtrace::RingBuffer::create(rbtrace::Options{});
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  rbtrace::Error err;
  EXPECT_FALSE(rbtrace::Consumer::create(*rb, co, &err));
  EXPECT_EQ(err.code, EPERM);
  EXPECT_NE(err.message.find("writable by others without the sticky bit"), std::string::npos)
      << err.message;
  rbtrace::RecoverResult r;
  std::string e;
  EXPECT_EQ(rbtrace::recover_spool(dir, &r, &e), -EPERM);
  EXPECT_NE(e.find("writable by others"), std::string::npos) << e;
  // Sticky (like /tmp): nobody can replace our entries; accepted.
  ASSERT_EQ(chmod(dir.c_str(), 01777), 0);
  auto c = rbtrace::Consumer::create(*rb, co, &err);
  EXPECT_TRUE(c) << err.message;
  if (c) {
    EXPECT_EQ(c->stop(), 0);
  }
  ctest::remove_tree(dir);
}

TEST(HostileDir, ADirectoryOfAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_FAIL() << "needs root (to hand the directory to another uid)";
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-u");
  record_and_die(dir);
  ASSERT_EQ(chown(dir.c_str(), kNobody, kNobody), 0);
  rbtrace::RecoverResult r;
  std::string e;
  EXPECT_EQ(rbtrace::recover_spool(dir, &r, &e), -EPERM);
  EXPECT_NE(e.find("owned by uid 65534"), std::string::npos) << e;
  EXPECT_FALSE(only_session(dir).empty()) << "the spool was touched";
  ctest::remove_tree(dir);
}

TEST(HostileDir, ASpoolLinkIsNotFollowed) {
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-s");
  const std::string victim = ctest::make_temp_dir("/tmp", "victim-s");
  ASSERT_EQ(mkdir((victim + "/session").c_str(), 0700), 0);
  touch(victim + "/session/precious");
  plant_link(victim, dir + "/spool");
  rbtrace::RecoverResult r;
  std::string e;
  const int rc = rbtrace::recover_spool(dir, &r, &e);
  EXPECT_TRUE(rc == -ENOTDIR || rc == -ELOOP) << rc;  // O_DIRECTORY|O_NOFOLLOW on a link
  EXPECT_NE(e.find("symbolic link"), std::string::npos) << e;
  EXPECT_TRUE(exists(victim + "/session/precious")) << "recover deleted through the link";
  // The consumer does not record through it either.
  auto rb = rbtrace::RingBuffer::create(rbtrace::Options{});
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  rbtrace::Error err;
  EXPECT_FALSE(rbtrace::Consumer::create(*rb, co, &err));
  EXPECT_NE(err.message.find("symbolic link"), std::string::npos) << err.message;
  EXPECT_EQ(ctest::list(victim).size(), 1u);
  ctest::remove_tree(dir);
  ctest::remove_tree(victim);
}

TEST(HostileDir, ATmpLinkIsNotFollowed) {
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-t");
  record_and_die(dir);
  const std::string s = only_session(dir);
  ASSERT_FALSE(s.empty());
  const std::string victim = ctest::make_temp_dir("/tmp", "victim-t");
  touch(victim + "/" + s + "-precious");
  ASSERT_EQ(rmdir((dir + "/tmp").c_str()), 0);
  plant_link(victim, dir + "/tmp");
  // With the private-name publish path (no O_TMPFILE) too: nothing is
  // written through the link either.
  setenv("RBTRACE_PUBLISH", "private", 1);
  rbtrace::RecoverResult r;
  std::string e;
  (void)rbtrace::recover_spool(dir, &r, &e);  // unnamed file in DIR, or fails: either way
  unsetenv("RBTRACE_PUBLISH");
  EXPECT_TRUE(exists(victim + "/" + s + "-precious")) << "recover deleted through tmp/";
  EXPECT_EQ(ctest::list(victim).size(), 1u) << "recover wrote through tmp/";
  ctest::remove_tree(dir);
  ctest::remove_tree(victim);
}

// In a sticky directory another user can create the public name of our
// unpublished segment first: recover does not take that file for ours
// (and drop the spool as "already published"), it publishes beside it.
TEST(HostileDir, APlantedPublicNameDoesNotDropTheSpool) {
  if (geteuid() != 0) GTEST_FAIL() << "needs root (to plant a file as another uid)";
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-p");
  ASSERT_EQ(chmod(dir.c_str(), 01777), 0);
  record_and_die(dir);
  const std::string s = only_session(dir);
  ASSERT_FALSE(s.empty());
  const std::string name = dir + "/trace-" + s + "-000001.dat";
  touch(name, "not a trace");
  ASSERT_EQ(chown(name.c_str(), kNobody, kNobody), 0);
  rbtrace::RecoverResult r;
  std::string e;
  ASSERT_EQ(rbtrace::recover_spool(dir, &r, &e), 0) << e;
  ASSERT_EQ(r.published.size(), 1u) << "the spool was dropped as already published";
  EXPECT_EQ(r.published[0], name + ".1");
  ctest::Trace t;
  EXPECT_EQ(ctest::walk_trace(r.published[0], &t), "");
  EXPECT_GT(t.cpus.empty() ? 0 : t.cpus[0].nevents, 0u);
  ctest::remove_tree(dir);
}

TEST(HostileDir, ASpoolFileLinkIsNotRead) {
  const std::string dir = ctest::make_temp_dir("/tmp", "hostile-f");
  const std::string secret_dir = ctest::make_temp_dir("/tmp", "secret");
  record_and_die(dir);
  const std::string s = only_session(dir);
  ASSERT_FALSE(s.empty());
  // The segment's one file (spool version 2: every CPU's pages in it).
  const std::string dat = dir + "/spool/" + s + "/000001.dat";
  ASSERT_TRUE(exists(dat));
  // The pages become "root's secret"; the spool file a link to them.
  ASSERT_EQ(rename(dat.c_str(), (secret_dir + "/secret").c_str()), 0);
  plant_link(secret_dir + "/secret", dat);
  rbtrace::RecoverResult r;
  std::string e;
  EXPECT_EQ(rbtrace::recover_spool(dir, &r, &e), -ELOOP);
  EXPECT_NE(e.find("symbolic link"), std::string::npos) << e;
  EXPECT_TRUE(r.published.empty()) << "the secret was published";
  EXPECT_TRUE(ctest::traces(dir).empty());
  ctest::remove_tree(dir);
  ctest::remove_tree(secret_dir);
}
