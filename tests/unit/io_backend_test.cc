// consumer/src/io_backend.h: what the drain thread relies on, for both
// backends (io_uring with and without IOSQE_ASYNC, pwritev): every page
// queued completes exactly once, with its own tag and result, also when
// pages are written by one request; only pages of one file at consecutive
// offsets, queued one after the other, share a request; a lone registered
// page is a fixed write; a short write (RLIMIT_FSIZE) is reported per page
// (io_uring: pages fully written get their length, the page cut short the
// bytes it got, the pages after it 0; an error goes to every page of the
// request; pwritev resumes a short write and reports the error of the
// resumed part to the pages not written).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <ostream>
#include <memory>
#include <string>
#include <vector>

#include "io_backend.h"

using rbtrace::detail::IoBackend;
using rbtrace::detail::IoBackendOptions;
using rbtrace::detail::IoCompletion;
using rbtrace::detail::IoKind;
using rbtrace::detail::make_io_backend;

namespace {

constexpr uint32_t kPage = 4096;
constexpr uint32_t kPages = 16;

struct Param {
  const char* name;
  IoKind kind;
  bool async;
};
void PrintTo(const Param& p, std::ostream* os) { *os << p.name; }

class IoBackendTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/rbtrace-io-backend-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr) << std::strerror(errno);
    dir_ = templ;
    void* m = mmap(nullptr, size_t{kPage} * kPages, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    mem_ = static_cast<unsigned char*>(m);
    for (uint32_t i = 0; i < kPages; i++) std::memset(page(i), 'a' + static_cast<int>(i), kPage);
    IoBackendOptions o;
    o.depth = 64;
    o.async = GetParam().async;
    std::string why;
    io_ = make_io_backend(GetParam().kind, o, &why);
    ASSERT_TRUE(io_);
    // Where io_uring cannot be set up (qemu-user has no io_uring: the
    // arm64 run), the backend is the pwritev fallback, with the reason: the
    // tests then check that fallback, each by the backend it got
    // (io_->kind()); on this machine's native runs it is io_uring.
    if (io_->kind() != GetParam().kind) {
      ASSERT_EQ(io_->kind(), IoKind::kPwritev);
      ASSERT_NE(why, "") << "a fallback says why";
    }
  }
  void TearDown() override {
    io_.reset();
    for (int fd : fds_) close(fd);
    if (mem_) munmap(mem_, size_t{kPage} * kPages);
    if (!dir_.empty()) {
      for (int i = 0; i < static_cast<int>(fds_.size()); i++)
        unlink((dir_ + "/f" + std::to_string(i)).c_str());
      rmdir(dir_.c_str());
    }
  }

  unsigned char* page(uint32_t i) { return mem_ + size_t{i} * kPage; }
  int new_file() {
    const std::string p = dir_ + "/f" + std::to_string(fds_.size());
    const int fd = open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << p << ": " << std::strerror(errno);
    fds_.push_back(fd);
    return fd;
  }
  // Page i of mem_ to fd at page slot `slot`; tag = i.
  void queue(int fd, uint32_t i, uint64_t slot) {
    io_->prep_write(fd, page(i), kPage, slot * kPage, i);
  }
  // Submits, then reaps until nothing is in flight. Fails a test on a
  // duplicate tag. Returns tag -> res.
  std::map<uint64_t, int64_t> run() {
    EXPECT_EQ(io_->submit(), 0);
    std::map<uint64_t, int64_t> got;
    for (int rounds = 0; io_->in_flight() > 0 && rounds < 1000; rounds++) {
      std::vector<IoCompletion> out;
      io_->reap(&out, 1000 * 1000 * 1000);
      for (const IoCompletion& c : out) {
        EXPECT_TRUE(got.emplace(c.tag, c.res).second) << "tag " << c.tag << " completed twice";
      }
    }
    EXPECT_EQ(io_->in_flight(), 0u);
    return got;
  }
  // The file holds page i at slot.
  void expect_page_at(int fd, uint32_t i, uint64_t slot) {
    std::vector<unsigned char> b(kPage);
    ASSERT_EQ(pread(fd, b.data(), kPage, static_cast<off_t>(slot * kPage)),
              static_cast<ssize_t>(kPage));
    EXPECT_EQ(std::memcmp(b.data(), page(i), kPage), 0) << "page " << i << " at slot " << slot;
  }

  std::string dir_;
  unsigned char* mem_ = nullptr;
  std::vector<int> fds_;
  std::unique_ptr<IoBackend> io_;
};

