// The swap races the kernel got wrong, forced deterministically through the
// writer's hook points (HookPoint, the Hooks template policy of reserve).
//
//  - 2014, LKML "ring-buffer: Race when writing and swapping cpu buffer in
//    parallel": a swap between W1 and W2 made the write land in the buffer
//    that had just become the spare. Here W3 must make the write fail.
//  - CVE-2026-74601: the busy state a swap inspects dropped during the
//    page-crossing retry, so a swap could take a buffer mid-write. Here the
//    busy state (nesting) covers W2..W6 with every retry: the swap is -EBUSY
//    and the event stays whole in its own buffer.
//
// The swap runs where a snapshot's doorbell handler would: on the owner
// thread, at the hooked instruction; once called directly from the hook,
// once from a real signal handler raised at the hook.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace_test/drain_tags.h"

using namespace rbtrace;

namespace {

struct SwapHooks {
  static inline HookPoint when = HookPoint::kAfterW1;
  static inline RingBuffer* spare = nullptr;
  static inline int result = 1;
  static inline int fired = 0;
  static inline bool armed = false;
  static inline bool via_signal = false;
  static inline RingBuffer* live = nullptr;
  static inline uint32_t cpu = 0;

  static void at(HookPoint p, RingBuffer& rb, uint32_t c) {
    if (!armed || p != when) return;
    armed = false;
    fired++;
    live = &rb;
    cpu = c;
    if (via_signal) {
      pthread_kill(pthread_self(), SIGUSR2);  // handler runs before return
    } else {
      result = rb.swap_cpu(*spare, c);
    }
  }
  static void handler(int) { result = live->swap_cpu(*spare, cpu); }
};

Options small() {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  return o;
}

std::vector<uint32_t> drain(RingBuffer& rb, uint32_t cpu) { return test::drain_tags(rb, cpu); }

class SwapRace : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    live_ = RingBuffer::create(small());
    spare_ = RingBuffer::create(small());
    ASSERT_TRUE(live_ && spare_);
    ASSERT_EQ(live_->bind_thread(1), 0);
    SwapHooks::spare = spare_.get();
    SwapHooks::result = 1;
    SwapHooks::fired = 0;
    SwapHooks::armed = false;
    SwapHooks::via_signal = GetParam();
    struct sigaction sa {};
    sa.sa_handler = &SwapHooks::handler;
    sigfillset(&sa.sa_mask);  // as the snapshot doorbell: nothing nests in it
    ASSERT_EQ(sigaction(SIGUSR2, &sa, &old_), 0);
  }
  void TearDown() override {
    sigaction(SIGUSR2, &old_, nullptr);
    live_->unbind_thread();
  }
  int write_tag(uint32_t tag, uint32_t len = 16) {
    Reservation r = live_->reserve<SwapHooks>(len);
    if (!r) return r.err;
    std::memset(r.data, 0, len);
    std::memcpy(r.data, &tag, sizeof tag);
    live_->commit<SwapHooks>(r);
    return 0;
  }
  std::unique_ptr<RingBuffer> live_, spare_;
  struct sigaction old_ {};
};

// 2014: a swap between W1 and W2 must make the write fail, not land in the
// buffer that just became the spare.
TEST_P(SwapRace, SwapBetweenW1AndW2FailsTheWrite) {
  ASSERT_EQ(write_tag(1), 0);  // lands in the original buffer
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  SwapHooks::when = HookPoint::kAfterW1;
  SwapHooks::armed = true;
  EXPECT_EQ(write_tag(2), -EAGAIN);  // W3 caught the swap
  EXPECT_EQ(SwapHooks::fired, 1);
  EXPECT_EQ(SwapHooks::result, 0);  // the swap itself succeeded
  // The original buffer is now the spare's; it holds event 1 only.
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  EXPECT_EQ(original->buffer.load(), spare_.get());
  EXPECT_EQ(spare_->stats(1).entries, 1u);
  // The refusal is counted once, in the buffer now in the live slot (the
  // swapped-out one belongs to the requester).
  EXPECT_EQ(spare_->stats(1).disabled, 0u);
  EXPECT_EQ(live_->stats(1).disabled, 1u);
  EXPECT_EQ(live_->stats(1).entries, 0u);
  EXPECT_EQ(drain(*spare_, 1), std::vector<uint32_t>({1}));
  EXPECT_TRUE(drain(*live_, 1).empty());
  // The next write goes to the new live buffer.
  ASSERT_EQ(write_tag(3), 0);
  EXPECT_EQ(drain(*live_, 1), std::vector<uint32_t>({3}));
}

