// ring_buffer.cc - the RingBuffer object: construction and destruction, the
// control calls (per-CPU record disable/enable, the test hook), the swap of
// a CPU buffer (S2..S4) and reset, and the stats. Beside it: slots.cc (CPU
// slots, thread bindings, fork), reader.cc (R1..R4, the iterator),
// writer.cc (the writer's refusals, the general W6, discard); the inline
// writer is rbtrace/detail/writer.h.
#include "rbtrace/ring_buffer.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "ring_buffer_internal.h"

namespace rbtrace {

using namespace detail;

std::atomic<TestHook> detail::test_hook{nullptr};  // set_test_hook
std::atomic<uint32_t> detail::swaps_in_flight{0};
std::atomic<bool> detail::forking{false};

namespace {

// The system's page size, read once when the library is loaded (before any
// claim, so a handler only reads it). A data page is mapped and unmapped on
// its own, so it takes at least one system page: on a 16 or 64 KiB-page
// kernel a 4 KiB data page has a system page of its own.
// Read on first use, not by a dynamic initializer: a ring may be made
// before this file's initializers ran (the process ring of
// rbtrace::autostart, made by a constructor of another object file). No
// lock: every caller computes the same value (sysconf(_SC_PAGESIZE) reads
// the auxiliary vector; no system call), relaxed is enough.
std::atomic<size_t> g_sys_page_cache{0};
size_t sys_page() {
  size_t v = g_sys_page_cache.load(std::memory_order_relaxed);
  if (__builtin_expect(v == 0, 0)) {
    const long p = sysconf(_SC_PAGESIZE);
    v = p > 0 ? static_cast<size_t>(p) : size_t{4096};
    g_sys_page_cache.store(v, std::memory_order_relaxed);
  }
  return v;
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }
size_t page_stride(uint32_t size) { return round_up(size, sys_page()); }

void* map_zeroed(size_t bytes) {
  // MAP_POPULATE: pre-faulted, so that the writer takes no page faults.
  // errno kept: a claim may run in a signal handler.
  const int saved = errno;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  errno = saved;
  return p == MAP_FAILED ? nullptr : p;
}

// The CpuBuffer, then its npages + 1 descriptors, 64-byte aligned.
constexpr size_t kDescOffset = (sizeof(CpuBuffer) + 63) & ~size_t{63};
// Bytes of a CPU buffer's own mapping before its pages: the CpuBuffer and
// its descriptors, rounded up to the system page.
size_t cpu_meta_bytes(uint32_t npages) {
  return round_up(kDescOffset + (npages + 1ULL) * sizeof(BufferPage), sys_page());
}

}  // namespace

DataPage* detail::alloc_page(uint32_t size) {
  return static_cast<DataPage*>(map_zeroed(page_stride(size)));
}

void detail::free_page(DataPage* p, uint32_t size) {
  if (p) munmap(p, page_stride(size));
}

// One mapping: the CpuBuffer, its descriptors, then its pages, each at a
// multiple of the system page. Every piece is unmapped on its own later
// (free_cpu_buffer): the pages may have been traded away to readers by
// then, and others traded in. Async-signal-safe (a claim maps in a
// handler): one mmap, placement new, plain stores.
CpuBuffer* RingBuffer::make_cpu_buffer(uint32_t c) {
  const uint32_t n = opts_.pages_per_cpu;
  const size_t meta = cpu_meta_bytes(n), stride = page_stride(opts_.page_size);
  auto* base = static_cast<unsigned char*>(map_zeroed(meta + (n + 1ULL) * stride));
  if (!base) return nullptr;
  static_assert(alignof(CpuBuffer) <= 4096 && alignof(BufferPage) <= 64);
  CpuBuffer* cb = new (base) CpuBuffer;
  cb->pages = new (base + kDescOffset) BufferPage[n + 1];
  cb->cpu = c;
  cb->page_size = opts_.page_size;
  cb->npages = n;
  cb->capacity = opts_.page_size - kPageHeaderSize;
  cb->overwrite = opts_.mode == Mode::kOverwrite;
  cb->clock = clock_;
  for (uint32_t i = 0; i <= n; i++) {
    cb->pages[i].index = i;
    cb->pages[i].page = reinterpret_cast<DataPage*>(base + meta + size_t{i} * stride);
  }
  init_cpu_buffer(cb);
  cb->buffer.store(this, std::memory_order_relaxed);  // published by the slot's release CAS
  return cb;
}

// A buffer make_cpu_buffer just made and nobody saw (a claim that lost the
// race to publish one): its pages are all its own, in one mapping.
static void unmap_new_cpu_buffer(CpuBuffer* cb) {
  const uint32_t n = cb->npages;
  munmap(cb, cpu_meta_bytes(n) + (n + 1ULL) * page_stride(cb->page_size));
}

void detail::free_cpu_buffer(CpuBuffer* cb) {
  if (!cb) return;
  const uint32_t n = cb->npages;
  const size_t stride = page_stride(cb->page_size);
  // The pages it holds now, unmapped in runs of adjacent ones, in index
  // order: the pages never traded away are one run (one call, and no
  // mapping split page by page); a traded-in page is a run of its own. No
  // allocation (a destructor).
  uintptr_t run = 0, end = 0;
  for (uint32_t i = 0; i <= n; i++) {
    const auto p = reinterpret_cast<uintptr_t>(cb->pages[i].page);
    if (!p) continue;
    if (p == end) {
      end += stride;
      continue;
    }
    if (run) munmap(reinterpret_cast<void*>(run), end - run);
    run = p;
    end = p + stride;
  }
  if (run) munmap(reinterpret_cast<void*>(run), end - run);
  for (uint32_t i = 0; i <= n; i++) cb->pages[i].~BufferPage();
  cb->~CpuBuffer();
  munmap(cb, cpu_meta_bytes(n));
}

namespace {

std::atomic<uint32_t> next_id{1};

bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

}  // namespace

// ===========================================================================
// Construction
// ===========================================================================

std::unique_ptr<RingBuffer> RingBuffer::create(const Options& o, Error* err) {
  auto fail = [&](int code, std::string msg) -> std::unique_ptr<RingBuffer> {
    if (err) {
      err->code = code;
      err->message = std::move(msg);
    }
    return nullptr;
  };
  if (o.ncpus == 0 || o.ncpus > kMaxCpus)
    return fail(EINVAL, "ncpus must be 1.." + std::to_string(kMaxCpus) + ", got " +
                            std::to_string(o.ncpus));
  if (!is_pow2(o.page_size) || o.page_size < kMinPageSize || o.page_size > kMaxPageSize)
    return fail(EINVAL, "page_size must be a power of two from 4096 to 1048576, got " +
                            std::to_string(o.page_size));
  if (o.pages_per_cpu < 2 || o.pages_per_cpu > kMaxPagesPerCpu)
    return fail(EINVAL, "pages_per_cpu must be 2.." + std::to_string(kMaxPagesPerCpu) +
                            ", got " + std::to_string(o.pages_per_cpu));
  const uint64_t per_slot = (o.pages_per_cpu + 1ULL) * o.page_size;
  const uint64_t bytes = static_cast<uint64_t>(o.ncpus) * per_slot;
  if (bytes > kMaxBytesPerBuffer)
    return fail(EINVAL, "too many pages: " + std::to_string(bytes) +
                            " bytes requested, the limit is " +
                            std::to_string(kMaxBytesPerBuffer));
  if (o.max_cpus != 0 && (o.max_cpus < o.ncpus || o.max_cpus > kMaxCpus))
    return fail(EINVAL, "max_cpus must be 0 (the default) or ncpus.." + std::to_string(kMaxCpus) +
                            " (ncpus is " + std::to_string(o.ncpus) + "), got " +
                            std::to_string(o.max_cpus));
  const uint64_t budget = o.max_buffer_bytes == 0
                              ? kMaxBytesPerBuffer
                              : std::min<uint64_t>(o.max_buffer_bytes, kMaxBytesPerBuffer);
  if (o.max_buffer_bytes != 0 && budget < bytes)
    return fail(EINVAL, "max_buffer_bytes " + std::to_string(o.max_buffer_bytes) +
                            " does not pay for the " + std::to_string(o.ncpus) +
                            " slots made at once (" + std::to_string(bytes) + " bytes)");
  const uint32_t limit = static_cast<uint32_t>(std::min<uint64_t>(
      o.max_cpus != 0 ? o.max_cpus : std::max(kDefaultMaxCpus, o.ncpus), budget / per_slot));
  if (o.mode != Mode::kOverwrite && o.mode != Mode::kProducerConsumer)
    return fail(EINVAL, "unknown mode");
  if (static_cast<unsigned>(o.clock) > static_cast<unsigned>(ClockKind::kRealtime))
    return fail(EINVAL, "unknown clock");

  std::unique_ptr<RingBuffer> rb(new (std::nothrow) RingBuffer());
  if (!rb) return fail(ENOMEM, "out of memory");
  rb->opts_ = o;
  rb->clock_ = Clock(o.clock);
  if (rb->clock_.kind() == ClockKind::kCounter) (void)counter_calibration();
  const uint32_t cap = o.page_size - kPageHeaderSize;
  // An event must fit a page with a time event in front of it.
  rb->max_payload_ = (cap - kTimeEventSize - 8) & ~3u;
  rb->max_payload_span_ = rb->max_payload_ - kMinPayload;
  static_assert(kMinMaxPayload == ((kMinPageSize - kPageHeaderSize - kTimeEventSize - 8) & ~3u));
  // W1's test sends every write to the other clock's copy of the fast path
  // when the clock is not the counter (the counter's reads it directly).
  // Every bit a CPU buffer's word can hold (OFF, kSwapping, the saturating
  // count) is outside kOtherClock: W1's `flags == kOtherClock` is exact.
  static_assert(((CpuBuffer::kRecordOff | CpuBuffer::kSwapping | (CpuBuffer::kSwapping - 1)) &
                 kOtherClock) == 0);
  if (rb->clock_.kind() != ClockKind::kCounter)
    rb->record_disabled_.store(kOtherClock, std::memory_order_relaxed);
  rb->opts_.max_cpus = limit;  // options() tells the limit in force
  rb->limit_ = limit;
  // Every per-slot array is sized to the limit at once (a claim in a
  // signal handler cannot allocate); only a slot's pages wait for a claim.
  rb->buffers_.reset(new (std::nothrow) std::atomic<CpuBuffer*>[limit]);
  rb->owners_.reset(new (std::nothrow) std::atomic<int32_t>[limit]);
  rb->ctl_.reset(new (std::nothrow) std::atomic<uint32_t>[limit]);
  rb->names_.reset(new (std::nothrow) NameRecord[kThreadNames]);
  rb->slot_refused_.reset(new (std::nothrow) SlotRefused[limit]);
  rb->handback_.reset(new (std::nothrow) HandBack[limit]);
  rb->handback_on_.reset(new (std::nothrow) std::atomic<uint32_t>[limit]);
  if (!rb->buffers_ || !rb->owners_ || !rb->ctl_ || !rb->names_ || !rb->slot_refused_ ||
      !rb->handback_ || !rb->handback_on_)
    return fail(ENOMEM, "out of memory");
  for (uint32_t c = 0; c < limit; c++) {
    rb->buffers_[c].store(nullptr, std::memory_order_relaxed);
    rb->owners_[c].store(0, std::memory_order_relaxed);
    rb->ctl_[c].store(0, std::memory_order_relaxed);
    rb->slot_refused_[c].count.store(0);
    rb->slot_refused_[c].taken.store(0, std::memory_order_relaxed);
    rb->handback_on_[c].store(0, std::memory_order_relaxed);
  }
  (void)membarrier_status();  // registers, once per process
  for (uint32_t c = 0; c < o.ncpus; c++) {
    CpuBuffer* cb = rb->make_cpu_buffer(c);
    if (!cb) return fail(ENOMEM, "cannot map " + std::to_string(bytes) + " bytes of pages");
    // In the slot at once: the destructor frees what the slots hold.
    rb->buffers_[c].store(cb, std::memory_order_relaxed);
    rb->nslots_.store(c + 1, std::memory_order_relaxed);  // published with the ring
  }
  pthread_once(&exit_key_once, make_exit_key);
  rb->id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  mark_live(rb->id_);
  {
    std::lock_guard<std::mutex> g(registry_mutex());
    registry()[rb->id_] = rb.get();
  }
  return rb;
}

// Links pages[0..npages-1] into a ring with pages[0] as head, tail and
// commit page, and pages[npages] as the reader page. Only with no writer and
// no reader on cb.
void RingBuffer::init_cpu_buffer(CpuBuffer* cb) {
  const uint32_t n = cb->npages;
  for (uint32_t i = 0; i <= n; i++) {
    BufferPage* p = &cb->pages[i];
    p->write.store(0);
    p->entries.store(0);
    p->real_end.store(cb->capacity);
    p->refused_mark.store(0);
    p->push_mark.store(0);
    p->push_seq.store(kNoPushSeq);
    p->page->time_stamp = 0;
    p->page->commit = 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    BufferPage* p = &cb->pages[i];
    p->next.store(link(&cb->pages[(i + 1) % n], kPageNormal), std::memory_order_relaxed);
    p->prev.store(&cb->pages[(i + n - 1) % n], std::memory_order_relaxed);
  }
  // The page before the head points at it with kPageHead.
  cb->pages[n - 1].next.store(link(&cb->pages[0], kPageHead), std::memory_order_relaxed);
  BufferPage* rp = &cb->pages[n];
  rp->next.store(link(&cb->pages[0], kPageNormal), std::memory_order_relaxed);
  rp->prev.store(&cb->pages[n - 1], std::memory_order_relaxed);
  cb->tail_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->commit_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->head_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->reader_page = rp;
  cb->reader_read = 0;
  cb->read_stamp = 0;
  cb->write_stamp.store(0);
  cb->stamp_pos.store(~0ULL);
  cb->tail_seq.store(0);
  cb->in_w5.store(0);
  cb->entries.store(0);
  cb->bytes.store(0);
  cb->overrun.store(0);
  cb->commit_overrun.store(0);
  cb->dropped.store(0);
  cb->nested_dropped.store(0);
  cb->discarded.store(0);
  cb->read.store(0, std::memory_order_relaxed);
  cb->last_overrun = 0;
  cb->last_refused = 0;
  cb->lost_events = 0;
}

RingBuffer::~RingBuffer() {
  if (handback_ && handback_on_) set_recorded(false);  // closes what is still queued
  {
    std::lock_guard<std::mutex> g(registry_mutex());
    registry().erase(id_);
  }
  mark_dead(id_);
  // The destroying thread's own binding goes now; other threads' bindings
  // are pruned when their tables fill up (add_binding).
  ThreadState& t = tls_state;
  ChangingBindings changing;  // a handler's claim must not append meanwhile
  for (int i = t.count - 1; i >= 0; i--)
    if (t.bindings[i].rb_id == id_) remove_binding_at(t, i);
  // The CPU buffers in our slots are ours, whichever RingBuffer made them
  // (swap_cpu exchanges them).
  if (buffers_) {
    for (uint32_t c = 0; c < limit_; c++) free_cpu_buffer(buffers_[c].load(std::memory_order_relaxed));
  }
}

// ===========================================================================
// Control
// ===========================================================================

CpuBuffer* RingBuffer::cpu_buffer(uint32_t cpu) const {
  if (cpu >= limit_) return nullptr;
  // acquire: pairs with the release stores in swap_cpu and with the one
  // that publishes a slot's new buffer (slot_buffer).
  return buffers_[cpu].load(std::memory_order_acquire);
}

// Slot `c`'s buffer, mapped now if the slot has none. Any thread and any
// signal handler (async-signal-safe): whoever publishes first wins, with a
// CAS from null; a loser unmaps what it made and takes the winner's. So a
// slot is mapped once, whether by its claimer, reserve_cpus or both.
CpuBuffer* RingBuffer::slot_buffer(uint32_t c) {
  // acquire: pairs with the release CAS below (another publisher's).
  if (CpuBuffer* cb = buffers_[c].load(std::memory_order_acquire)) return cb;
  CpuBuffer* mine = make_cpu_buffer(c);
  if (!mine) return nullptr;
  CpuBuffer* expected = nullptr;
  // acq_rel: release publishes the initialized buffer to cpu_buffer's
  // acquire load (readers, stats, swaps) and to the acquire load above;
  // acquire, on failure, makes the winner's buffer ours to use.
  if (buffers_[c].compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                          std::memory_order_acquire))
    return mine;
  unmap_new_cpu_buffer(mine);
  return expected;
}

