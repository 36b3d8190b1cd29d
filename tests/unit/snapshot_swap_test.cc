// swap_cpu_marshalled (S1..S5) against the real marshalling: a requester
// thread, a mailbox, the doorbell signal, the handler on the owner thread.
//
// The races of tests/unit/swap_race_test.cc are forced again, but the swap
// now arrives the way it does in production: the owner blocks the doorbell,
// a requester posts a request and rings, and at the writer's hook point the
// owner unblocks the signal, so the pending doorbell interrupts the write
// right there (the kernel delivers it on return from pthread_sigmask).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace_test/drain_tags.h"
#include "rbtrace_test/test_files.h"
#include "rbtrace/swap.h"

using namespace rbtrace;
using namespace std::chrono_literals;

// The tests below that block the doorbell to force an interleaving want
// the doorbell path only (SwapPath::kAuto would swap without a signal).
constexpr SwapPath kSignalOnly = SwapPath::kSignal;

namespace {

int doorbell() { return SIGRTMIN + kDefaultDoorbellOffset; }

// An application handler for the doorbell's signal number, installed before
// rbtrace installs the doorbell (static initialization): it must be chained
// for signals that are not doorbells, and never see a doorbell.
std::atomic<int> g_app_signals{0};
std::atomic<int> g_app_last_value{0};
void app_handler(int, siginfo_t* si, void*) {
  g_app_signals.fetch_add(1);
  g_app_last_value.store(si->si_value.sival_int);
}
const bool g_app_installed = [] {
  struct sigaction sa {};
  sa.sa_sigaction = app_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN + kDefaultDoorbellOffset, &sa, nullptr);
  return true;
}();

void block_doorbell(bool block) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, doorbell());
  pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &s, nullptr);
}

bool doorbell_pending() {
  sigset_t s;
  sigpending(&s);
  return sigismember(&s, doorbell()) == 1;
}

// A thread bound to a CPU of `rb` that runs jobs on request and otherwise
// waits (interruptibly: the doorbell handler runs while it waits).
class OwnerThread {
 public:
  OwnerThread(RingBuffer& rb, uint32_t cpu) {
    thread_ = std::thread([this, &rb, cpu] {
      bind_rc_ = rb.bind_thread(cpu);
      tid_ = static_cast<pid_t>(syscall(SYS_gettid));
      std::unique_lock<std::mutex> lk(mu_);
      started_ = true;
      cv_.notify_all();
      for (;;) {
        cv_.wait(lk, [this] { return job_ || stop_; });
        if (job_) {
          auto j = std::move(job_);
          job_ = nullptr;
          lk.unlock();
          j();
          lk.lock();
          done_++;
          cv_.notify_all();
          continue;
        }
        break;
      }
      lk.unlock();
      rb.unbind_thread();
    });
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [this] { return started_; });
  }
  ~OwnerThread() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }
  // Runs `f` on the owner thread; waits for it when `wait`.
  void run(std::function<void()> f, bool wait = true) {
    std::unique_lock<std::mutex> lk(mu_);
    const uint64_t target = done_ + 1;
    job_ = std::move(f);
    cv_.notify_all();
    if (wait) cv_.wait(lk, [&] { return done_ >= target; });
  }
  void wait_idle() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !job_ && done_ > 0; });
  }
  int bind_rc() const { return bind_rc_; }
  pid_t tid() const { return tid_; }

 private:
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool started_ = false;
  bool stop_ = false;
  uint64_t done_ = 0;
  int bind_rc_ = -1;
  pid_t tid_ = 0;
};