// After W3 the buffer is busy: a swap must be refused, the write completes.
TEST_P(SwapRace, SwapAfterW3IsBusy) {
  SwapHooks::when = HookPoint::kAfterW3;
  SwapHooks::armed = true;
  ASSERT_EQ(write_tag(7), 0);
  EXPECT_EQ(SwapHooks::result, -EBUSY);
  EXPECT_EQ(drain(*live_, 1), std::vector<uint32_t>({7}));
  EXPECT_TRUE(drain(*spare_, 1).empty());
}

// Fills the tail page so that the next `len`-byte write crosses a page.
void fill_to_page_end(RingBuffer& rb, uint32_t cpu, uint32_t len, uint32_t* tag) {
  detail::CpuBuffer* cb = rb.cpu_buffer(cpu);
  detail::BufferPage* tp = cb->tail_page.load();
  while (cb->tail_page.load() == tp) {
    const uint32_t idx = static_cast<uint32_t>(tp->write.load());
    if (idx + data_event_size(len) > cb->capacity) return;
    (*tag)++;
    unsigned char buf[16] = {};
    std::memcpy(buf, tag, sizeof *tag);
    ASSERT_EQ(rb.write(buf, sizeof buf), 0);
  }
}

// CVE-2026-74601: a swap while the writer is inside W5 (page crossing) or
// about to retry must see the buffer busy; the event stays whole in its
// own buffer and nothing lands in the other one.
TEST_P(SwapRace, SwapDuringPageCrossingIsBusy) {
  for (HookPoint hp : {HookPoint::kInW5, HookPoint::kW5Retry, HookPoint::kBeforeCommit}) {
    uint32_t tag = 100 * (static_cast<uint32_t>(hp) + 1);
    const uint32_t first = tag + 1;
    fill_to_page_end(*live_, 1, 64, &tag);
    detail::CpuBuffer* cb = live_->cpu_buffer(1);
    detail::BufferPage* before = cb->tail_page.load();
    SwapHooks::when = hp;
    SwapHooks::armed = true;
    SwapHooks::result = 1;
    const uint32_t crossing = tag + 1;
    ASSERT_EQ(write_tag(crossing, 64), 0);
    EXPECT_EQ(SwapHooks::fired > 0, true);
    if (hp != HookPoint::kBeforeCommit) {
      EXPECT_NE(cb->tail_page.load(), before) << "the write did not cross a page";
    }
    EXPECT_EQ(SwapHooks::result, -EBUSY) << "hook point " << static_cast<int>(hp);
    EXPECT_EQ(live_->cpu_buffer(1), cb);
    std::vector<uint32_t> got = drain(*live_, 1);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.front(), first);
    EXPECT_EQ(got.back(), crossing);
    for (size_t i = 1; i < got.size(); i++) EXPECT_EQ(got[i], got[i - 1] + 1);
    EXPECT_TRUE(drain(*spare_, 1).empty());
    SwapHooks::fired = 0;
  }
}

// A swap once the write is committed (nesting back to 0) succeeds, and the
// event is in exactly one buffer: the swapped-out one.
TEST_P(SwapRace, SwapAfterCommitTakesTheWholeEvent) {
  ASSERT_EQ(write_tag(42), 0);
  if (GetParam()) {
    SwapHooks::live = live_.get();
    SwapHooks::cpu = 1;
    pthread_kill(pthread_self(), SIGUSR2);
  } else {
    SwapHooks::result = live_->swap_cpu(*spare_, 1);
  }
  EXPECT_EQ(SwapHooks::result, 0);
  EXPECT_EQ(drain(*spare_, 1), std::vector<uint32_t>({42}));
  EXPECT_TRUE(drain(*live_, 1).empty());
}

// S2 order: -EINVAL before -EAGAIN; a record-disabled buffer is -EAGAIN.
TEST_P(SwapRace, ChecksInKernelOrder) {
  EXPECT_EQ(live_->swap_cpu(*spare_, 2), -EINVAL);
  live_->record_disable_cpu(1);
  EXPECT_EQ(live_->swap_cpu(*spare_, 1), -EAGAIN);
  live_->record_enable_cpu(1);
  spare_->record_off();
  EXPECT_EQ(live_->swap_cpu(*spare_, 1), -EAGAIN);
  spare_->record_on();
  Options o = small();
  o.pages_per_cpu = 8;
  auto other = RingBuffer::create(o);
  spare_->record_off();
  EXPECT_EQ(live_->swap_cpu(*other, 1), -EINVAL);  // geometry first
  spare_->record_on();
  EXPECT_EQ(live_->swap_cpu(*spare_, 1), 0);
  EXPECT_EQ(live_->swap_cpu(*spare_, 1), 0);  // and back
}

INSTANTIATE_TEST_SUITE_P(Direct, SwapRace, ::testing::Values(false));
INSTANTIATE_TEST_SUITE_P(FromSignalHandler, SwapRace, ::testing::Values(true));

}  // namespace