void RingBuffer::grow_slots_to(uint32_t n) {
  for (uint32_t cur = ncpus(); cur < n;) {
    // acq_rel: release pairs with the acquire load in ncpus(), acquire with
    // the CAS of whoever made a slot before (as in claim_free_cpu); on
    // failure `cur` is the count another made.
    nslots_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                  std::memory_order_acquire);
  }
}

int RingBuffer::reserve_cpus(uint32_t n) {
  if (n > limit_) return -EINVAL;
  grow_slots_to(n);
  for (uint32_t c = 0; c < n; c++)
    if (!slot_buffer(c)) return -ENOMEM;
  return 0;
}

// The per-CPU disable calls act on the slot, not on whichever buffer they
// happened to load: a swap (S3) sets kSwapping on both buffers with a CAS
// from "no bit set" and clears it after S4, so
//  - a change whose CAS comes first in the word's modification order makes
//    the swap's CAS fail (-EAGAIN: the CPU is disabled, or about to be);
//  - a change that finds kSwapping waits for the swap to finish;
//  - a change whose CAS reads the word after the swap cleared kSwapping
//    (acquire, pairing with the swap's release fetch_and) sees the swap's
//    S4 store of buffers_[cpu] and re-checks the slot: if its buffer moved
//    away, it undoes the change there and applies it to the slot's new
//    buffer.
// So a disable lands on the buffer in the slot once the call returns, and
// while the count is not 0 no swap can move it: its enable finds it there.
int RingBuffer::change_cpu_disable(uint32_t cpu, int add, int off) {
  if (cpu >= ncpus()) return -EINVAL;
  // The count lives in the CPU buffer. A slot not mapped yet: a disable or
  // OFF maps it (it must land somewhere a later writer meets); an enable
  // or ON has nothing to undo there.
  if (!cpu_buffer(cpu)) {
    if (add < 0 || off < 0) return 0;
    if (!slot_buffer(cpu)) return -ENOMEM;
  }
  // Announce the change to swaps of this slot (seq_cst, a Dekker pair with
  // the swap's kSwapping CAS and its load of ctl_): a swap whose load comes
  // after this sees us and refuses (-EBUSY); one whose load came before has
  // already set kSwapping, which we see below, or cleared it after its S4,
  // which the re-check of the slot below sees. So once the CAS succeeds,
  // the buffer it changed is the one in the slot.
  ctl_[cpu].fetch_add(1, std::memory_order_seq_cst);
  for (uint32_t spins = 0;; spins++) {
    // seq_cst (the three loads): they follow our ctl_ add in the single
    // total order, so they see at least a swap's kSwapping CAS that came
    // before our add; the word's load pairs with swap_cpu's seq_cst
    // fetch_and clearing kSwapping (after its S4 slot stores), so the
    // re-load of the slot then sees where the swap put the buffer.
    CpuBuffer* cb = buffers_[cpu].load(std::memory_order_seq_cst);
    uint32_t old = cb->record_disabled.load(std::memory_order_seq_cst);
    // seq_cst: the slot's re-load, as above; pairs with swap_cpu's S4 store
    // (ordered before its seq_cst clearing of kSwapping).
    const CpuBuffer* again = buffers_[cpu].load(std::memory_order_seq_cst);
    if ((old & CpuBuffer::kSwapping) || again != cb) {
      if (spins > 64) sched_yield();
      continue;
    }
    const uint32_t count = old & ~(CpuBuffer::kRecordOff | CpuBuffer::kSwapping);
    uint32_t nw = old;
    if (add > 0 && count < CpuBuffer::kSwapping - 1) nw = old + 1;
    if (add < 0 && count > 0) nw = old - 1;  // an unmatched enable does nothing
    if (off > 0) nw |= CpuBuffer::kRecordOff;
    if (off < 0) nw &= ~CpuBuffer::kRecordOff;
    if (nw == old) break;
    // relaxed: only tests set it.
    if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
      h(TestHookPoint::kDisableBeforeCas, *this, cpu);
    // seq_cst: see above; a swap that set kSwapping since our load makes it
    // fail, and we look again.
    if (cb->record_disabled.compare_exchange_strong(old, nw, std::memory_order_seq_cst)) break;
  }
  // seq_cst: pairs with swap_cpu's load of ctl_ (a swap after this may
  // run; our change is done).
  ctl_[cpu].fetch_sub(1, std::memory_order_seq_cst);
  return 0;
}