// At `when`, wait until the doorbell is pending, then unblock it: the
// handler runs S2..S4 right at this instruction of the writer.
struct DoorbellHooks {
  static inline HookPoint when = HookPoint::kAfterW1;
  static inline bool armed = false;
  static inline bool reblock = false;
  static inline int fired = 0;
  static inline bool saw_pending = false;
  static void at(HookPoint p, RingBuffer&, uint32_t) {
    if (!armed || p != when) return;
    armed = false;
    fired++;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (!doorbell_pending() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(100us);
    saw_pending = doorbell_pending();
    block_doorbell(false);  // the doorbell handler runs before this returns
    if (reblock) block_doorbell(true);
  }
};

Options small(uint32_t pages = 4) {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = pages;
  return o;
}

std::vector<uint32_t> drain(RingBuffer& rb, uint32_t cpu) { return test::drain_tags(rb, cpu); }

int write_tag(RingBuffer& rb, uint32_t tag, uint32_t len = 16) {
  Reservation r = rb.reserve<DoorbellHooks>(len);
  if (!r) return r.err;
  std::memset(r.data, 0, len);
  std::memcpy(r.data, &tag, sizeof tag);
  rb.commit<DoorbellHooks>(r);
  return 0;
}

class Marshalled : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(g_app_installed);
    live_ = RingBuffer::create(small());
    spare_ = RingBuffer::create(small());
    ASSERT_TRUE(live_ && spare_);
    ASSERT_EQ(install_swap_doorbell(0), 0);
    DoorbellHooks::armed = false;
    DoorbellHooks::reblock = false;
    DoorbellHooks::fired = 0;
    DoorbellHooks::saw_pending = false;
  }
  void TearDown() override {
    swap_release_mailboxes(*live_);
  }
  std::unique_ptr<RingBuffer> live_, spare_;
};

TEST_F(Marshalled, SwapRunsOnTheOwnerThroughTheDoorbell) {
  OwnerThread owner(*live_, 1);
  ASSERT_EQ(owner.bind_rc(), 0);
  owner.run([&] { ASSERT_EQ(write_tag(*live_, 5), 0); });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  const int app_before = g_app_signals.load();
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t), 0);
  EXPECT_EQ(t.signals, 1u);
  EXPECT_EQ(t.in_place, 0u);
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  EXPECT_EQ(drain(*spare_, 1), std::vector<uint32_t>({5}));
  EXPECT_TRUE(drain(*live_, 1).empty());
  EXPECT_EQ(g_app_signals.load(), app_before) << "a doorbell reached the application's handler";
}