// Four consecutive pages of one file: one request, four completions.
TEST_P(IoBackendTest, ConsecutivePagesShareOneRequest) {
  const int fd = new_file();
  for (uint32_t i = 0; i < 4; i++) queue(fd, i, i);
  EXPECT_EQ(io_->in_flight(), 4u);
  const auto got = run();
  ASSERT_EQ(got.size(), 4u);
  for (uint32_t i = 0; i < 4; i++) {
    EXPECT_EQ(got.at(i), kPage) << "page " << i;
    expect_page_at(fd, i, i);
  }
  EXPECT_EQ(io_->requests(), 1u);
}

// A0 B0 A1 B1 A2 B2: consecutive offsets per file but interleaved in the
// queue: no two pages share a request; every page lands at its offset.
TEST_P(IoBackendTest, InterleavedFilesAreNotMerged) {
  const int a = new_file();
  const int b = new_file();
  for (uint32_t k = 0; k < 3; k++) {
    queue(a, 2 * k, k);
    queue(b, 2 * k + 1, k);
  }
  const auto got = run();
  ASSERT_EQ(got.size(), 6u);
  for (uint32_t k = 0; k < 3; k++) {
    EXPECT_EQ(got.at(2 * k), kPage);
    EXPECT_EQ(got.at(2 * k + 1), kPage);
    expect_page_at(a, 2 * k, k);
    expect_page_at(b, 2 * k + 1, k);
  }
  EXPECT_EQ(io_->requests(), 6u);
}

// A run per file, the two runs one after the other: two requests.
TEST_P(IoBackendTest, RunsOfTwoFiles) {
  const int a = new_file();
  const int b = new_file();
  for (uint32_t k = 0; k < 4; k++) queue(a, k, k);
  for (uint32_t k = 0; k < 4; k++) queue(b, 4 + k, k);
  const auto got = run();
  ASSERT_EQ(got.size(), 8u);
  for (uint32_t i = 0; i < 8; i++) EXPECT_EQ(got.at(i), kPage) << "page " << i;
  for (uint32_t k = 0; k < 4; k++) {
    expect_page_at(a, k, k);
    expect_page_at(b, 4 + k, k);
  }
  EXPECT_EQ(io_->requests(), 2u);
}

// Slots 0, 1, 3, 4, 2 of one file: runs {0,1}, {3,4}, {2}.
TEST_P(IoBackendTest, GapsAndBackwardsOffsetsSplitRuns) {
  const int fd = new_file();
  const uint64_t slots[] = {0, 1, 3, 4, 2};
  for (uint32_t i = 0; i < 5; i++) queue(fd, i, slots[i]);
  const auto got = run();
  ASSERT_EQ(got.size(), 5u);
  for (uint32_t i = 0; i < 5; i++) {
    EXPECT_EQ(got.at(i), kPage);
    expect_page_at(fd, i, slots[i]);
  }
  EXPECT_EQ(io_->requests(), 3u);
}

// Many batches through one backend: tags come back exactly once each.
TEST_P(IoBackendTest, ManyBatches) {
  const int a = new_file();
  const int b = new_file();
  std::map<uint64_t, int64_t> all;
  for (uint32_t batch = 0; batch < 8; batch++) {
    for (uint32_t k = 0; k < 8; k++) {
      const uint32_t i = k;  // buffer; the tag is unique per batch below
      io_->prep_write(k < 4 ? a : b, page(i), kPage, (batch * 4 + k % 4) * uint64_t{kPage},
                      batch * 100 + k);
    }
    for (const auto& [tag, res] : run()) {
      EXPECT_TRUE(all.emplace(tag, res).second);
      EXPECT_EQ(res, kPage) << "tag " << tag;
    }
  }
  EXPECT_EQ(all.size(), 64u);
  EXPECT_EQ(io_->requests(), 16u);
  for (uint32_t batch = 0; batch < 8; batch++) {
    for (uint32_t k = 0; k < 4; k++) {
      expect_page_at(a, k, batch * 4 + k);
      expect_page_at(b, 4 + k, batch * 4 + k);
    }
  }
}

// io_uring's max_run: 5 consecutive pages with at most 2 per request are
// 3 requests, and the pages still complete once each, in place.
TEST_P(IoBackendTest, MaxRunSplitsRuns) {
  if (io_->kind() != IoKind::kIoUring) {
    // pwritev has no max_run: the 5 pages are one request.
    const int fd = new_file();
    for (uint32_t i = 0; i < 5; i++) queue(fd, i, i);
    EXPECT_EQ(run().size(), 5u);
    EXPECT_EQ(io_->requests(), 1u);
    return;
  }
  IoBackendOptions o;
  o.async = GetParam().async;
  o.max_run = 2;
  std::string why;
  io_ = make_io_backend(IoKind::kIoUring, o, &why);
  ASSERT_EQ(io_->kind(), IoKind::kIoUring) << why;  // it was io_uring in SetUp
  const int fd = new_file();
  for (uint32_t i = 0; i < 5; i++) queue(fd, i, i);
  const auto got = run();
  ASSERT_EQ(got.size(), 5u);
  for (uint32_t i = 0; i < 5; i++) {
    EXPECT_EQ(got.at(i), kPage);
    expect_page_at(fd, i, i);
  }
  EXPECT_EQ(io_->requests(), 3u);
}