int RingBuffer::record_disable_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 1, 0); }
int RingBuffer::record_enable_cpu(uint32_t cpu) { return change_cpu_disable(cpu, -1, 0); }
int RingBuffer::record_off_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 0, 1); }
int RingBuffer::record_on_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 0, -1); }

void set_test_hook(TestHook h) {
  test_hook.store(h, std::memory_order_relaxed);  // only tests: no ordering
}

// ===========================================================================
// Swap and reset
// ===========================================================================

namespace {

int register_membarrier() {
  if (const char* e = std::getenv("RBTRACE_MEMBARRIER"); e && std::strcmp(e, "0") == 0)
    return -ECANCELED;
  const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0) return -errno;
  if (!(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return -EINVAL;
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) return -errno;
  return 0;
}

}  // namespace

// The requester's half of the remote swap's Dekker pair (docs/DESIGN.md
// section 7, "Without a signal"), with S3's marks set and both reader locks
// held. The owner's half is W2 (committing++, a plain store) then W3 (load
// of the back-pointer), with only a compiler barrier between them.
//   M1: move a's back-pointer away (what W3 reads).
//   M2: membarrier(PRIVATE_EXPEDITED): every thread of the process that is
//       running executes a full barrier, and one that is not has one at
//       its next context switch. So an owner's W2 before its barrier is
//       visible to M3, and an owner's W3 after it sees M1.
//   M3: read committing on both buffers: 0 means no writer is inside and
//       any that enters from now on refuses at W3. Else put M1 back (the
//       owner may have refused at W3 meanwhile; its refusal is counted) and
//       report busy.
//   M3b: a second membarrier once M3 saw 0: the writer that left last may
//       have made its leave (W6's cmpxchg) visible before its commit index
//       (a store-release orders what came before it, not what comes after:
//       on arm64 the two stores may be seen in either order); after the
//       barrier on its CPU both are, so the dump reads the final index.
// relaxed throughout: the ordering is M2's and M3b's, which C++ does not
// model. Returns 0 (quiescent), -EBUSY (put back), or membarrier's -errno.
static int remote_quiescent(RingBuffer& self, RingBuffer& other, CpuBuffer* a, CpuBuffer* b) {
  a->buffer.store(&other, std::memory_order_relaxed);  // M1
  // relaxed: only tests set it.
  if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
    h(TestHookPoint::kRemoteMarked, self, a->cpu);
  int rc = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : -errno;  // M2
  if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
    h(TestHookPoint::kRemoteFenced, self, a->cpu);
  if (rc == 0 && (a->committing() != 0 || b->committing() != 0)) rc = -EBUSY;  // M3
  if (rc == 0 && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)  // M3b
    rc = -errno;
  if (rc != 0) a->buffer.store(&self, std::memory_order_relaxed);  // put back
  return rc;
}