// The application's own handler for the signal number keeps working.
TEST_F(Marshalled, ForeignSignalsAreChainedToTheApplicationHandler) {
  OwnerThread owner(*live_, 1);
  const int before = g_app_signals.load();
  sigval v;
  v.sival_int = 4242;
  siginfo_t si{};
  si.si_signo = doorbell();
  si.si_code = SI_QUEUE;
  si.si_pid = getpid();
  si.si_uid = getuid();
  si.si_value = v;
  ASSERT_EQ(syscall(SYS_rt_tgsigqueueinfo, getpid(), owner.tid(), doorbell(), &si), 0);
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (g_app_signals.load() == before && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(g_app_signals.load(), before + 1);
  EXPECT_EQ(g_app_last_value.load(), 4242);
  // A plain tgkill (SI_TKILL) is not ours either.
  ASSERT_EQ(syscall(SYS_tgkill, getpid(), owner.tid(), doorbell()), 0);
  while (g_app_signals.load() == before + 1 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(g_app_signals.load(), before + 2);
  EXPECT_EQ(install_swap_doorbell(SIGRTMIN + 5), -EBUSY);  // one doorbell per process
  EXPECT_EQ(swap_doorbell_signal(), doorbell());
}

// 2014 race, real marshalling: the doorbell interrupts the write between W1
// and W2; the write fails (W3) and lands in neither buffer.
TEST_F(Marshalled, DoorbellBetweenW1AndW2FailsTheWrite) {
  OwnerThread owner(*live_, 1);
  owner.run([&] { ASSERT_EQ(write_tag(*live_, 1), 0); });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  int write_rc = 1;
  owner.run([&] {
    block_doorbell(true);
    DoorbellHooks::when = HookPoint::kAfterW1;
    DoorbellHooks::reblock = true;
    DoorbellHooks::armed = true;
  });
  int swap_rc = 1;
  SwapTrace t;
  std::thread requester([&] { swap_rc = swap_cpu_marshalled(*live_, *spare_, 1, 5000ms, &t, kSignalOnly); });
  owner.run([&] {
    write_rc = write_tag(*live_, 2);
    block_doorbell(false);
  });
  requester.join();
  EXPECT_EQ(DoorbellHooks::fired, 1);
  EXPECT_TRUE(DoorbellHooks::saw_pending);
  EXPECT_EQ(swap_rc, 0);
  EXPECT_EQ(t.signals, 1u);
  EXPECT_EQ(write_rc, -EAGAIN);
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  EXPECT_EQ(spare_->stats(1).entries, 1u);
  // The refusal is counted once, in the buffer now in the live slot.
  EXPECT_EQ(spare_->stats(1).disabled, 0u);
  EXPECT_EQ(live_->stats(1).disabled, 1u);
  EXPECT_EQ(live_->stats(1).entries, 0u);
  EXPECT_EQ(drain(*spare_, 1), std::vector<uint32_t>({1}));  // 2 is nowhere
  EXPECT_TRUE(drain(*live_, 1).empty());
}

// CVE-2026-74601, real marshalling: the doorbell arrives inside the page
// crossing (W5): the swap answers -EBUSY, the requester backs off and
// retries; the crossing event stays whole in the buffer it was written to,
// which the retried swap then takes out.
TEST_F(Marshalled, DoorbellInPageCrossingIsBusyThenRetried) {
  OwnerThread owner(*live_, 1);
  uint32_t tag = 100;
  owner.run([&] {
    detail::CpuBuffer* cb = live_->cpu_buffer(1);
    detail::BufferPage* tp = cb->tail_page.load();
    while (static_cast<uint32_t>(tp->write.load()) + data_event_size(64) <= cb->capacity)
      ASSERT_EQ(write_tag(*live_, ++tag), 0);
    block_doorbell(true);
    DoorbellHooks::when = HookPoint::kInW5;
    DoorbellHooks::reblock = false;
    DoorbellHooks::armed = true;
  });
  const uint32_t crossing = ++tag;
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  int swap_rc = 1;
  SwapTrace t;
  std::thread requester([&] { swap_rc = swap_cpu_marshalled(*live_, *spare_, 1, 5000ms, &t, kSignalOnly); });
  int write_rc = 1;
  owner.run([&] { write_rc = write_tag(*live_, crossing, 64); });
  requester.join();
  EXPECT_EQ(DoorbellHooks::fired, 1);
  EXPECT_TRUE(DoorbellHooks::saw_pending);
  EXPECT_EQ(write_rc, 0);
  EXPECT_GE(t.busy, 1u) << "the swap inside W5 was not refused";
  EXPECT_EQ(swap_rc, 0);
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  std::vector<uint32_t> got = drain(*spare_, 1);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.front(), 101u);
  EXPECT_EQ(got.back(), crossing);
  for (size_t i = 1; i < got.size(); i++) EXPECT_EQ(got[i], got[i - 1] + 1);
  EXPECT_TRUE(drain(*live_, 1).empty());
}

TEST_F(Marshalled, RecordDisabledIsEagain) {
  OwnerThread owner(*live_, 1);
  live_->record_disable_cpu(1);
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t), -EAGAIN);
  EXPECT_EQ(t.signals, 1u);  // answered by the owner
  live_->record_enable_cpu(1);
  spare_->record_off();
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t), -EAGAIN);
  spare_->record_on();
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t), 0);
}

