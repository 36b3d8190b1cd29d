// The swap without a signal (RingBuffer::swap_cpu_remote, docs/DESIGN.md
// section 7, "Without a signal"): every interleaving of the Dekker pair
// between the owner's W2/W3 and the requester's M1 (mark), M2 (barrier) and
// M3 (read committing), forced with the writer's hook points (HookPoint) and
// the requester's (TestHookPoint). The owner thread never takes a signal
// here: it blocks them all, as a server's worker that sigwaits does.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace_test/drain_tags.h"

using namespace rbtrace;

namespace {

// A gate the owner thread stops at: the test opens it when it wants.
struct Gate {
  std::atomic<int> reached{0};  // the owner is waiting here
  std::atomic<int> open{0};
  void stop_here() {
    reached.store(1);
    while (open.load() == 0) std::this_thread::yield();
    reached.store(0);
    open.store(0);
  }
  void wait_reached() const {
    while (reached.load() == 0) std::this_thread::yield();
  }
  void release() { open.store(1); }
};

// The writer's policy: stops at `first` (and, once released, at `second`).
// With nested_tag set, a nested write of that tag runs at `first` before
// the stop (a signal handler's, on the owner thread: the default hook
// policy, so it does not stop anywhere itself).
struct OwnerHooks {
  static inline std::atomic<int> first{-1}, second{-1};
  static inline std::atomic<uint32_t> nested_tag{0};
  static inline std::atomic<int> nested_result{1};
  static inline Gate gate1, gate2;
  static void at(HookPoint p, RingBuffer& rb, uint32_t) {
    const int pi = static_cast<int>(p);
    if (pi == first.load()) {
      first.store(-1);
      if (const uint32_t tag = nested_tag.exchange(0)) {
        Reservation r = rb.reserve(16);
        if (r) {
          std::memset(r.data, 0, 16);
          std::memcpy(r.data, &tag, sizeof tag);
          rb.commit(r);
        }
        nested_result.store(r ? 0 : r.err);
      }
      gate1.stop_here();
    } else if (pi == second.load()) {
      second.store(-1);
      gate2.stop_here();
    }
  }
};

// The requester's hook: at `point`, release the owner from gate1 and wait
// until it reaches gate2 (it ran from its first stop to its second in
// between the requester's steps).
struct RequesterHook {
  static inline std::atomic<int> point{-1};
  static void at(TestHookPoint p, RingBuffer&, uint32_t) {
    if (static_cast<int>(p) != point.load()) return;
    point.store(-1);
    OwnerHooks::gate1.release();
    OwnerHooks::gate2.wait_reached();
  }
};

Options one_cpu() {
  Options o;
  o.ncpus = 1;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  o.mode = Mode::kProducerConsumer;
  return o;
}

class RemoteSwap : public ::testing::Test {
 public:  // the requester hooks below call wait_done
  void SetUp() override {
    ASSERT_EQ(RingBuffer::membarrier_status(), 0)
        << "membarrier(PRIVATE_EXPEDITED) is not available here; "
           "RemoteSwapUnavailable checks the error instead";
    live_ = RingBuffer::create(one_cpu());
    spare_ = RingBuffer::create(one_cpu());
    ASSERT_TRUE(live_ && spare_);
    OwnerHooks::first.store(-1);
    OwnerHooks::second.store(-1);
    OwnerHooks::nested_tag.store(0);
    RequesterHook::point.store(-1);
    set_test_hook(&RequesterHook::at);
    stop_.store(false);
    owner_ = std::thread([this] { run_owner(); });
    while (!bound_.load()) std::this_thread::yield();
  }
  void TearDown() override {
    set_test_hook(nullptr);
    stop_.store(true);
    owner_.join();
  }
  // The owner: every signal blocked, bound to CPU 0, writes a tag whenever
  // `order_` holds one, and reports the result.
  void run_owner() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    ASSERT_EQ(live_->bind_thread(0), 0);
    bound_.store(true);
    while (!stop_.load()) {
      const uint32_t tag = order_.exchange(0);
      if (tag == 0) {
        std::this_thread::yield();
        continue;
      }
      int rc = 0;
      Reservation r = live_->reserve<OwnerHooks>(16);
      if (!r) {
        rc = r.err;
      } else {
        std::memset(r.data, 0, 16);
        std::memcpy(r.data, &tag, sizeof tag);
        live_->commit<OwnerHooks>(r);
      }
      result_.store(rc);
      done_.store(tag);
    }
    live_->unbind_thread();
  }
  void order(uint32_t tag) {
    done_.store(0);
    order_.store(tag);
  }
  int wait_done(uint32_t tag) {
    while (done_.load() != tag) std::this_thread::yield();
    return result_.load();
  }
  int write(uint32_t tag) {
    order(tag);
    return wait_done(tag);
  }
  static void stop_at(HookPoint first, int second = -1) {
    OwnerHooks::first.store(static_cast<int>(first));
    OwnerHooks::second.store(second);
  }