int RingBuffer::membarrier_status() {
  static const int status = register_membarrier();  // once per process
  return status;
}

int RingBuffer::swap_cpu(RingBuffer& other, uint32_t cpu) {
  return swap_cpu_impl(other, cpu, false);
}

uint64_t RingBuffer::take_slot_refused(uint32_t cpu) {
  if (cpu >= limit_) return 0;
  SlotRefused& s = slot_refused_[cpu];
  const uint64_t now = s.count.load();
  // relaxed: plain counters; the CAS hands each part of the count to one
  // taker.
  uint64_t was = s.taken.load(std::memory_order_relaxed);
  while (now > was) {
    if (s.taken.compare_exchange_weak(was, now, std::memory_order_relaxed,
                                      std::memory_order_relaxed))
      return now - was;
  }
  return 0;
}

int RingBuffer::swap_cpu_remote(RingBuffer& other, uint32_t cpu) {
  if (const int st = membarrier_status(); st != 0) return st;
  return swap_cpu_impl(other, cpu, true);
}

int RingBuffer::swap_cpu_impl(RingBuffer& other, uint32_t cpu, bool remote) {
  // S2: the kernel's order: presence and geometry, then disabled state.
  if (cpu >= ncpus() || cpu >= other.ncpus() || &other == this) return -EINVAL;
  if (opts_.page_size != other.opts_.page_size ||
      opts_.pages_per_cpu != other.opts_.pages_per_cpu || opts_.mode != other.opts_.mode ||
      clock_.kind() != other.clock_.kind())
    return -EINVAL;
  // acquire (both): pairs with the release CAS that published a slot's
  // first buffer (slot_buffer) and with S4's release stores, so a buffer
  // just mapped by its claimer is seen initialized here.
  CpuBuffer* a = buffers_[cpu].load(std::memory_order_acquire);
  CpuBuffer* b = other.buffers_[cpu].load(std::memory_order_acquire);
  if (!a || !b) return -EINVAL;  // a slot not mapped yet (reserve_cpus)
  if ((record_disabled_.load(std::memory_order_relaxed) & ~kOtherClock) ||
      (other.record_disabled_.load(std::memory_order_relaxed) & ~kOtherClock))
    return -EAGAIN;
  // S3: mark both buffers kSwapping, each with a CAS from 0: a buffer that
  // is record-disabled (count, OFF) or being swapped by someone else fails
  // it (-EAGAIN). While the bit is set W1 refuses and record_disable_cpu &
  // co. wait (change_cpu_disable). acquire: pairs with the release half of
  // change_cpu_disable's CAS, so a change that came first makes ours fail.
  // seq_cst throughout S3 and the clearing: the Dekker pairs with
  // change_cpu_disable (ctl_) and fork_prepare (forking).
  swaps_in_flight.fetch_add(1, std::memory_order_seq_cst);
  if (forking.load(std::memory_order_seq_cst)) {
    // seq_cst: pairs with fork_prepare's load of swaps_in_flight (Dekker).
    swaps_in_flight.fetch_sub(1, std::memory_order_seq_cst);
    return -EBUSY;  // a fork is being prepared: retried after it
  }
  uint32_t za = 0, zb = 0;
  // seq_cst (both CASes): pair with change_cpu_disable's CAS of the word and
  // its ctl_ add (Dekker), as said above.
  if (!a->record_disabled.compare_exchange_strong(za, CpuBuffer::kSwapping,
                                                  std::memory_order_seq_cst)) {
    // seq_cst: pairs with fork_prepare's load of swaps_in_flight.
    swaps_in_flight.fetch_sub(1, std::memory_order_seq_cst);
    return -EAGAIN;
  }
  // seq_cst: as a's CAS above (change_cpu_disable on the other ring's slot).
  if (!b->record_disabled.compare_exchange_strong(zb, CpuBuffer::kSwapping,
                                                  std::memory_order_seq_cst)) {
    // seq_cst: pairs with change_cpu_disable's seq_cst loads of the word.
    a->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_seq_cst);
    // seq_cst: pairs with fork_prepare's load of swaps_in_flight.
    swaps_in_flight.fetch_sub(1, std::memory_order_seq_cst);
    return -EAGAIN;
  }
  signal_fence();
  // Then refuse if a write is in progress on either: the busy state is
  // committing != 0, which covers W2..W6 with every W5 retry and every turn
  // of W6's loop.
  int ret = 0;
  int la = 0, lb = 0;
  // seq_cst (ctl_): pairs with change_cpu_disable's seq_cst fetch_add of
  // ctl_ before it loads record_disabled (a Dekker pair with our CAS of
  // kSwapping above: one of us sees the other). seq_cst (buffers_): pairs
  // with another swap's release stores of the slots (S4), in the same
  // total order as the kSwapping words.
  if (ctl_[cpu].load(std::memory_order_seq_cst) != 0 ||
      other.ctl_[cpu].load(std::memory_order_seq_cst) != 0) {
    ret = -EBUSY;  // a disable/enable of this slot is under way
  } else if (buffers_[cpu].load(std::memory_order_seq_cst) != a ||
             other.buffers_[cpu].load(std::memory_order_seq_cst) != b) {
    ret = -EBUSY;  // another swap moved one of them since we loaded it (misuse)
  } else if (!remote && (a->committing() != 0 || b->committing() != 0)) {
    ret = -EBUSY;  // (remote: checked below, after the barrier)
  } else if (!a->reader_lock.compare_exchange_strong(
                 la, 1, std::memory_order_acquire,  // pairs with unlock_reader
                 std::memory_order_relaxed)) {
    ret = -EBUSY;
  } else if (!b->reader_lock.compare_exchange_strong(
                 lb, 1, std::memory_order_acquire,  // pairs with unlock_reader
                 std::memory_order_relaxed)) {
    unlock_reader(a);
    ret = -EBUSY;
  } else if (remote && (ret = remote_quiescent(*this, other, a, b)) != 0) {
    unlock_reader(b);
    unlock_reader(a);
    // -EBUSY: a writer is inside; a->buffer was put back as it was.
  } else {
    // S4 (remote: M4): exchange the slots and the back-pointers. release:
    // pairs with cpu_buffer's acquire load of the slot (a reader sees the
    // buffer's state) and with count_slot_refusal's acquire load (a writer
    // that refreshes its binding after a remote swap).
    buffers_[cpu].store(b, std::memory_order_release);
    other.buffers_[cpu].store(a, std::memory_order_release);
    a->buffer.store(&other, std::memory_order_relaxed);  // read by the owner (W3); remote: again
    // release: pairs with W3's load under TSan (kW3Order, local.h): the
    // owner's writes into b come after our work on it (its reset as the
    // spare) also in the C++ model; on hardware M2/M3b or the doorbell
    // order it.
    b->buffer.store(this, std::memory_order_release);
    // The owner's cached binding (W0), when the owner is the caller (not
    // after a remote swap: the owner's first write refreshes its own).
    refresh_binding(id_, cpu, b);
    refresh_binding(other.id_, cpu, a);
    // release: pairs with the acquire load in swaps(); a reader that sees
    // the count sees the slots exchanged.
    swaps_.fetch_add(1, std::memory_order_release);
    // release: the same, for the other ring's swaps().
    other.swaps_.fetch_add(1, std::memory_order_release);
    unlock_reader(b);
    unlock_reader(a);
  }
  signal_fence();
  // seq_cst: change_cpu_disable, seeing the bit clear, then sees the S4
  // stores above in its re-check of the slot.
  a->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_seq_cst);
  b->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_seq_cst);
  // seq_cst: pairs with fork_prepare's load of swaps_in_flight.
  swaps_in_flight.fetch_sub(1, std::memory_order_seq_cst);
  return ret;
}

