// fork() while another thread is inside swap_cpu_marshalled (issue 9, items 5
// and 10): that thread holds the CPU's mailbox lock (`requesters`) and has a
// request PENDING. In the child only the forking thread exists, so nothing
// would ever release the lock or answer the request; swap.cc's atfork child
// handler must give the child fresh mailboxes.
//
// Deterministic: the CPU's owner blocks the doorbell and waits until it is
// pending. A pending doorbell means the requester has posted its request and
// rung, and it then waits (holding the lock) until the owner answers, which
// the owner does only after the fork.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "rbtrace/rbtrace.h"
#include "rbtrace/swap.h"

using namespace rbtrace;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kCpu = 1;
// What the child allows itself per swap: a claimed or in-place swap takes
// microseconds; the lock held by a parent thread would cost the whole
// timeout (kChildTimeout) and return -ETIMEDOUT.
constexpr auto kChildTimeout = 500ms;
constexpr auto kChildBound = 400ms;

void say(const char* what, int rc, long ms) {
  char buf[160];
  const int n = std::snprintf(buf, sizeof buf, "child: %s: rc %d after %ld ms\n", what, rc, ms);
  if (n > 0) (void)!write(2, buf, static_cast<size_t>(n));
}

// One timed swap in the child; false (and a line on stderr) unless it
// returned 0 within kChildBound.
bool child_swap(RingBuffer& live, RingBuffer& spare, uint32_t cpu, const char* what) {
  const auto t0 = Clock::now();
  const int rc = swap_cpu_marshalled(live, spare, cpu, kChildTimeout);
  const long ms = static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
  if (rc == 0 && Clock::now() - t0 < kChildBound) return true;
  say(what, rc, ms);
  return false;
}

// The child: no other thread, so no doorbell can be answered; the swaps
// must take the in-place paths (claim of the freed slot, then as its owner).
[[noreturn]] void child(RingBuffer& live, RingBuffer& spare) {
  alarm(10);  // a hang kills the child (SIGALRM) instead of ctest
  if (live.cpu_owner(kCpu) != 0) _exit(2);  // ringbuf's atfork freed the slot
  if (!child_swap(live, spare, kCpu, "unowned CPU (claim)")) _exit(3);
  if (!child_swap(live, spare, kCpu, "unowned CPU, again")) _exit(4);
  if (live.bind_thread(kCpu) != 0) _exit(5);
  if (!child_swap(live, spare, kCpu, "owner in place")) _exit(6);
  // The other CPU and a new buffer's mailboxes (the registry) work too.
  if (!child_swap(live, spare, 0, "other CPU")) _exit(7);
  auto live2 = RingBuffer::create(live.options());
  auto spare2 = RingBuffer::create(live.options());
  if (!live2 || !spare2 || !child_swap(*live2, *spare2, kCpu, "new buffer")) _exit(8);
  swap_release_mailboxes(*live2);
  _exit(0);
}

bool doorbell_pending() {
  sigset_t s;
  sigpending(&s);
  return sigismember(&s, swap_doorbell_signal()) == 1;
}

void block_doorbell(bool block) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, swap_doorbell_signal());
  pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &s, nullptr);
}

TEST(SwapFork, MailboxLockHeldAtForkDoesNotHangTheChild) {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  auto live = RingBuffer::create(o);
  auto spare = RingBuffer::create(o);
  ASSERT_TRUE(live && spare);
  ASSERT_EQ(install_swap_doorbell(0), 0);

  // The owner of kCpu: binds, blocks the doorbell, reports when a doorbell
  // is pending, and answers it only when released.
  std::atomic<int> owner_state{0};  // 1 bound, 2 doorbell pending, -1 failed
  std::atomic<bool> release{false};
  std::thread owner([&] {
    if (live->bind_thread(kCpu) != 0) {
      owner_state.store(-1);
      return;
    }
    block_doorbell(true);
    owner_state.store(1);
    const auto until = Clock::now() + 10s;
    while (!doorbell_pending() && Clock::now() < until) std::this_thread::sleep_for(100us);
    owner_state.store(doorbell_pending() ? 2 : -1);
    while (!release.load()) std::this_thread::sleep_for(1ms);
    block_doorbell(false);  // the doorbell handler runs here: S2..S4
    live->unbind_thread();
  });
  while (owner_state.load() == 0) std::this_thread::sleep_for(100us);
  ASSERT_EQ(owner_state.load(), 1);

  int parent_rc = 1;
  // The doorbell path only: the owner blocks the doorbell on purpose.
  std::thread requester(
      [&] { parent_rc = swap_cpu_marshalled(*live, *spare, kCpu, 30s, nullptr, SwapPath::kSignal); });
  while (owner_state.load() == 1) std::this_thread::sleep_for(100us);
  ASSERT_EQ(owner_state.load(), 2) << "the doorbell never arrived";

  // Now the requester holds kCpu's mailbox lock and its request is PENDING.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) child(*live, *spare);

  int status = 0;
  pid_t got = 0;
  const auto until = Clock::now() + 20s;
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < until)
    std::this_thread::sleep_for(1ms);
  if (got == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "the child hung";
  } else {
    ASSERT_EQ(got, pid);
    EXPECT_TRUE(WIFEXITED(status)) << "the child died of signal "
                                   << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                   << " (SIGALRM: it hung)";
    if (WIFEXITED(status)) {
      EXPECT_EQ(WEXITSTATUS(status), 0) << "see the child's line above";
    }
  }

  // The parent's request is still served once the owner lets the doorbell in.
  release.store(true);
  requester.join();
  owner.join();
  EXPECT_EQ(parent_rc, 0);
  swap_release_mailboxes(*live);
}

}  // namespace
