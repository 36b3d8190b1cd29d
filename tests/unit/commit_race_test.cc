// W6 interleavings, forced deterministically through the writer's hook
// points: a "handler" (a direct call from the hook, or a real signal raised
// at it) writes while the outermost writer is inside its commit.
//
// The kernel's commit loop exists for one of these: an interrupt that
// reserves after the outer writer moved the commit but before it left
// leaves its event uncommitted unless the outer writer looks again
// (rb_end_commit's `commits` re-check). rbtrace's fast W6 stores the
// commit and then leaves with a local cmpxchg on (commits, committing);
// these tests fail if that cmpxchg were a plain decrement (the handler's
// event would stay invisible to readers until the next write), and if the
// busy state dropped before the writer left (a swap would be allowed).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace_test/drain_tags.h"

using namespace rbtrace;

namespace {

enum class Action { kWrite, kSwap };

struct CommitHooks {
  static inline HookPoint when = HookPoint::kW6Leave;
  static inline bool armed = false;
  static inline bool via_signal = false;
  static inline Action action = Action::kWrite;
  static inline int handler_writes = 1;
  static inline uint32_t next_tag = 0;
  static inline int fired = 0;
  static inline int swap_result = 1;
  static inline uint32_t handler_level = 0;
  static inline RingBuffer* live = nullptr;
  static inline RingBuffer* spare = nullptr;
  static inline uint32_t cpu = 0;

  static void at(HookPoint p, RingBuffer& rb, uint32_t c) {
    if (!armed || p != when) return;
    armed = false;
    fired++;
    live = &rb;
    cpu = c;
    if (via_signal) {
      pthread_kill(pthread_self(), SIGUSR2);  // the handler runs before return
    } else {
      act();
    }
  }
  static void act() {
    if (action == Action::kSwap) {
      swap_result = live->swap_cpu(*spare, cpu);
      return;
    }
    for (int i = 0; i < handler_writes; i++) {
      // The default policy: a handler's own writes are not hooked.
      Reservation r = live->reserve(16);
      if (!r) return;
      handler_level = r.level;
      std::memset(r.data, 0, 16);
      const uint32_t tag = next_tag++;
      std::memcpy(r.data, &tag, sizeof tag);
      live->commit(r);
    }
  }
  static void handler(int) { act(); }
};

Options small() {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 8;
  o.mode = Mode::kProducerConsumer;  // nothing is overwritten: every tag must come back
  return o;
}

std::vector<uint32_t> drain(RingBuffer& rb, uint32_t cpu) { return test::drain_tags(rb, cpu); }

// (hook point, via a real signal)
class CommitRace : public ::testing::TestWithParam<std::tuple<HookPoint, bool>> {
 protected:
  void SetUp() override {
    live_ = RingBuffer::create(small());
    spare_ = RingBuffer::create(small());
    ASSERT_TRUE(live_ && spare_);
    ASSERT_EQ(live_->bind_thread(1), 0);
    CommitHooks::when = std::get<0>(GetParam());
    CommitHooks::via_signal = std::get<1>(GetParam());
    CommitHooks::armed = false;
    CommitHooks::fired = 0;
    CommitHooks::swap_result = 1;
    CommitHooks::handler_level = 0;
    CommitHooks::spare = spare_.get();
    CommitHooks::action = Action::kWrite;
    CommitHooks::handler_writes = 1;
    struct sigaction sa {};
    sa.sa_handler = &CommitHooks::handler;
    ASSERT_EQ(sigaction(SIGUSR2, &sa, &old_), 0);
  }
  void TearDown() override {
    sigaction(SIGUSR2, &old_, nullptr);
    live_->unbind_thread();
  }
  // One hooked write of `tag`. The hooks only fire on the fast path's W6
  // points when the reservation was a fast one: after a first event on the
  // page (which takes the slow path), every outermost 16-byte write is.
  void outer_write(uint32_t tag) {
    Reservation r = live_->reserve<CommitHooks>(16);
    ASSERT_TRUE(r) << r.err;
    std::memset(r.data, 0, 16);
    std::memcpy(r.data, &tag, sizeof tag);
    live_->commit<CommitHooks>(r);
  }
  // Everything reserved is committed, and nobody is in flight.
  void expect_all_committed() {
    detail::CpuBuffer* cb = live_->cpu_buffer(1);
    EXPECT_EQ(cb->committing(), 0u);
    detail::BufferPage* tp = cb->tail_page.load();
    EXPECT_EQ(cb->commit_page.load(), tp);
    EXPECT_EQ(std::atomic_ref<uint64_t>(tp->page->commit).load(),
              static_cast<uint32_t>(tp->write.load()));
  }
  std::unique_ptr<RingBuffer> live_, spare_;
  struct sigaction old_ {};
};

}  // namespace