int RingBuffer::reset_cpu(uint32_t cpu) {
  CpuBuffer* cb = cpu_buffer(cpu);
  if (!cb) return -EINVAL;
  CpuBuffer* locked = lock_reader(cpu);
  if (!locked) return 0;  // cannot be: a mapped slot stays mapped
  init_cpu_buffer(locked);
  unlock_reader(locked);
  return 0;
}

// ===========================================================================
// Stats
// ===========================================================================

CpuStats detail::CpuBuffer::stats() const {
  CpuStats s;
  s.entries = entries.load();
  s.bytes = bytes.load();
  s.overrun = overrun.load();
  s.commit_overrun = commit_overrun.load();
  s.dropped = dropped.load();
  s.nested_dropped = nested_dropped.load();
  // disabled: counted in the slot (RingBuffer::stats, count_slot_refusal).
  s.discarded = discarded.load();
  s.read = read.load(std::memory_order_relaxed);
  return s;
}

CpuStats RingBuffer::stats(uint32_t cpu) const {
  if (cpu >= limit_) return CpuStats{};
  CpuBuffer* cb = cpu_buffer(cpu);
  CpuStats s = cb ? cb->stats() : CpuStats{};  // not mapped yet: nothing written
  {
    // The slot's (count_slot_refusal), not yet taken. relaxed: counters.
    const uint64_t n = slot_refused_[cpu].count.load();
    const uint64_t t = slot_refused_[cpu].taken.load(std::memory_order_relaxed);
    s.disabled += n > t ? n - t : 0;
  }
  return s;
}

}  // namespace rbtrace