  std::unique_ptr<RingBuffer> live_, spare_;
  std::thread owner_;
  std::atomic<bool> bound_{false}, stop_{false};
  std::atomic<uint32_t> order_{0}, done_{0};
  std::atomic<int> result_{0};
};

// Idle owner (between events): the swap goes through at once; the owner's
// next event finds its cached buffer swapped away at W3, is refused and
// counted (-EAGAIN, `disabled` of the new buffer), and the one after lands
// in the new buffer.
TEST_F(RemoteSwap, IdleOwnerSwapsAndTheNextEventMovesTheBinding) {
  ASSERT_EQ(write(1), 0);
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  ASSERT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  EXPECT_EQ(spare_->cpu_buffer(0), a);
  EXPECT_EQ(a->buffer.load(), spare_.get());
  EXPECT_EQ(write(2), -EAGAIN);
  EXPECT_EQ(a->committing(), 0u);  // the refused writer left a as it was
  EXPECT_EQ(live_->stats(0).disabled, 1u);
  EXPECT_EQ(write(3), 0);
  EXPECT_EQ(test::drain_tags(*spare_, 0), (std::vector<uint32_t>{1}));
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{3}));
  EXPECT_EQ(spare_->stats(0).disabled, 0u);
}

// Two swaps without a signal in a row, the owner idle with its stale
// binding: the second brings its cached buffer back, so its next event
// lands there directly, after the event it held.
TEST_F(RemoteSwap, TwoSwapsInARowBringTheCachedBufferBack) {
  ASSERT_EQ(write(1), 0);
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  ASSERT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  ASSERT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  EXPECT_EQ(live_->cpu_buffer(0), a);
  EXPECT_EQ(write(2), 0);  // no refusal: the cache is right again
  EXPECT_EQ(live_->stats(0).disabled, 0u);
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{1, 2}));
  EXPECT_TRUE(test::drain_tags(*spare_, 0).empty());
}

// W2 before M1 (the owner stopped between W2 and W3): M3 sees it busy; the
// mark is put back, and the owner's write lands in the live buffer.
TEST_F(RemoteSwap, WriterBetweenW2AndW3IsSeenBusy) {
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  stop_at(HookPoint::kAfterW2);
  order(7);
  OwnerHooks::gate1.wait_reached();
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), -EBUSY);
  EXPECT_EQ(a->buffer.load(), live_.get());  // put back
  EXPECT_EQ(live_->cpu_buffer(0), a);
  OwnerHooks::gate1.release();
  EXPECT_EQ(wait_done(7), 0);
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{7}));
  EXPECT_EQ(live_->stats(0).disabled, 0u);
}

// W3 passed before M1 (the owner is reserving): busy, nothing moves.
TEST_F(RemoteSwap, WriterPastW3IsSeenBusy) {
  stop_at(HookPoint::kAfterW3);
  order(8);
  OwnerHooks::gate1.wait_reached();
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), -EBUSY);
  OwnerHooks::gate1.release();
  EXPECT_EQ(wait_done(8), 0);
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{8}));
}

// The owner stopped before W2 (after W1) for the whole swap: W2 comes after
// M2, so its W3 sees the mark: refused, counted in the new buffer, and the
// old buffer is left with committing 0.
TEST_F(RemoteSwap, WriterBeforeW2ForTheWholeSwapIsRefusedAtW3) {
  ASSERT_EQ(write(1), 0);
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  stop_at(HookPoint::kAfterW1);
  order(9);
  OwnerHooks::gate1.wait_reached();
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  OwnerHooks::gate1.release();
  EXPECT_EQ(wait_done(9), -EAGAIN);
  EXPECT_EQ(a->committing(), 0u);
  EXPECT_EQ(live_->stats(0).disabled, 1u);
  EXPECT_EQ(write(10), 0);
  EXPECT_EQ(test::drain_tags(*spare_, 0), (std::vector<uint32_t>{1}));
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{10}));
}

// W2 between M2 and M3 (the requester stopped after its barrier while the
// owner runs W2): M3 sees committing, the mark is put back, the owner's W3
// (after the put-back) passes and its write lands in the live buffer.
TEST_F(RemoteSwap, WriterEnteringAfterTheBarrierBeforeTheReadIsSeenBusy) {
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  stop_at(HookPoint::kAfterW1, static_cast<int>(HookPoint::kAfterW2));
  order(11);
  OwnerHooks::gate1.wait_reached();
  RequesterHook::point.store(static_cast<int>(TestHookPoint::kRemoteFenced));
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), -EBUSY);
  EXPECT_EQ(a->buffer.load(), live_.get());
  OwnerHooks::gate2.release();
  EXPECT_EQ(wait_done(11), 0);
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{11}));
  EXPECT_EQ(live_->stats(0).disabled, 0u);
}