TEST_F(Marshalled, BadCpuOrGeometryIsEinval) {
  OwnerThread owner(*live_, 1);
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 2, 2000ms), -EINVAL);
  EXPECT_EQ(swap_cpu_marshalled(*live_, *live_, 1, 2000ms), -EINVAL);
  auto other = RingBuffer::create(small(8));
  SwapTrace t;
  live_->record_disable_cpu(1);  // geometry is checked first (kernel order)
  EXPECT_EQ(swap_cpu_marshalled(*live_, *other, 1, 2000ms, &t), -EINVAL);
  EXPECT_EQ(t.signals, 1u);
  live_->record_enable_cpu(1);
}

// The owner blocks the doorbell: the requester times out, withdraws the
// request, and the handler that runs later (unblocked) does nothing.
TEST_F(Marshalled, BlockedDoorbellTimesOutAndTheLateHandlerDoesNothing) {
  OwnerThread owner(*live_, 1);
  owner.run([&] { block_doorbell(true); });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  const auto t0 = std::chrono::steady_clock::now();
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 100ms, &t, kSignalOnly), -ETIMEDOUT);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 2000ms);
  EXPECT_EQ(t.signals, 1u);
  bool pending = false;
  owner.run([&] {
    pending = doorbell_pending();
    block_doorbell(false);  // the late handler runs here: stale request
  });
  EXPECT_TRUE(pending);
  EXPECT_EQ(live_->cpu_buffer(1), original) << "a withdrawn request was acted on";
  // Many timed-out (withdrawn) requests in a row: the doorbells that reach
  // the handler late find WITHDRAWN (or a newer request) in the state word
  // and act on none of them; the next request is served.
  owner.run([&] { block_doorbell(true); });
  for (int i = 0; i < 20; i++)
    EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2ms, nullptr, kSignalOnly), -ETIMEDOUT);
  owner.run([&] { block_doorbell(false); });
  EXPECT_EQ(live_->cpu_buffer(1), original);
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms), 0);
  EXPECT_EQ(spare_->cpu_buffer(1), original);
}

// An owner that blocks the doorbell for good, 1,000 requests that time out
// (the signal path only): one doorbell is sent and stays pending; every
// later request finds it pending and rings none (each used to queue one
// more signal, filling the user's RLIMIT_SIGPENDING). The owner then takes
// what is queued with sigtimedwait: exactly one doorbell. With it gone
// behind rbtrace's back (no handler ran), the next request finds nothing
// pending in /proc and rings again; the owner unblocked, one more is
// served. (Under an emulator /proc never shows it pending: every request
// rings, and only the totals are checked.)
// Whether /proc shows `tid`'s blocked mask with the doorbell in it: not
// under an emulator (qemu-user runs the arm64 tests), where /proc shows the
// host thread, whose signals qemu takes and queues itself.
bool proc_shows_doorbell_blocked(pid_t tid) {
  const std::string st =
      rbtrace_test::read_file("/proc/self/task/" + std::to_string(tid) + "/status");
  const size_t at = st.find("SigBlk:");
  if (at == std::string::npos) return false;
  const unsigned long long m = std::strtoull(st.c_str() + at + 7, nullptr, 16);
  return ((m >> (doorbell() - 1)) & 1) != 0;
}