// A handler's event written in the middle of the outer writer's commit is
// committed when the outer writer leaves: readers see it at once, in order.
TEST_P(CommitRace, HandlerEventIsCommittedWhenTheOuterWriterLeaves) {
  outer_write(1);  // the page's first event (slow path); the hooks are not armed
  outer_write(2);
  CommitHooks::next_tag = 100;
  CommitHooks::armed = true;
  outer_write(3);
  ASSERT_EQ(CommitHooks::fired, 1) << "the hook point was not reached";
  EXPECT_EQ(CommitHooks::handler_level, 1u) << "the handler did not nest";
  expect_all_committed();
  EXPECT_EQ(drain(*live_, 1), std::vector<uint32_t>({1, 2, 3, 100}));
  const CpuStats s = live_->stats(1);
  EXPECT_EQ(s.entries, 4u);
  EXPECT_EQ(s.read, 4u);
}

// The same with a handler that writes enough to move the tail across two
// pages: the outer writer's commit page is left behind, the general loop
// must walk it forward.
TEST_P(CommitRace, HandlerThatCrossesPagesIsCommitted) {
  outer_write(1);
  outer_write(2);
  CommitHooks::next_tag = 1000;
  CommitHooks::handler_writes = 400;  // 400 x 24 bytes: three pages
  CommitHooks::armed = true;
  detail::BufferPage* before = live_->cpu_buffer(1)->tail_page.load();
  outer_write(3);
  ASSERT_EQ(CommitHooks::fired, 1);
  EXPECT_NE(live_->cpu_buffer(1)->tail_page.load(), before);
  expect_all_committed();
  std::vector<uint32_t> want = {1, 2, 3};
  for (uint32_t t = 1000; t < 1400; t++) want.push_back(t);
  EXPECT_EQ(drain(*live_, 1), want);
}

// Inside W6 the CPU is busy: a swap is refused and the event stays whole.
TEST_P(CommitRace, SwapInsideCommitIsBusy) {
  outer_write(1);
  outer_write(2);
  CommitHooks::action = Action::kSwap;
  CommitHooks::armed = true;
  outer_write(3);
  ASSERT_EQ(CommitHooks::fired, 1);
  EXPECT_EQ(CommitHooks::swap_result, -EBUSY);
  expect_all_committed();
  EXPECT_EQ(drain(*live_, 1), std::vector<uint32_t>({1, 2, 3}));
  EXPECT_TRUE(drain(*spare_, 1).empty());
  // Once the writer has left, the same swap goes through.
  EXPECT_EQ(live_->swap_cpu(*spare_, 1), 0);
}

INSTANTIATE_TEST_SUITE_P(
    W6, CommitRace,
    ::testing::Combine(::testing::Values(HookPoint::kBeforeCommit, HookPoint::kW6Fast,
                                         HookPoint::kW6Leave),
                       ::testing::Bool()),
    [](const auto& p) {
      const char* hp = std::get<0>(p.param) == HookPoint::kBeforeCommit ? "BeforeCommit"
                       : std::get<0>(p.param) == HookPoint::kW6Fast     ? "W6Fast"
                                                                           : "W6Leave";
      return std::string(hp) + (std::get<1>(p.param) ? "_Signal" : "_Direct");
    });