// At kRemoteMarked: release the owner and wait until its write is over.
struct MarkedHook {
  static inline RemoteSwap* self = nullptr;
  static void at(TestHookPoint p, RingBuffer&, uint32_t) {
    if (p != TestHookPoint::kRemoteMarked) return;
    OwnerHooks::gate1.release();
    EXPECT_EQ(self->wait_done(12), -EAGAIN);
  }
};

// W2 and W3 between M1 and M2 (the requester stopped after its mark): W3
// sees the mark while the slot still holds the old buffer: the refusal is
// counted in the slot (neither buffer), the swap then goes through (the
// writer has left), and the owner's next write moves its binding.
TEST_F(RemoteSwap, WriterRefusedBetweenTheMarkAndTheBarrierIsCountedOnce) {
  ASSERT_EQ(write(1), 0);
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  stop_at(HookPoint::kAfterW1);
  order(12);
  OwnerHooks::gate1.wait_reached();
  // At kRemoteMarked the owner runs from kAfterW1 through W2 and W3 (its
  // refusal) and then stops nowhere: the hook waits for its result.
  MarkedHook::self = this;
  set_test_hook(&MarkedHook::at);
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  set_test_hook(nullptr);
  EXPECT_EQ(a->committing(), 0u);
  const uint64_t refused_in_slot = live_->stats(0).disabled;
  EXPECT_EQ(refused_in_slot, 1u);          // counted once, in the slot
  EXPECT_EQ(spare_->stats(0).disabled, 0u);  // not in the buffer being dumped
  // The binding still holds a (refreshed to what the slot held then): the
  // next write is refused again, counted in the slot, and moves it.
  EXPECT_EQ(write(13), -EAGAIN);
  EXPECT_EQ(live_->stats(0).disabled, 2u);
  EXPECT_EQ(write(14), 0);
  EXPECT_EQ(test::drain_tags(*spare_, 0), (std::vector<uint32_t>{1}));
  EXPECT_EQ(test::drain_tags(*live_, 0), (std::vector<uint32_t>{14}));
}

// A handler's write nested in the owner's W2..W3, before the mark: it
// passes W3 (the mark is not there yet), reserves in the live buffer a and
// leaves the commit to the owner. Then M1, and the owner's W3 sees the
// mark: its refusal must not just undo its W2 (committing back to 0 with
// the handler's event above the commit: the swap then takes a and its dump
// misses that event). Found by the Spin model (tests/model/ring.pml,
// -DSWAPS -DNREQ=1 -DH1N=1, the run finding_refuse_moved_strands_nested);
// the refusal now leaves through the general W6 when anyone entered since
// its W2, which moves the commit past the handler's event first.
TEST_F(RemoteSwap, AHandlersWriteBeforeTheMarkIsNotStrandedByTheOwnersRefusal) {
  ASSERT_EQ(write(1), 0);
  detail::CpuBuffer* a = live_->cpu_buffer(0);
  OwnerHooks::nested_result.store(1);
  OwnerHooks::nested_tag.store(77);
  stop_at(HookPoint::kAfterW2);
  order(12);
  OwnerHooks::gate1.wait_reached();
  EXPECT_EQ(OwnerHooks::nested_result.load(), 0) << "the handler's write was refused";
  MarkedHook::self = this;  // at M1: the owner's W3 runs, and is refused
  set_test_hook(&MarkedHook::at);
  EXPECT_EQ(live_->swap_cpu_remote(*spare_, 0), 0);
  set_test_hook(nullptr);
  EXPECT_EQ(a->committing(), 0u);
  EXPECT_EQ(spare_->cpu_buffer(0), a);
  // a, swapped out, holds both committed events, the handler's included.
  EXPECT_EQ(test::drain_tags(*spare_, 0), (std::vector<uint32_t>{1, 77}));
  const CpuStats st = spare_->stats(0);
  EXPECT_EQ(st.entries, 2u);
  EXPECT_EQ(st.read, st.entries) << "an event stranded above the commit";
}

}  // namespace

// Where membarrier cannot be used, the remote swap says so and moves
// nothing (RBTRACE_MEMBARRIER=0 is covered end to end by the CLI test).
TEST(RemoteSwapUnavailable, TheErrorSaysSoOrTheSwapWorks) {
  auto live = RingBuffer::create(one_cpu());
  auto spare = RingBuffer::create(one_cpu());
  ASSERT_TRUE(live && spare);
  detail::CpuBuffer* a = live->cpu_buffer(0);
  const int st = RingBuffer::membarrier_status();
  if (st != 0) {
    EXPECT_EQ(live->swap_cpu_remote(*spare, 0), st);
    EXPECT_EQ(live->cpu_buffer(0), a);
  } else {
    EXPECT_EQ(live->swap_cpu_remote(*spare, 0), 0);  // no owner: a plain swap
    EXPECT_EQ(spare->cpu_buffer(0), a);
  }
}
