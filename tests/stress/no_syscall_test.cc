// no_syscall_test.cc - the writer path makes no system call and no
// allocation.
//
// (a) System calls. A forked child creates a ring buffer, binds a CPU (or
//     claims one with its first event), writes a few warm-up events, then
//     installs a seccomp filter (raw BPF through prctl; the kernel kills the
//     whole process, SECCOMP_RET_KILL_PROCESS, on any system call but
//     exit_group/exit, and rt_sigreturn in the case with a signal handler)
//     and writes 1,000,000 events: write(), reserve+commit, typed emit and
//     reserve+discard, in overwrite mode (wrapping many times) and in
//     producer/consumer mode (the full-buffer refusal path), optionally
//     with a timer signal whose handler writes too. The parent asserts the
//     child exited with status 0, not killed by SIGSYS. A control child that
//     makes one getpid() after the filter must die of SIGSYS.
// (b) Allocations. The test binary replaces the global operator new/delete
//     and (outside sanitizer builds, whose runtimes own malloc) malloc and
//     friends with counting versions; 1,000,000 writes after warm-up, with a
//     signal handler writing too, must count 0. A control allocation shows
//     the counters work.
// (c) The consumer's wake-up, seen from the writer (consumer.h,
//     watermark_pages). The child also runs a Consumer on its ring; its
//     threads start before the filter, which (no TSYNC) then covers the
//     writer thread only. With watermark_pages = 0 the filter kills on any
//     system call, and the writer writes in bursts until the drain thread
//     has read events written under the filter. With watermark_pages = N,
//     futex(FUTEX_WAKE_PRIVATE) traps (SIGSYS, SECCOMP_RET_TRAP) and every
//     other system call kills: the handler counts the wake, checks it wakes
//     one waiter and makes it itself (tagged through the unused val3, which
//     the filter lets through); the writer writes in bursts, pausing so that
//     the drain thread empties the ring and sleeps again, until it made
//     kWakes wakes. So both halves of the statement are tested: no system
//     call without the watermark, and with it exactly one kind, which does
//     happen.
//
// Sanitizer builds: TSan runs a (deferred) signal handler between its own
// rt_sigprocmask calls, so under TSan the seccomp case with a signal handler
// is compiled out (strace shows the child killed at rt_sigprocmask), and so
// are the watermark cases of (c), whose trap handler is a signal handler
// too; under TSan the writes are 100,000. Everything else runs in every
// build.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <new>

#include "rbtrace/consumer.h"

#include "rbtrace_test/stress_common.h"

#if defined(STRESS_TSAN) || defined(STRESS_ASAN)
#define STRESS_SANITIZED 1
#endif

