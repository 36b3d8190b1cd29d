// rbtrace/swap.h - marshalling a CPU buffer swap onto the CPU's owner thread
// (snapshot protocol S1..S5, docs/DESIGN.md section 7).
//
// RingBuffer::swap_cpu (S2..S4) must run on the CPU's owner thread with
// every signal blocked, or while nobody owns the slot: that is what makes a
// swap atomic with respect to every writer of the CPU (the owner and its
// signal handlers nest like a stack; the swap nests among them as one more
// "interrupt" that cannot itself be interrupted). swap_cpu_marshalled gets
// it there from any thread:
//
//   S1  the requester posts a request to the CPU's mailbox (one request
//       record whose state word says PENDING; nothing allocates after the
//       mailbox is made) and rings the doorbell: a real-time signal queued
//       to the owner thread (rt_tgsigqueueinfo, si_code SI_QUEUE, a cookie in
//       si_value). The handler, installed with a full sa_mask, takes the
//       request PENDING for each CPU its thread owns (a CAS) and runs S2..S4
//       on the owner. The requester is the owner: it blocks all
//       signals and runs S2..S4 in place. No owner: it claims the slot
//       (RingBuffer::claim_cpu_for) for the duration and runs them itself.
//   S5  the requester waits for the answer (futex) up to the timeout;
//       -EBUSY is retried: 32 times at once (a writer is busy for tens of
//       nanoseconds at a time), then with exponential backoff until the
//       timeout.
//
// The doorbell signal defaults to SIGRTMIN+3 (kDefaultDoorbellOffset) and is
// configurable with install_swap_doorbell before Snapshot::attach (which
// installs it) and the first swap. A handler the application installs for
// that signal afterwards replaces rbtrace's: no doorbell is sent then
// (swap_cpu_marshalled swaps without a signal, or fails with -ENOSYS). A handler
// the application had installed for that signal is saved and chained: a
// signal that is not a doorbell (wrong si_code, pid or cookie) is passed to
// it, with its siginfo and context. SIG_IGN and SIG_DFL are honoured as
// "ignore" (the default action of a real-time signal, termination, is not
// reproduced). The chained handler runs with every signal blocked.
//
// Choosing the number: Linux delivers the lowest-numbered pending signal
// first. An application signal numbered below the doorbell that is pending
// again whenever its handler returns (a fast timer whose handler is slow)
// can keep the doorbell waiting; give the doorbell a lower number than such
// signals.
#pragma once

#include <chrono>
#include <cstdint>

#include "rbtrace/ring_buffer.h"

namespace rbtrace {

// SIGRTMIN + this is the default doorbell. rbtrace-demo's timer uses
// SIGRTMIN+1; glibc reserves the two below SIGRTMIN for itself.
inline constexpr int kDefaultDoorbellOffset = 3;

// Installs the doorbell handler for `signo` (0: SIGRTMIN+3), saving the
// previous action to chain it. Idempotent for the same signal. Any thread,
// not a signal handler. 0; -EINVAL (not a usable signal number); -EBUSY
// (already installed for another signal); -errno from sigaction.
// Snapshot::attach (and create) call it with 0, so that the handler is in
// place before the application's later sigaction calls; swap_cpu_marshalled
// does if nothing is installed yet.
int install_swap_doorbell(int signo = 0);
// The doorbell signal number, or 0 if none is installed.
int swap_doorbell_signal();

// Which ways swap_cpu_marshalled may take to an owner thread.
enum class SwapPath : uint8_t {
  kAuto,    // the doorbell; without a signal (membarrier) when the owner
            // blocks it, or does not answer before the timeout
  kSignal,  // the doorbell only (an owner that blocks it times out)
};

// What one swap_cpu_marshalled call did (optional out-parameter).
struct SwapTrace {
  uint32_t attempts = 0;   // S2..S4 runs asked for (in place or marshalled)
  uint32_t busy = 0;       // of which answered -EBUSY (then retried)
  uint32_t signals = 0;    // doorbells rung
  uint32_t doorbells_pending = 0;  // requests that rang none: a doorbell
                                   // to the owner was still pending
  uint32_t in_place = 0;   // runs done by the requester itself (owner or claim)
  uint32_t not_owner = 0;  // the owner changed under a request: re-routed
  uint32_t remote = 0;     // runs done without a signal (swap_cpu_remote)
  int32_t owner = 0;       // the owner tid last asked (doorbell or not), 0 none
};

// S1..S5: exchanges CPU `cpu`'s buffer between `live` and `spare` on the
// CPU's owner thread (or in place, see above). Any thread except a signal
// handler; may block up to `timeout` (longer only by one bounded swap that
// had already started when the timeout hit). Concurrent requests for the
// same (live, cpu) are served one at a time. Fork-safe: in a child the
// mailboxes start afresh (a pthread_atfork handler), so a request another
// parent thread had in flight at fork() neither blocks the child's swaps
// nor is answered there.
// With SwapPath::kAuto, an owner that blocks the doorbell signal (its mask,
// read from /proc), or that does not answer it before the timeout, is
// swapped without a signal (RingBuffer::swap_cpu_remote, membarrier),
// retried for up to 20 ms more after a timeout.
// Returns 0 (swapped); -EINVAL (bad CPU, or the buffers differ in
// geometry); -EAGAIN (either buffer record-disabled); -EBUSY (a writer or a
// reader was busy on every try until the timeout); -ETIMEDOUT (the owner did
// not answer its doorbell in time and the swap without a signal stayed busy:
// the request is withdrawn, and a later handler run finds it withdrawn and
// does nothing; also when membarrier is not available); -ENOSYS when the
// owner blocks the doorbell and membarrier is not available, or when the
// application replaced the doorbell's handler (SIG_DFL, SIG_IGN or its
// own: checked before every doorbell, none is sent then) and no swap
// without a signal is possible (membarrier, or SwapPath::kSignal)
// (RingBuffer::membarrier_status() says why); -ENOMEM (no mailbox could be
// made); or an install error.
int swap_cpu_marshalled(RingBuffer& live, RingBuffer& spare, uint32_t cpu,
                        std::chrono::milliseconds timeout, SwapTrace* trace = nullptr,
                        SwapPath path = SwapPath::kAuto);

// Forgets the mailboxes of `live` (call before destroying a RingBuffer that
// was swapped with swap_cpu_marshalled, e.g. Snapshot's destructor). The
// memory is kept and reused for the next buffer: a doorbell handler may be
// reading it at any time. Any thread; no request may be in flight for it.
void swap_release_mailboxes(const RingBuffer& live);

}  // namespace rbtrace
