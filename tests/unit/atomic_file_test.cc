// rbtrace/atomic_file.h: a file is named only once published, through
// O_TMPFILE or a private name; an existing name is never replaced; an
// abandoned file leaves nothing behind.
#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "rbtrace_test/test_files.h"
#include "rbtrace/atomic_file.h"

using rbtrace::AtomicFile;
using rbtrace::AtomicHow;
using rbtrace_test::read_file;

namespace {

// The names in `dir`, sorted, without . and ..
std::string names_in(const std::string& dir) {
  std::string out;
  DIR* d = opendir(dir.c_str());
  if (!d) return "(none)";
  std::vector<std::string> v;
  while (dirent* e = readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) v.push_back(e->d_name);
  closedir(d);
  std::sort(v.begin(), v.end());
  for (const std::string& n : v) out += n + " ";
  return out;
}

void write_text(const AtomicFile& f, const std::string& s) {
  ASSERT_EQ(write(f.fd(), s.data(), s.size()), static_cast<ssize_t>(s.size()));
}

class AtomicFileTest : public ::testing::TestWithParam<AtomicHow> {
 protected:
  void TearDown() override { rmdir((dir.path + "/tmp").c_str()); }
  rbtrace_test::TempDir dir;
};

TEST_P(AtomicFileTest, NamedOnlyWhenPublishedAndNeverReplacing) {
  const std::string priv = dir.path + "/tmp/seg";
  std::string err;
  AtomicFile f;
  ASSERT_EQ(f.open(dir.path, priv, GetParam(), &err), 0) << err;
  write_text(f, "first");
  if (GetParam() == AtomicHow::kPrivate) {
    EXPECT_EQ(names_in(dir.path), "tmp ");  // created for the private name
    struct stat st;
    ASSERT_EQ(stat((dir.path + "/tmp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    EXPECT_EQ(names_in(dir.path + "/tmp").rfind("seg." + std::to_string(getpid()) + ".", 0), 0u);
  } else {
    EXPECT_EQ(names_in(dir.path), "");
  }
  ASSERT_EQ(f.publish(dir.path + "/a.dat", true, &err), 0) << err;
  EXPECT_EQ(f.fd(), -1);
  EXPECT_EQ(read_file(dir.path + "/a.dat"), "first");
  EXPECT_EQ(names_in(dir.path + "/tmp"), GetParam() == AtomicHow::kPrivate ? "" : "(none)");

  // A taken name: -EEXIST, nothing replaced, the file kept for another name.
  AtomicFile g;
  ASSERT_EQ(g.open(dir.path, priv, GetParam(), &err), 0) << err;
  write_text(g, "second");
  EXPECT_EQ(g.publish(dir.path + "/a.dat", false, &err), -EEXIST);
  EXPECT_EQ(err, dir.path + "/a.dat: exists (never replaced)");
  EXPECT_EQ(read_file(dir.path + "/a.dat"), "first");
  ASSERT_EQ(g.publish(dir.path + "/a.dat.1", false, &err), 0) << err;
  EXPECT_EQ(read_file(dir.path + "/a.dat.1"), "second");
  EXPECT_EQ(AtomicFile::refuse_existing(dir.path + "/a.dat.1", &err), -EEXIST);
  EXPECT_EQ(AtomicFile::refuse_existing(dir.path + "/a.dat.2", &err), 0);
}

TEST_P(AtomicFileTest, AbandonedLeavesNothing) {
  std::string err;
  {
    AtomicFile f;
    ASSERT_EQ(f.open_for(dir.path + "/out.json", GetParam(), &err), 0) << err;
    write_text(f, "partial");
  }  // destroyed unpublished
  EXPECT_EQ(names_in(dir.path), "");
}

INSTANTIATE_TEST_SUITE_P(How, AtomicFileTest,
                         ::testing::Values(AtomicHow::kTmpFile, AtomicHow::kPrivate),
                         [](const auto& i) {
                           return i.param == AtomicHow::kTmpFile ? "tmpfile" : "private";
                         });

// Only a missing O_TMPFILE falls back to a private name: a missing
// directory is an error, and nothing is created.
TEST(AtomicFile, MissingDirectoryIsAnError) {
  rbtrace_test::TempDir dir;
  std::string err;
  AtomicFile f;
  EXPECT_EQ(f.open_for(dir.path + "/nodir/out.json", AtomicHow::kAuto, &err), -ENOENT);
  EXPECT_NE(err.find("No such file"), std::string::npos) << err;
  EXPECT_EQ(names_in(dir.path), "");
}

TEST(AtomicFile, ADanglingSymlinkIsAnExistingName) {
  rbtrace_test::TempDir dir;
  const std::string link = dir.path + "/l";
  ASSERT_EQ(symlink("/nonexistent/target", link.c_str()), 0);
  std::string err;
  EXPECT_EQ(AtomicFile::refuse_existing(link, &err), -EEXIST);
  AtomicFile f;
  ASSERT_EQ(f.open_for(link, AtomicHow::kAuto, &err), 0) << err;
  EXPECT_EQ(f.publish(link, false, &err), -EEXIST);
  EXPECT_EQ(access("/nonexistent/target", F_OK), -1);
}

TEST(AtomicFile, HowFromTheEnvironment) {
  setenv("RBTRACE_PUBLISH", "private", 1);
  EXPECT_EQ(rbtrace::atomic_how_from_env(AtomicHow::kAuto), AtomicHow::kPrivate);
  setenv("RBTRACE_PUBLISH", "tmpfile", 1);
  EXPECT_EQ(rbtrace::atomic_how_from_env(AtomicHow::kAuto), AtomicHow::kTmpFile);
  setenv("RBTRACE_PUBLISH", "other", 1);
  EXPECT_EQ(rbtrace::atomic_how_from_env(AtomicHow::kPrivate), AtomicHow::kPrivate);
  unsetenv("RBTRACE_PUBLISH");
  EXPECT_EQ(rbtrace::atomic_how_from_env(AtomicHow::kAuto), AtomicHow::kAuto);
}

}  // namespace