// ===========================================================================
// Counting allocator
// ===========================================================================
namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocs{0};
inline void note_alloc() {
  if (g_counting.load(std::memory_order_relaxed))
    g_allocs.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

#ifndef STRESS_SANITIZED
// malloc and friends, forwarded to glibc's own implementation.
extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void* __libc_valloc(size_t);
void* __libc_pvalloc(size_t);

void* malloc(size_t n) noexcept {
  note_alloc();
  return __libc_malloc(n);
}
void free(void* p) noexcept { __libc_free(p); }
void* calloc(size_t a, size_t b) noexcept {
  note_alloc();
  return __libc_calloc(a, b);
}
void* realloc(void* p, size_t n) noexcept {
  note_alloc();
  return __libc_realloc(p, n);
}
void* memalign(size_t al, size_t n) noexcept {
  note_alloc();
  return __libc_memalign(al, n);
}
void* aligned_alloc(size_t al, size_t n) noexcept {
  note_alloc();
  return __libc_memalign(al, n);
}
int posix_memalign(void** out, size_t al, size_t n) noexcept {
  if (al == 0 || (al & (al - 1)) != 0 || al % sizeof(void*) != 0) return EINVAL;
  note_alloc();
  void* p = __libc_memalign(al, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t n) noexcept {
  note_alloc();
  return __libc_valloc(n);
}
void* pvalloc(size_t n) noexcept {
  note_alloc();
  return __libc_pvalloc(n);
}
}  // extern "C"
#define STRESS_RAW_MALLOC(n) __libc_malloc(n)
#define STRESS_RAW_ALIGNED(al, n) __libc_memalign(al, n)
#define STRESS_RAW_FREE(p) __libc_free(p)
#define STRESS_COUNTS_MALLOC 1
#else
#define STRESS_RAW_MALLOC(n) std::malloc(n)
#define STRESS_RAW_ALIGNED(al, n) std::aligned_alloc(al, ((n) + (al)-1) / (al) * (al))
#define STRESS_RAW_FREE(p) std::free(p)
#endif

namespace {
void* counted_new(size_t n) {
  note_alloc();
  void* p = STRESS_RAW_MALLOC(n ? n : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* counted_new_aligned(size_t n, std::align_val_t al) {
  note_alloc();
  const size_t a = static_cast<size_t>(al) < sizeof(void*) ? sizeof(void*) : static_cast<size_t>(al);
  void* p = STRESS_RAW_ALIGNED(a, n ? n : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(size_t n) { return counted_new(n); }
void* operator new[](size_t n) { return counted_new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(size_t n, std::align_val_t al) { return counted_new_aligned(n, al); }
void* operator new[](size_t n, std::align_val_t al) { return counted_new_aligned(n, al); }
void* operator new(size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return counted_new_aligned(n, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return counted_new_aligned(n, al);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { STRESS_RAW_FREE(p); }
void operator delete[](void* p) noexcept { STRESS_RAW_FREE(p); }
void operator delete(void* p, size_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete[](void* p, size_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { STRESS_RAW_FREE(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { STRESS_RAW_FREE(p); }
void operator delete(void* p, std::align_val_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete[](void* p, std::align_val_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { STRESS_RAW_FREE(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  STRESS_RAW_FREE(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  STRESS_RAW_FREE(p);
}

using namespace rbtrace;
using namespace stress;

namespace {

// 1,000,000 writes; a tenth under TSan (still thousands of laps of the
// ring), which runs the writer some 20 times slower.
#ifdef STRESS_TSAN
constexpr uint64_t kWrites = 100000;
#else
constexpr uint64_t kWrites = 1000000;
#endif

// ---------------------------------------------------------------------------
// The writer workload, shared by both halves: every writer entry point, in
// an order that varies. Returns the attempts that ended in a counter (a
// discard does not), or ~0 on an unexpected return code.
// ---------------------------------------------------------------------------
struct Workload {
  RingBuffer* rb = nullptr;
  bool may_refuse = false;  // producer/consumer: -ENOSPC is expected
  uint32_t seq = 0;
  uint64_t attempts = 0, ok = 0, refused = 0, discards = 0, bad = 0;
  int last_bad = 0;
  Rng rng{3};
  alignas(8) unsigned char buf[kMaxLen];
  char scratch[kMaxLen];

  void note(int rc) {
    attempts++;
    if (rc == 0) {
      ok++;
      seq++;
    } else if (rc == -ENOSPC && may_refuse) {
      refused++;
    } else {
      bad++;
      last_bad = rc;
    }
  }
  void one() {
    const uint32_t len = rng.below(2) ? kMinLen + rng.below(105) : 113 + rng.below(kMaxLen - 112);
    switch (rng.below(5)) {
      case 0:
      case 1:
        make_raw(buf, len, 0, 0, seq, -1);
        note(rb->write(buf, len));
        break;
      case 2: {
        Reservation r = rb->reserve(len);
        if (r) {
          make_raw(static_cast<unsigned char*>(r.data), len, 0, 0, seq, r.level);
          rb->commit(r);
        }
        note(r.err);
        break;
      }
      case 3:
        note(emit_typed(*rb, scratch, std::max(len, kTypedFixed + 1), 0, 0, seq));
        break;
      default: {
        Reservation r = rb->reserve(len);
        if (r) {
          rb->discard(r);
          discards++;
        } else {
          note(r.err);
        }
        break;
      }
    }
  }
};

// A signal handler that writes: the workload of the interrupted thread's
// handler. Only touched by the handler (and read after the timer stopped).
Workload* g_handler_work = nullptr;
volatile sig_atomic_t g_handler_on = 0;
volatile sig_atomic_t g_handler_calls = 0;

void on_alarm(int) {
  if (!g_handler_on || g_handler_work == nullptr) return;
  const int saved = errno;
  g_handler_calls = g_handler_calls + 1;
  g_handler_work->one();
  errno = saved;
}

bool start_thread_timer(timer_t* t, long interval_ns) {
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGALRM, &sa, nullptr) != 0) return false;
  sigevent sev{};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGALRM;
#ifdef sigev_notify_thread_id
  sev.sigev_notify_thread_id = static_cast<pid_t>(gettid());
#else
  sev._sigev_un._tid = static_cast<pid_t>(gettid());
#endif
  if (timer_create(CLOCK_MONOTONIC, &sev, t) != 0) return false;
  itimerspec its{};
  its.it_interval.tv_nsec = interval_ns;
  its.it_value.tv_nsec = interval_ns;
  return timer_settime(*t, 0, &its, nullptr) == 0;
}

// ===========================================================================
// (a) seccomp
// ===========================================================================

struct Child {
  const char* name;
  Mode mode;
  bool bind;     // bind_thread, else claim the slot with the first event
  bool signals;  // a timer signal whose handler writes
  bool control;  // make one getpid() under the filter: must die of SIGSYS
};
void PrintTo(const Child& c, std::ostream* os) { *os << c.name; }

// Exit codes of the child (after the filter only exit_group works).
enum : int {
  kExitOk = 0,
  kExitCreate = 10,
  kExitBind = 11,
  kExitWarmup = 12,
  kExitTimer = 13,
  kExitFilter = 14,
  kExitWrite = 20,
  kExitStats = 21,
  kExitNoWrap = 22,
  kExitNoHandler = 23,
  kExitNoRefusal = 24,
  kExitControlSurvived = 30,
};


int install_filter(bool allow_sigreturn) {
#if defined(__x86_64__)
  constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "no seccomp architecture constant for this target"
#endif
  sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
               allow_sigreturn ? static_cast<uint32_t>(__NR_rt_sigreturn) : ~0u, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof f / sizeof f[0]), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

// Returns the child's exit code. Nothing here may make a system call once
// the filter is in: no destructors that free (the buffer is leaked), no
// [[noreturn]] calls (ASan unpoisons stacks before them with sigaltstack).
int child_main(const Child& c) {
  // Before the filter: anything goes.
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  o.mode = c.mode;
  RingBuffer* rb = RingBuffer::create(o).release();
  if (rb == nullptr) return kExitCreate;
  if (c.bind && rb->bind_thread(1) != 0) return kExitBind;
  static Workload w;
  static Workload hw;
  w.rb = rb;
  w.may_refuse = c.mode == Mode::kProducerConsumer;
  hw.rb = rb;
  hw.may_refuse = true;  // also in overwrite: a handler may be refused mid-W5
  hw.rng = Rng(11);
  // Warm-up: the first event of the thread claims the slot (one gettid).
  for (int i = 0; i < 16; i++) w.one();
  if (w.bad != 0 || rb->current_cpu() < 0) return kExitWarmup;
  const uint64_t warm_attempts = w.attempts;
  timer_t t{};
  if (c.signals) {
    g_handler_work = &hw;
    g_handler_on = 1;
    if (!start_thread_timer(&t, 100000)) return kExitTimer;
  }
  rlimit core{0, 0};
  setrlimit(RLIMIT_CORE, &core);  // the control child dies of SIGSYS: no core file
  if (install_filter(c.signals) != 0) return kExitFilter;

  // Under the filter: any system call but exit kills the process.
  if (c.control) {
    syscall(SYS_getpid);
    return kExitControlSurvived;
  }
  for (uint64_t i = 0; i < kWrites; i++) w.one();
  g_handler_on = 0;
  if (w.bad != 0 || hw.bad != 0) return kExitWrite;
  const uint32_t cpu = static_cast<uint32_t>(rb->current_cpu());
  const CpuStats s = rb->stats(cpu);
  if (s.entries + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled !=
          w.attempts + hw.attempts ||
      s.entries != w.ok + hw.ok)
    return kExitStats;
  if (c.mode == Mode::kOverwrite && s.overrun < 10 * (w.ok + hw.ok) / 11)
    return kExitNoWrap;  // it wrapped: nearly everything was overwritten
  if (c.mode == Mode::kProducerConsumer && w.refused < (w.attempts - warm_attempts) / 2)
    return kExitNoRefusal;  // it was full: nearly everything was refused
  if (c.signals && (g_handler_calls == 0 || hw.ok == 0)) return kExitNoHandler;
  return kExitOk;
}

class NoSyscall : public ::testing::TestWithParam<Child> {};

TEST_P(NoSyscall, WriterPathUnderSeccomp) {
  const Child& c = GetParam();
  fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    // The raw system call: no atexit handlers, no sanitizer _exit interceptor.
    syscall(SYS_exit_group, child_main(c));
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  if (c.control) {
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
        << "the control child was not killed by SIGSYS: "
        << (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                              : "signal " + std::to_string(WTERMSIG(status)));
    return;
  }
  EXPECT_FALSE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
      << "the writer path made a system call (killed by SIGSYS)";
  EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  if (WIFEXITED(status)) {
    EXPECT_EQ(WEXITSTATUS(status), kExitOk) << "see the kExit* codes";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Stress, NoSyscall,
    ::testing::Values(Child{"overwrite_bound", Mode::kOverwrite, true, false, false},
                      Child{"overwrite_claimed", Mode::kOverwrite, false, false, false},
                      Child{"producer_consumer_full", Mode::kProducerConsumer, true, false, false},
#ifndef STRESS_TSAN
                      Child{"overwrite_with_signal_handler", Mode::kOverwrite, true, true, false},
#endif
                      Child{"control_getpid_is_killed", Mode::kOverwrite, true, false, true}),
    [](const ::testing::TestParamInfo<Child>& i) { return std::string(i.param.name); });

// ===========================================================================
// (b) allocations
// ===========================================================================

class NoAlloc : public ::testing::TestWithParam<Mode> {};

TEST(NoAllocControl, CounterSeesAllocations) {
  g_allocs.store(0);
  g_counting.store(true);
  void* volatile p = ::operator new(24);
  ::operator delete(p);
  int* volatile q = new int[3];
  delete[] q;
#ifdef STRESS_COUNTS_MALLOC
  void* volatile m = std::malloc(24);
  std::free(m);
  constexpr uint64_t kExpected = 3;
#else
  constexpr uint64_t kExpected = 2;
#endif
  g_counting.store(false);
  EXPECT_EQ(g_allocs.load(), kExpected);
}

TEST_P(NoAlloc, WriterPathNeverAllocates) {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  o.mode = GetParam();
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  auto w = std::make_unique<Workload>();
  auto hw = std::make_unique<Workload>();
  w->rb = hw->rb = rb.get();
  w->may_refuse = o.mode == Mode::kProducerConsumer;
  hw->may_refuse = true;
  hw->rng = Rng(12);
  for (int i = 0; i < 16; i++) w->one();  // warm-up
  timer_t t{};
  g_handler_work = hw.get();
  g_handler_calls = 0;
  g_handler_on = 1;
  ASSERT_TRUE(start_thread_timer(&t, 100000));

  g_allocs.store(0);
  g_counting.store(true);
  for (uint64_t i = 0; i < kWrites; i++) w->one();
  g_counting.store(false);
  const uint64_t allocs = g_allocs.load();

  g_handler_on = 0;
  timer_delete(t);
  g_handler_work = nullptr;
  EXPECT_EQ(allocs, 0u) << "the writer path allocated";
  EXPECT_EQ(w->bad + hw->bad, 0u) << "unexpected return code " << w->last_bad << " / "
                                  << hw->last_bad;
  EXPECT_GT(g_handler_calls, 0) << "the handler never ran";
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, w->ok + hw->ok);
  EXPECT_EQ(s.entries + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled,
            w->attempts + hw->attempts);
  rb->unbind_thread();
}

INSTANTIATE_TEST_SUITE_P(Stress, NoAlloc,
                         ::testing::Values(Mode::kOverwrite, Mode::kProducerConsumer),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return std::string(i.param == Mode::kOverwrite ? "overwrite"
                                                                           : "producer_consumer");
                         });

// ===========================================================================
// (c) the consumer's wake-up
// ===========================================================================

struct WakeChild {
  const char* name;
  uint32_t watermark_pages;
};
void PrintTo(const WakeChild& c, std::ostream* os) { *os << c.name; }

enum : int {
  kExitConsumer = 15,
  kExitSigaction = 16,
  kExitNoRead = 25,     // watermark 0: the drain thread never read meanwhile
  kExitNoWake = 26,     // watermark N: no futex wake from the writer
  kExitBadFutex = 27,   // a trapped call other than futex(FUTEX_WAKE_PRIVATE, 1)
};

constexpr uint32_t kFutexTag = 0x5ecc0f7e;  // val3 of the handler's own futex
constexpr int kWakes = 5;
constexpr int kMaxBursts = 50000;
constexpr int kSiSysSeccomp = 1;  // si_code of a SECCOMP_RET_TRAP (the kernel's SYS_SECCOMP)
volatile sig_atomic_t g_wakes = 0;
volatile sig_atomic_t g_bad_futex = 0;

// SIGSYS from SECCOMP_RET_TRAP: the writer called futex(FUTEX_WAKE_PRIVATE).
void on_sigsys(int, siginfo_t* si, void* ctx) {
  const int saved = errno;
  auto* uc = static_cast<ucontext_t*>(ctx);
#if defined(__x86_64__)
  greg_t* r = uc->uc_mcontext.gregs;
  const long a[5] = {r[REG_RDI], r[REG_RSI], r[REG_RDX], r[REG_R10], r[REG_R8]};
  greg_t* result = &r[REG_RAX];
#elif defined(__aarch64__)
  auto* r = uc->uc_mcontext.regs;
  const long a[5] = {static_cast<long>(r[0]), static_cast<long>(r[1]), static_cast<long>(r[2]),
                     static_cast<long>(r[3]), static_cast<long>(r[4])};
  auto* result = &r[0];
#endif
  if (si->si_code != kSiSysSeccomp || si->si_syscall != SYS_futex ||
      static_cast<int>(a[1]) != FUTEX_WAKE_PRIVATE || a[2] != 1) {
    g_bad_futex = 1;
    *result = -ENOSYS;
  } else {
    const long rc = syscall(SYS_futex, a[0], a[1], a[2], a[3], a[4], kFutexTag);
    *result = rc < 0 ? -errno : rc;
    g_wakes = g_wakes + 1;
  }
  errno = saved;
}

// Kills on any system call but exit/exit_group/rt_sigreturn, except that
// futex(FUTEX_WAKE_PRIVATE) traps (SIGSYS) unless val3 is kFutexTag.
int install_wake_filter() {
#if defined(__x86_64__)
  constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#endif
  // The low 32 bits of an argument (little-endian).
  constexpr uint32_t kArg1 = offsetof(seccomp_data, args) + 1 * sizeof(uint64_t);
  constexpr uint32_t kArg5 = offsetof(seccomp_data, args) + 5 * sizeof(uint64_t);
  sock_filter f[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      /* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 10, 0),  // -> 15
      /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 9, 0),         // -> 15
      /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 8, 0),  // -> 15
      /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_futex, 1, 0),
      /* 8 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      /* 9 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg1),
      /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FUTEX_WAKE_PRIVATE, 1, 0),
      /* 11 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      /* 12 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg5),
      /* 13 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kFutexTag, 1, 0),
      /* 14 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
      /* 15 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof f / sizeof f[0]), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

// A pause without a system call: `iters` turns of an empty loop.
void spin(uint64_t iters) {
  for (uint64_t i = 0; i < iters; i++) asm volatile("" ::: "memory");
}

int wake_child_main(const WakeChild& c, const std::string& dir) {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 8;
  o.mode = Mode::kOverwrite;
  RingBuffer* rb = RingBuffer::create(o).release();
  if (rb == nullptr) return kExitCreate;
  ConsumerOptions co;
  co.dir = dir;
  co.backend = IoBackendKind::kPwritev;
  co.fsync = false;
  co.watermark_pages = c.watermark_pages;
  // Without the watermark the timer drains while the writer writes; with
  // it, the timer is slow and the writer's wake is what wakes the drain
  // thread.
  co.period_us = c.watermark_pages == 0 ? 1000 : 1000000;
  co.on_message = [](const std::string&) {};
  if (Consumer::create(*rb, co).release() == nullptr) return kExitConsumer;  // never stopped
  static Workload w;
  w.rb = rb;
  for (int i = 0; i < 16; i++) w.one();  // claims the slot: one gettid
  if (w.bad != 0 || rb->current_cpu() < 0) return kExitWarmup;
  const uint32_t cpu = static_cast<uint32_t>(rb->current_cpu());
  // About 300 us of spinning, measured now (no clock read under the filter).
  uint64_t per_ms = 0;
  {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t n = 1 << 16;
    for (;; n *= 2) {
      spin(n);
      const auto dt = std::chrono::steady_clock::now() - t0;
      if (dt >= std::chrono::milliseconds(5)) {
        per_ms = n * 2 / static_cast<uint64_t>(
                             std::chrono::duration_cast<std::chrono::microseconds>(dt).count() / 1000 + 1);
        break;
      }
    }
  }
  const uint64_t pause = per_ms * 3 / 10 + 1;
  if (c.watermark_pages > 0) {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, nullptr) != 0) return kExitSigaction;
  }
  rlimit core{0, 0};
  setrlimit(RLIMIT_CORE, &core);
  const uint64_t read0 = rb->stats(cpu).read;
  if ((c.watermark_pages > 0 ? install_wake_filter() : install_filter(false)) != 0)
    return kExitFilter;

  // Under the filter. Bursts of about two pages, then a pause in which the
  // drain thread empties the ring and goes back to sleep.
  bool done = false;
  for (int b = 0; b < kMaxBursts && !done; b++) {
    for (int i = 0; i < 48; i++) w.one();
    spin(pause);
    done = c.watermark_pages > 0 ? g_wakes >= kWakes : rb->stats(cpu).read > read0;
  }
  if (w.bad != 0) return kExitWrite;
  if (g_bad_futex) return kExitBadFutex;
  if (!done) return c.watermark_pages > 0 ? kExitNoWake : kExitNoRead;
  return kExitOk;
}

class ConsumerWake : public ::testing::TestWithParam<WakeChild> {};

TEST_P(ConsumerWake, WriterSystemCalls) {
  const WakeChild& c = GetParam();
  char tmpl[] = "/tmp/rbtrace-nosyscall-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
  const std::string dir = tmpl;
  fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) syscall(SYS_exit_group, wake_child_main(c, dir));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  EXPECT_FALSE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
      << "the writer made a system call that is not futex(FUTEX_WAKE_PRIVATE) "
      << (c.watermark_pages ? "" : "(or any, with watermark 0) ") << "(killed by SIGSYS)";
  EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  if (WIFEXITED(status)) {
    EXPECT_EQ(WEXITSTATUS(status), kExitOk) << "see the kExit* codes";
  }
}

INSTANTIATE_TEST_SUITE_P(Stress, ConsumerWake,
                         ::testing::Values(WakeChild{"timer_wakeup_no_syscall", 0}
#ifndef STRESS_TSAN
                                           ,
                                           WakeChild{"watermark_1_only_futex_wake", 1},
                                           WakeChild{"watermark_3_only_futex_wake", 3}
#endif
                                           ),
                         [](const ::testing::TestParamInfo<WakeChild>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