TEST_F(Marshalled, ABlockedOwnerHasOneDoorbellPendingNotOnePerRequest) {
  OwnerThread owner(*live_, 1);
  owner.run([&] { block_doorbell(true); });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  const bool exact = proc_shows_doorbell_blocked(owner.tid());
  uint64_t rung = 0, skipped = 0;
  for (int i = 0; i < 1000; i++) {
    SwapTrace t;
    ASSERT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 1ms, &t, kSignalOnly), -ETIMEDOUT);
    rung += t.signals;
    skipped += t.doorbells_pending;
  }
  EXPECT_EQ(rung + skipped, 1000u);
  if (exact) {
    EXPECT_EQ(rung, 1u);
    EXPECT_EQ(skipped, 999u);
  }
  int queued = 0;
  owner.run([&] {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, doorbell());
    const timespec zero{0, 0};
    while (sigtimedwait(&s, nullptr, &zero) == doorbell()) queued++;
  });
  if (exact) {
    EXPECT_EQ(queued, 1) << "doorbells queued for the blocked owner";
  }
  EXPECT_EQ(live_->cpu_buffer(1), original) << "a withdrawn request was acted on";
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 20ms, &t, kSignalOnly), -ETIMEDOUT);
  EXPECT_EQ(t.signals, 1u) << "counted on a doorbell that was taken behind our back";
  owner.run([&] { block_doorbell(false); });
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t, kSignalOnly), 0);
  EXPECT_EQ(t.signals, 1u) << "the next request rings again";
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  std::printf("blocked owner: 1000 timed-out requests, %llu doorbells sent, %d queued%s\n",
              static_cast<unsigned long long>(rung), queued, exact ? "" : " (emulator)");
}

// The application replaces the doorbell's handler after rbtrace installed
// it: SIG_DFL (a doorbell would kill the process), SIG_IGN (it would be
// dropped, every swap timing out), its own handler (it would get every
// doorbell). Each swap sees it and sends no signal: the swap is done
// without one (membarrier), and with SwapPath::kSignal it fails with
// -ENOSYS; the process lives and the application's handler sees nothing.
TEST_F(Marshalled, AReplacedDoorbellHandlerIsNeverSignalled) {
  if (RingBuffer::membarrier_status() != 0)
    GTEST_FAIL() << "membarrier unavailable here: " << RingBuffer::membarrier_status();
  OwnerThread owner(*live_, 1);
  struct sigaction ours {};
  ASSERT_EQ(sigaction(doorbell(), nullptr, &ours), 0);
  struct sigaction app {};
  app.sa_sigaction = app_handler;
  app.sa_flags = SA_SIGINFO;
  sigemptyset(&app.sa_mask);
  struct sigaction dfl {}, ign {};
  dfl.sa_handler = SIG_DFL;
  ign.sa_handler = SIG_IGN;
  const int app_before = g_app_signals.load();
  int round = 0;
  for (const struct sigaction* replaced : {&dfl, &ign, &app}) {
    SCOPED_TRACE(round++);
    ASSERT_EQ(sigaction(doorbell(), replaced, nullptr), 0);
    detail::CpuBuffer* before = live_->cpu_buffer(1);
    SwapTrace t;
    EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t), 0);
    EXPECT_EQ(t.signals, 0u);
    EXPECT_GE(t.remote, 1u);
    EXPECT_NE(live_->cpu_buffer(1), before);
    EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 200ms, &t, kSignalOnly), -ENOSYS);
    EXPECT_EQ(t.signals, 0u);
  }
  EXPECT_EQ(g_app_signals.load(), app_before) << "the application's handler got a doorbell";
  ASSERT_EQ(sigaction(doorbell(), &ours, nullptr), 0);  // rbtrace's again
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 2000ms, &t, kSignalOnly), 0);
  EXPECT_EQ(t.signals, 1u);
}

TEST_F(Marshalled, OwnerRequestingRunsInPlace) {
  OwnerThread owner(*live_, 1);
  int rc = 1;
  SwapTrace t;
  owner.run([&] { rc = swap_cpu_marshalled(*live_, *spare_, 1, 1000ms, &t); });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(t.in_place, 1u);
  EXPECT_EQ(t.signals, 0u);
}

TEST_F(Marshalled, UnownedCpuIsClaimedForTheSwap) {
  ASSERT_EQ(live_->cpu_owner(0), 0);
  SwapTrace t;
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 0, 1000ms, &t), 0);
  EXPECT_EQ(t.in_place, 1u);
  EXPECT_EQ(t.signals, 0u);
  EXPECT_EQ(live_->cpu_owner(0), 0);  // released
  // Claimed by someone else (an Iterator in overwrite mode): busy until the
  // timeout.
  {
    RingBuffer::Iterator it(*live_, 0);
    ASSERT_EQ(it.status(), 0);
    EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 0, 20ms, &t), -EBUSY);
    EXPECT_GE(t.busy, 1u);
  }
}

}  // namespace

