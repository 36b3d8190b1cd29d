// reader.cc - the reader: R1..R4 of docs/DESIGN.md section 5 (find the
// head, splice the reader page in for it, hand out pages and events with
// the count of what was lost before them), the per-CPU reader lock, and the
// non-consuming Iterator.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "rbtrace/ring_buffer.h"
#include "ring_buffer_internal.h"

namespace rbtrace {

using namespace detail;

// ===========================================================================
// Reader
// ===========================================================================

DataPage* RingBuffer::alloc_read_page() const { return alloc_page(opts_.page_size); }
void RingBuffer::free_read_page(DataPage* p) const { free_page(p, opts_.page_size); }

CpuBuffer* RingBuffer::lock_reader(uint32_t cpu) {
  for (int spins = 0;; spins++) {
    CpuBuffer* cb = cpu_buffer(cpu);
    if (!cb) return nullptr;  // a slot not mapped yet: nothing to read
    int expected = 0;
    // acquire: pairs with the release in unlock_reader; readers serialize.
    if (cb->reader_lock.compare_exchange_weak(expected, 1, std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
      // A swap may have moved cb out of this slot before we locked it.
      if (cpu_buffer(cpu) == cb) return cb;
      unlock_reader(cb);
    }
    if (spins > 64) sched_yield();
  }
}

void RingBuffer::unlock_reader(CpuBuffer* cb) {
  // release: pairs with the acquire in lock_reader (and swap_cpu's trylock).
  cb->reader_lock.store(0, std::memory_order_release);
}

// R1: find the head page: the page whose predecessor's next carries HEAD.
BufferPage* RingBuffer::find_head(CpuBuffer* cb) {
  BufferPage* p = cb->head_page.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < 2 * cb->npages + 2; i++) {
    BufferPage* prev = p->prev.load(std::memory_order_relaxed);  // reader-written
    // acquire: pairs with the release stores of the HEAD flag in move_tail.
    if (prev->next.load(std::memory_order_acquire) == link(p, kPageHead)) return p;
    p = page_of(p->next.load(std::memory_order_relaxed));
  }
  return nullptr;  // a writer is between HEAD->UPDATE and UPDATE->NORMAL
}

BufferPage* RingBuffer::get_reader_page(CpuBuffer* cb) {
  BufferPage* rp = cb->reader_page;
  if (cb->reader_read < (rp->commit_acquire() & kCommitMask)) return rp;
  // acquire: pairs with the release store of commit_page in
  // set_commit_to_write: once the commit has left the reader page, the
  // page's final commit and every event on it are visible.
  if (cb->commit_page.load(std::memory_order_acquire) == rp) {
    // The writer is still on the reader page; re-check its commit.
    return cb->reader_read < (rp->commit_acquire() & kCommitMask) ? rp : nullptr;
  }
  if (cb->reader_read < (rp->commit_acquire() & kCommitMask)) return rp;
  for (int tries = 0; tries < 100000; tries++) {
    BufferPage* head = find_head(cb);  // R1
    if (!head) {
      if (tries > 16) sched_yield();
      continue;
    }
    // R2: splice the reader page in place of the head. It is outside the
    // ring and no writer can reach it (the commit is not on it), so plain
    // resets are fine; the CAS below publishes them.
    rp->entries.store(0);
    rp->real_end.store(cb->capacity);
    rp->push_seq.store(kNoPushSeq);  // its old marks must not pass for new ones
    rp->page->time_stamp = 0;
    std::atomic_ref<uint64_t>(rp->page->commit).store(0, std::memory_order_relaxed);
    BufferPage* after = page_of(head->next.load(std::memory_order_relaxed));
    BufferPage* before = head->prev.load(std::memory_order_relaxed);
    rp->next.store(link(after, kPageHead), std::memory_order_relaxed);
    rp->prev.store(before, std::memory_order_relaxed);
    // relaxed: only tests set it.
    if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
      h(TestHookPoint::kR2BeforeSplice, *this, cb->cpu);
    uintptr_t expected = link(head, kPageHead);
    // acq_rel: release publishes rp's reset and links to the writer (pairs
    // with the acquire load of tp->next in move_tail); acquire pairs with
    // the writer's acq_rel CAS/release stores on this word (the last
    // release store of HEAD here also published head's push marks).
    if (!before->next.compare_exchange_strong(expected, link(rp, kPageNormal),
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
      if (tries > 16) sched_yield();
      continue;  // the writer pushed the head, or is pushing it
    }
    // What was lost before `head` (DESIGN.md section 5, "How R2 knows what
    // was lost"), read now that head is ours: no writer pushes it or moves
    // the tail into it any more. A value read before the CAS could be
    // stale by whole laps: the CAS succeeds again once the HEAD flag is
    // back on the same pointer (ABA), with the events of every lap lost.
    //  - overrun: if a writer made head the head by pushing (its push_seq
    //    is its current content's), the overrun at that push; no push ran
    //    since (a push always pushes the head, and head stayed head until
    //    our CAS), so that is the overrun at our CAS. Otherwise head became
    //    the head by our own previous splice and no push ran since: the
    //    overrun we reported last.
    //  - refusals: head's refused_mark, taken when the tail entered it; the
    //    tail has (the commit left the reader page, acquire above).
    const uint64_t overrun = head->push_seq.load() == (head->write.load() >> 32)
                                 ? head->push_mark.load()
                                 : cb->last_overrun;
    const uint64_t refused = head->refused_mark.load();
    // R3: finish the splice; the old head is the reader page now.
    // release: pairs with the acquire load of prev in is_reader_page.
    after->prev.store(rp, std::memory_order_release);
    cb->head_page.store(after, std::memory_order_relaxed);
    cb->reader_page = head;
    cb->reader_read = 0;
    // Not head->page->time_stamp: the page may be the empty tail page, whose
    // first event (and stamp) the writer is storing right now (a data race).
    // At read offset 0 the readers take the page's stamp after the commit
    // acquire that finds an event (read_page, next_event, Iterator).
    cb->read_stamp = 0;
    cb->lost_events += (overrun - cb->last_overrun) + (refused - cb->last_refused);
    cb->last_overrun = overrun;
    cb->last_refused = refused;
    return head;
  }
  return nullptr;
}

int RingBuffer::read_page(DataPage** pagep, uint32_t cpu, bool full) {
  if (cpu >= ncpus() || pagep == nullptr || *pagep == nullptr) return -EINVAL;
  CpuBuffer* cb = lock_reader(cpu);
  if (!cb) return -EAGAIN;  // not mapped yet (its claimer is mapping it)
  // After the slot's acquire load in lock_reader: a snapshot's hold is
  // stored (under the mutex, released by its unlock) before its swap, and
  // the swap's release store of the slot is what lock_reader acquired; so
  // a reader that sees the swapped-in buffer sees the hold. relaxed here:
  // the decision is taken again under the mutex.
  if (RBTRACE_UNLIKELY(handback_on_[cpu].load(std::memory_order_relaxed) != 0)) {
    unlock_reader(cb);
    const int rc = read_handed_back(pagep, cpu);
    if (rc != 0) return rc;  // a page handed back, or held (-EAGAIN)
    cb = lock_reader(cpu);
    if (!cb) return -EAGAIN;
  }
  int ret = -EAGAIN;
  BufferPage* bp = get_reader_page(cb);  // R1..R3
  if (bp) {
    // R4: first where the commit is, then the page's commit index. In this
    // order, a page the commit has left has its final index (the writer
    // stores the index before it moves commit_page); the other order could
    // pair a stale index with "the writer has left" and lose events.
    // acquire: pairs with set_commit_to_write's release of commit_page.
    const bool writer_on_page = cb->commit_page.load(std::memory_order_acquire) == bp;
    // acquire: see commit_acquire.
    const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
    const uint32_t read = cb->reader_read;
    if (read < commit) {
      DataPage* dst = *pagep;
      uint64_t nevents = 0;
      uint32_t len = 0;
      if (read != 0 || writer_on_page) {
        // With `full`, only a page the writer may still add to is refused;
        // the rest of a partly read page it has left is complete (kernel).
        if (!full || !writer_on_page) {
          // Copy the committed unread part. The copy's time stamp is the time
          // of the event before `read`, which the first copied delta is
          // relative to; at read 0 that is the page's own time stamp (the
          // reader may have taken the page empty, before its first event set
          // it: read_stamp is stale then).
          len = commit - read;
          dst->time_stamp = read != 0 ? cb->read_stamp : bp->page->time_stamp;
          std::memcpy(dst->data, bp->page->data + read, len);
          PageWalker walker(dst->data, len, dst->time_stamp);
          PageEvent e;
          while (walker.next(&e)) nevents++;
          cb->read_stamp = walker.time();
          cb->reader_read = commit;
        }
      } else {
        // A full page no writer can reach: trade pages, no copy.
        len = commit;
        nevents = bp->entries.load();
        DataPage* mine = bp->page;
        bp->page = dst;
        *pagep = mine;
        dst = mine;
        bp->page->time_stamp = 0;
        bp->page->commit = 0;
        cb->reader_read = 0;
        dst->commit = len;
      }
      if (len > 0) {
        dst->commit = len;
        if (cb->lost_events) {
          dst->commit |= kMissedEvents;
          if (len + 8 <= cb->capacity) {
            store_u64(dst->data + len, cb->lost_events);
            dst->commit |= kMissedStored;
          }
          cb->lost_events = 0;
        }
        cb->read.fetch_add(nevents, std::memory_order_relaxed);
        ret = static_cast<int>(len);
      }
    }
  }
  unlock_reader(cb);
  return ret;
}

int RingBuffer::next_event(uint32_t cpu, PageEvent* ev, uint64_t* lost, bool consume) {
  if (cpu >= ncpus() || ev == nullptr) return -EINVAL;
  // Before the lock: nothing may fail while it is held. A record is at
  // most max_payload_ (< page_size) bytes.
  unsigned char* const copy = reader_copy_buffer(opts_.page_size);
  if (!copy) return -ENOMEM;
  CpuBuffer* cb = lock_reader(cpu);
  if (!cb) return -EAGAIN;  // not mapped yet
  int ret = -EAGAIN;
  for (;;) {
    BufferPage* bp = get_reader_page(cb);
    if (!bp) break;
    const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
    const uint32_t read = cb->reader_read;
    // At read 0 the base time is the page's own stamp (see read_page); read
    // it only once an event is committed (the writer sets it before).
    const uint64_t base = read == 0 && commit != 0 ? bp->page->time_stamp : cb->read_stamp;
    PageWalker walker(bp->page->data + read, commit - read, base);
    PageEvent e;
    if (!walker.next(&e)) {
      // Only padding (discarded events) up to commit: skip it.
      cb->reader_read = commit;
      cb->read_stamp = walker.time();
      continue;
    }
    // Hand out a copy: the page may be overwritten, traded, swapped away or
    // reset as soon as we unlock (see peek/consume in ring_buffer.h).
    std::memcpy(copy, e.data, e.length);
    *ev = e;
    ev->data = copy;
    ev->offset += read;
    if (lost) *lost = cb->lost_events;
    if (consume) {
      cb->reader_read = read + walker.offset();
      cb->read_stamp = e.ts;
      cb->lost_events = 0;
      cb->read.fetch_add(1, std::memory_order_relaxed);
    }
    ret = 0;
    break;
  }
  unlock_reader(cb);
  return ret;
}

int RingBuffer::peek(uint32_t cpu, PageEvent* ev, uint64_t* lost) {
  return next_event(cpu, ev, lost, false);
}
int RingBuffer::consume(uint32_t cpu, PageEvent* ev, uint64_t* lost) {
  return next_event(cpu, ev, lost, true);
}

// ===========================================================================
// Iterator
// ===========================================================================

RingBuffer::Iterator::Iterator(RingBuffer& rb, uint32_t cpu) : rb_(rb), cpu_(cpu) {
  if (cpu >= rb.ncpus()) {
    status_ = -EINVAL;
    return;
  }
  if (rb.opts_.mode == Mode::kOverwrite) {
    const int32_t me = rb.current_cpu();
    if (me == static_cast<int32_t>(cpu)) {
      CpuBuffer* cb = rb.cpu_buffer(cpu);
      if (cb->committing() != 0) {  // called from a handler mid-write
        status_ = -EBUSY;
        return;
      }
    } else {
      int32_t expected = 0;
      // acquire: pairs with the release in unbind_thread (see claim_cpu).
      if (!rb.owners_[cpu].compare_exchange_strong(expected, -1, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
        status_ = -EBUSY;
        return;
      }
      claimed_ = true;
    }
  }
  cb_ = rb.lock_reader(cpu);
  if (!cb_) {  // a slot not mapped yet: an empty CPU, nothing to keep out
    if (claimed_) {
      // release: pairs with the acquire CAS in claim_cpu/bind_thread.
      rb.owners_[cpu].store(0, std::memory_order_release);
      claimed_ = false;
    }
    return;
  }
  locked_ = true;
  BufferPage* rp = cb_->reader_page;
  on_reader_page_ = true;
  // acquire: pairs with set_commit_to_write's release of commit_page.
  stop_ = cb_->commit_page.load(std::memory_order_acquire);
  load_page(rp, cb_->reader_read, cb_->read_stamp);
}

RingBuffer::Iterator::~Iterator() {
  if (locked_) unlock_reader(cb_);
  // release: pairs with the acquire CAS in claim_cpu/bind_thread.
  if (claimed_) rb_.owners_[cpu_].store(0, std::memory_order_release);
}

bool RingBuffer::Iterator::load_page(BufferPage* bp, uint32_t from, uint64_t ts) {
  page_ = bp;
  const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
  if (from > commit) from = commit;
  // From the start of a page the base time is the page's stamp, read after
  // the acquire above (the writer sets it before it commits the first event;
  // a page taken by the reader while empty has a stale read_stamp).
  if (from == 0 && commit != 0) ts = bp->page->time_stamp;
  walker_ = PageWalker(bp->page->data + from, commit - from, ts);
  return true;
}

bool RingBuffer::Iterator::next(PageEvent* ev) {
  if (status_ != 0) return false;
  for (;;) {
    if (walker_.next(ev)) return true;
    if (page_ == stop_) return false;
    BufferPage* nextp;
    if (on_reader_page_) {
      on_reader_page_ = false;
      nextp = rb_.find_head(cb_);
      if (!nextp) return false;
    } else {
      nextp = page_of(page_->next.load(std::memory_order_relaxed));
    }
    load_page(nextp, 0, 0);  // from 0: load_page takes the page's stamp
  }
}


// ===========================================================================
// Pages handed back by a snapshot (hold_reads, hand_back, release_reads)
// ===========================================================================

namespace {
void update_on(HandBack& h, std::atomic<uint32_t>& on) {
  // relaxed: read_page looks at it only as a hint; the mutex orders the rest.
  on.store(h.holds != 0 || !h.runs.empty() ? 1 : 0, std::memory_order_relaxed);
}
}  // namespace

void RingBuffer::set_recorded(bool on) {
  // release: pairs with the acquire load in recorded(); a snapshot that sees
  // the ring recorded hands its pages back.
  recorded_.store(on, std::memory_order_release);
  if (on) return;
  for (uint32_t c = 0; c < limit_; c++) {
    std::lock_guard<std::mutex> g(handback_[c].mu);
    for (HandBackRun& r : handback_[c].runs) close(r.fd);
    handback_[c].runs.clear();
    update_on(handback_[c], handback_on_[c]);
  }
}

void RingBuffer::hold_reads(uint32_t cpu) {
  if (cpu >= limit_) return;
  std::lock_guard<std::mutex> g(handback_[cpu].mu);
  handback_[cpu].holds++;
  update_on(handback_[cpu], handback_on_[cpu]);
}

void RingBuffer::release_reads(uint32_t cpu) {
  if (cpu >= limit_) return;
  std::lock_guard<std::mutex> g(handback_[cpu].mu);
  if (handback_[cpu].holds > 0) handback_[cpu].holds--;
  update_on(handback_[cpu], handback_on_[cpu]);
}

int RingBuffer::hand_back(uint32_t cpu, int fd, uint64_t offset, uint32_t npages) {
  if (cpu >= ncpus() || fd < 0) return -EINVAL;
  if (npages == 0) return 0;
  const int mine = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (mine < 0) return -errno;
  std::lock_guard<std::mutex> g(handback_[cpu].mu);
  handback_[cpu].runs.push_back({mine, offset, npages});
  update_on(handback_[cpu], handback_on_[cpu]);
  return 0;
}

uint32_t RingBuffer::handed_back_pages(uint32_t cpu) const {
  if (cpu >= limit_) return 0;
  std::lock_guard<std::mutex> g(handback_[cpu].mu);
  uint64_t n = 0;
  for (const HandBackRun& r : handback_[cpu].runs) n += r.left;
  return static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX));
}

// The next page handed back for `cpu` into *pagep: its bytes of events
// (> 0); -EAGAIN while a snapshot holds the CPU and has nothing queued yet;
// 0 when there is nothing handed back and no hold (read the live buffer).
// A page that cannot be read back (an I/O error on the spool) is skipped.
int RingBuffer::read_handed_back(DataPage** pagep, uint32_t cpu) {
  HandBack& h = handback_[cpu];
  std::lock_guard<std::mutex> g(h.mu);
  while (!h.runs.empty()) {
    HandBackRun& r = h.runs.front();
    const ssize_t n = pread(r.fd, *pagep, opts_.page_size, static_cast<off_t>(r.offset));
    r.offset += opts_.page_size;
    if (--r.left == 0) {
      close(r.fd);
      h.runs.erase(h.runs.begin());
    }
    update_on(h, handback_on_[cpu]);
    const uint32_t len = static_cast<uint32_t>((*pagep)->commit & kCommitMask);
    if (n == static_cast<ssize_t>(opts_.page_size) && len > 0 && len <= opts_.page_size)
      return static_cast<int>(len);
  }
  return h.holds != 0 ? -EAGAIN : 0;
}

}  // namespace rbtrace
