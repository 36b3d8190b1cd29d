// A storm of swaps without a signal (issue 11, part 6): the owner thread
// blocks every signal and writes sequence numbers flat out; a requester
// swaps its CPU out again and again with swap_cpu_marshalled (which, seeing
// the doorbell blocked, swaps through membarrier), drains the swapped-out
// buffer and resets it. Exact at the end: every sequence number the owner
// was told was written is read exactly once, in order, across the
// generations; every refusal the owner saw is in the counters; per
// generation, entries == read.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/swap.h"
#include "rbtrace_test/stress_common.h"

using namespace rbtrace;

namespace {

Options ring() {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 64;
  o.mode = Mode::kProducerConsumer;
  return o;
}

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;  // increasing [first, last]

void add_to_runs(Runs* runs, uint64_t seq) {
  if (!runs->empty() && runs->back().second + 1 == seq)
    runs->back().second = seq;
  else
    runs->push_back({seq, seq});
}

// Consumes every event of `cpu`, adding the u64 sequence numbers to `runs`;
// false if one is not above the one before.
uint64_t drain(RingBuffer& rb, uint32_t cpu, Runs* runs, bool* ordered) {
  PageEvent e;
  uint64_t n = 0;
  while (rb.consume(cpu, &e) == 0) {
    uint64_t s;
    std::memcpy(&s, e.data, sizeof s);
    if (!runs->empty() && s <= runs->back().second) *ordered = false;
    add_to_runs(runs, s);
    n++;
  }
  return n;
}

}  // namespace

TEST(RemoteSwapStorm, OwnerBlockingEverySignalLosesNothingUnseen) {
  ASSERT_EQ(RingBuffer::membarrier_status(), 0) << "membarrier unavailable here";
  auto live = RingBuffer::create(ring());
  auto spare = RingBuffer::create(ring());
  ASSERT_TRUE(live && spare);
  const double seconds = stress::case_seconds(1.5);

  std::atomic<bool> stop{false}, bound{false};
  uint64_t written = 0, refused = 0, other_errors = 0, last_seq = 0;
  Runs refused_runs;
  uint64_t full = 0;
  std::thread owner([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    ASSERT_EQ(live->bind_thread(1), 0);
    bound.store(true);
    uint64_t seq = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      ++seq;
      const int rc = live->write(&seq, sizeof seq);
      if (rc == 0) {
        written++;
      } else if (rc == -EAGAIN || rc == -EPERM || rc == -ENOSPC || rc == -EBUSY) {
        refused++;
        add_to_runs(&refused_runs, seq);
        if (rc == -ENOSPC || rc == -EBUSY) {
          full++;  // the ring is full until the requester's next swap
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
      } else {
        other_errors++;
      }
      if ((seq & 255) == 0) std::this_thread::yield();  // let the ring drain
    }
    last_seq = seq;
    live->unbind_thread();
  });
  while (!bound.load()) std::this_thread::yield();

  Runs read_runs;
  bool ordered = true;
  uint64_t nread = 0, busy_retries = 0;
  CpuStats retired;  // counters of every swapped-out generation
  uint64_t swaps = 0, remote = 0, busy = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    SwapTrace t;
    const int rc = swap_cpu_marshalled(*live, *spare, 1, std::chrono::milliseconds(200), &t);
    remote += t.remote;
    busy_retries += t.busy;
    if (rc == -EBUSY) {
      busy++;
      continue;
    }
    ASSERT_EQ(rc, 0) << "swap " << swaps;
    EXPECT_EQ(t.signals, 0u) << "a doorbell was rung at an owner that blocks it";
    swaps++;
    const uint64_t n = drain(*spare, 1, &read_runs, &ordered);
    nread += n;
    CpuStats s = spare->stats(1);
    EXPECT_EQ(s.entries, n) << "generation " << swaps;
    retired += s;
    ASSERT_EQ(spare->reset_cpu(1), 0);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop.store(true);
  owner.join();
  nread += drain(*live, 1, &read_runs, &ordered);
  CpuStats total = retired;
  total += live->stats(1);

  EXPECT_EQ(other_errors, 0u);
  EXPECT_GT(swaps, 10u);
  EXPECT_GE(remote, swaps);  // every swap went without a signal
  // What was read is exactly 1..last_seq without the refused ones, in
  // order: the two lists of runs interleave to cover 1..last_seq once.
  EXPECT_TRUE(ordered) << "read out of order (or twice)";
  EXPECT_EQ(nread, written);
  EXPECT_EQ(nread + refused, last_seq);
  uint64_t want = 1;
  size_t i = 0, j = 0;
  while (want <= last_seq) {
    if (i < read_runs.size() && read_runs[i].first == want) {
      want = read_runs[i++].second + 1;
    } else if (j < refused_runs.size() && refused_runs[j].first == want) {
      want = refused_runs[j++].second + 1;
    } else {
      ADD_FAILURE() << "sequence number " << want << " neither read nor refused";
      break;
    }
  }
  EXPECT_EQ(i, read_runs.size());
  EXPECT_EQ(j, refused_runs.size());
  EXPECT_EQ(total.entries, written);
  EXPECT_EQ(total.disabled + total.dropped, refused);
  EXPECT_EQ(total.read, written);
  EXPECT_EQ(live->stats(0).entries, 0u);
  std::printf("remote swap storm: %.1f s, %llu swaps (%llu busy answers inside them), %llu events written, "
              "%llu refused (%llu of them with the ring full)\n",
              seconds, static_cast<unsigned long long>(swaps),
              static_cast<unsigned long long>(busy_retries), static_cast<unsigned long long>(written),
              static_cast<unsigned long long>(refused), static_cast<unsigned long long>(full));
}