// SwapPath::kAuto (the default) and an owner that blocks the doorbell: the
// requester sees the mask and swaps without a signal (membarrier) at once;
// the owner's next write is refused (-EAGAIN, counted) and moves its
// binding, the one after lands in the new buffer.
TEST_F(Marshalled, BlockedDoorbellIsSwappedWithoutASignal) {
  ASSERT_EQ(RingBuffer::membarrier_status(), 0) << "membarrier unavailable here";
  OwnerThread owner(*live_, 1);
  owner.run([&] {
    block_doorbell(true);
    ASSERT_EQ(write_tag(*live_, 1), 0);
  });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  // The requester reads the owner's mask from /proc. Under an emulator
  // (qemu-user runs the arm64 tests) /proc shows the host thread's mask,
  // not the emulated one: then the doorbell is rung and the swap goes
  // without a signal after the timeout instead. Either way it succeeds.
  const bool proc_shows_mask = proc_shows_doorbell_blocked(owner.tid());
  SwapTrace t;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(swap_cpu_marshalled(*live_, *spare_, 1, 300ms, &t), 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(t.remote, 1u);
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  if (proc_shows_mask) {
    EXPECT_LT(took, 300ms) << "waited for the doorbell";
    EXPECT_EQ(t.signals, 0u);
  } else {
    EXPECT_EQ(t.signals, 1u);
  }
  int rc2 = 1, rc3 = 1;
  owner.run([&] {
    rc2 = write_tag(*live_, 2);
    rc3 = write_tag(*live_, 3);
    EXPECT_EQ(doorbell_pending(), !proc_shows_mask);  // rung only when /proc could not tell
    block_doorbell(false);
  });
  EXPECT_EQ(rc2, -EAGAIN);
  EXPECT_EQ(rc3, 0);
  EXPECT_EQ(drain(*spare_, 1), (std::vector<uint32_t>{1}));
  EXPECT_EQ(drain(*live_, 1), (std::vector<uint32_t>{3}));
  EXPECT_EQ(live_->stats(1).disabled, 1u);
}

// An owner whose doorbell is ignored (the application set SIG_IGN over
// rbtrace's handler): the requester sees the handler replaced, rings no
// doorbell and swaps without a signal.
TEST_F(Marshalled, IgnoredDoorbellFallsBackToASwapWithoutASignal) {
  ASSERT_EQ(RingBuffer::membarrier_status(), 0) << "membarrier unavailable here";
  OwnerThread owner(*live_, 1);
  owner.run([&] { ASSERT_EQ(write_tag(*live_, 4), 0); });
  detail::CpuBuffer* original = live_->cpu_buffer(1);
  struct sigaction ign {}, ours {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(doorbell(), &ign, &ours), 0);
  SwapTrace t;
  const int rc = swap_cpu_marshalled(*live_, *spare_, 1, 50ms, &t);
  ASSERT_EQ(sigaction(doorbell(), &ours, nullptr), 0);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(t.signals, 0u);  // seen replaced (SIG_IGN): none rung
  EXPECT_GE(t.remote, 1u);   // without a signal
  EXPECT_EQ(spare_->cpu_buffer(1), original);
  int w = 1;
  owner.run([&] { w = write_tag(*live_, 5); });  // refused once: the binding moves
  EXPECT_EQ(w, -EAGAIN);
  owner.run([&] { w = write_tag(*live_, 6); });
  EXPECT_EQ(w, 0);
  EXPECT_EQ(drain(*spare_, 1), (std::vector<uint32_t>{4}));
  EXPECT_EQ(drain(*live_, 1), (std::vector<uint32_t>{6}));
}