// Registered pages: a lone page is a fixed write, pages of a run are not;
// after disable_fixed nothing is.
TEST_P(IoBackendTest, FixedWrites) {
  std::vector<void*> bufs;
  for (uint32_t i = 0; i < kPages; i++) bufs.push_back(page(i));
  std::string why;
  const uint32_t reg = io_->register_buffers(bufs, kPage, &why);
  if (io_->kind() == IoKind::kPwritev) {
    EXPECT_EQ(reg, 0u);
  } else {
    ASSERT_EQ(reg, kPages) << "buffers not registered: " << why;
  }
  const int a = new_file();
  const int b = new_file();
  queue(a, 0, 0);  // lone
  queue(b, 1, 0);  // lone
  queue(a, 2, 1);  // a run of two
  queue(a, 3, 2);
  auto got = run();
  ASSERT_EQ(got.size(), 4u);
  for (uint32_t i = 0; i < 4; i++) EXPECT_EQ(got.at(i), kPage);
  EXPECT_EQ(io_->fixed_writes(), reg ? 2u : 0u);
  io_->disable_fixed();
  queue(b, 4, 1);
  got = run();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.at(4), kPage);
  EXPECT_EQ(io_->fixed_writes(), reg ? 2u : 0u);
  expect_page_at(a, 0, 0);
  expect_page_at(b, 1, 0);
  expect_page_at(a, 2, 1);
  expect_page_at(a, 3, 2);
  expect_page_at(b, 4, 1);
}

// RLIMIT_FSIZE (SIGXFSZ ignored) for the test's span; restored after.
class FsizeLimit {
 public:
  explicit FsizeLimit(uint64_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old_);
    old_sig_ = signal(SIGXFSZ, SIG_IGN);
    rlimit r = old_;
    r.rlim_cur = bytes;
    ok_ = setrlimit(RLIMIT_FSIZE, &r) == 0;
  }
  ~FsizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    signal(SIGXFSZ, old_sig_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  sighandler_t old_sig_ = SIG_DFL;
  bool ok_ = false;
};

// A run of four pages against a limit of 2.5 pages.
TEST_P(IoBackendTest, ShortRunReportsPerPage) {
  const int fd = new_file();
  for (uint32_t i = 0; i < 4; i++) queue(fd, i, i);
  std::map<uint64_t, int64_t> got;
  {
    FsizeLimit lim(kPage * 5 / 2);
    ASSERT_TRUE(lim.ok());
    got = run();
  }
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got.at(0), kPage);
  EXPECT_EQ(got.at(1), kPage);
  if (io_->kind() == IoKind::kIoUring) {
    // One WRITEV wrote 2.5 pages: the page cut short gets its half, the
    // page after it 0 (the drain thread finishes both with pwrite and
    // learns the error there).
    EXPECT_EQ(got.at(2), kPage / 2);
    EXPECT_EQ(got.at(3), 0);
  } else {
    // pwritev resumed at 2.5 pages and got EFBIG for the rest.
    EXPECT_EQ(got.at(2), -EFBIG);
    EXPECT_EQ(got.at(3), -EFBIG);
  }
  expect_page_at(fd, 0, 0);
  expect_page_at(fd, 1, 1);
}

// Requests that start at or past the limit: every page gets the error,
// lone pages and runs alike; a page before it in another file is fine.
TEST_P(IoBackendTest, FailedRequestsFailEveryPage) {
  const int a = new_file();
  const int b = new_file();
  queue(b, 0, 0);  // lone, below the limit
  queue(a, 1, 3);  // a run of three at slots 3..5
  queue(a, 2, 4);
  queue(a, 3, 5);
  queue(b, 4, 7);  // lone, past the limit
  std::map<uint64_t, int64_t> got;
  {
    FsizeLimit lim(kPage * 2);
    ASSERT_TRUE(lim.ok());
    got = run();
  }
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got.at(0), kPage);
  for (uint64_t t = 1; t <= 4; t++) EXPECT_EQ(got.at(t), -EFBIG) << "tag " << t;
  expect_page_at(b, 0, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, IoBackendTest,
                         ::testing::Values(Param{"io_uring_async", IoKind::kIoUring, true},
                                           Param{"io_uring_inline", IoKind::kIoUring, false},
                                           Param{"pwritev", IoKind::kPwritev, false}),
                         [](const ::testing::TestParamInfo<Param>& p) {
                           return std::string(p.param.name);
                         });

}  // namespace
