/*
 * tests/model/ring.pml - a Promela model of ONE rbtrace CPU buffer: the
 * writer W2..W6 (ringbuf/include/rbtrace/detail/writer.h, ringbuf/src/
 * writer.cc), nested signal handlers on the owner thread, and a concurrent
 * reader R1..R4 (ringbuf/src/reader.cc), with ghost accounting.
 * docs/DESIGN.md, "What is proven, and how", says what it covers and what
 * it abstracts away; tests/model/run_model.sh runs it and its mutants.
 *
 * Switches (spin -D...):
 *   PC       producer/consumer mode (default: overwrite)
 *   MUT_A    mutant (a): W6 leaves with a plain decrement (fast and general)
 *   MUT_B    mutant (b): W6 is the kernel's decrement-then-recheck loop
 *   MUT_NO_PARTIAL  a check of the check: the final flush without its
 *            partial pass must break the accounting identity
 *   NRING    ring pages (default 3; one more page is the reader page)
 *   CAP      events per page (default 2)
 *   NOWN     events the owner writes (default 3)
 *   H1N      level-1 handler runs (a handler on the owner), default 2
 *   H2N      level-2 handler runs (a handler on a handler), default 1
 *   SZ0, SZ1, SZ2  slots an event of the owner, of a level-1 handler, of a
 *            level-2 handler takes: 1 or 2 (default 1 each)
 *   EVMIX    every write takes 1 or 2 slots, a free choice per write
 *            (overrides SZ0..SZ2)
 *   WIT_EXACT, WIT_PAD, WIT_TAKEBACK, WIT_REFSTRAD  checks of the check:
 *            at the end, after the accounting identity held, assert that
 *            the run did NOT reach the scenario (so a counterexample is a
 *            witness that the identity was checked in it): the tail page
 *            holds events and was entered from a page filled exactly (the
 *            crossing reservation started AT capacity); a page padded by a
 *            straddler (W5a, real_end < capacity) was read or pushed; a
 *            refused non-straddler took its slots back; a straddler was
 *            refused (its padding stays, no take-back)
 *
 * Swaps (-DSWAPS; without it the model above is unchanged, token for token
 * after cpp). The writer gets W0 (the owner's cached binding, A or B), W1
 * (record_disabled of that buffer: refuse_disabled counts in the slot's
 * slot_refused_), W3 (the back-pointer: refuse_moved undoes W2, or leaves
 * through end_commit when a handler reserved since, and counts in the slot); a second CPU buffer B (the spare's,
 * no pages: a write that lands there is one abstract reservation between
 * W2 and W6 on B's state word); the reader takes A's reader lock; after a
 * swap the requester dumps A (the same read_page, full = false). At most
 * one swap succeeds.
 *   NSIG     attempts of the doorbell handler's swap_cpu (S2..S4) on the
 *            owner (default 1; it may start at any step of the owner and of
 *            a level-1 handler, unless NO_SWAP_ON_H1)
 *   NREQ     attempts of a requester thread's swap_cpu_remote (M1..M4),
 *            default 0; NREQ > 0 adds the owner's store buffer (SBK stores
 *            of A's state word, default 2)
 *   NTGL     record-disabled toggles, a handler on the owner (disable,
 *            enable, ...: change_cpu_disable), default 0
 *   MUT_C    mutant (c): no W3 back-pointer check (the 2014 swap race)
 *   MUT_D    mutant (d): no membarrier (M2) in the remote swap
 *   MUT_LATE the code before the model's first finding: W1's refusal of a
 *            disable counted in the buffer W0 loaded (with CHK_LATE: assert
 *            that buffer is the slot's; fails, see the design text)
 *   MUT_MOVED the code before the model's second finding: refuse_moved
 *            undoes W2 with a plain sub although a nested writer may have
 *            reserved since (its assertion cmts == ecmts fails)
 *   WIT_SIGSWAP, WIT_REMSWAP, WIT_SBBUSY, WIT_W3REF, WIT_SWW5, WIT_LATE
 *            checks of the check (as above): a signal-path / remote swap
 *            succeeded, its dump read events and a write landed in B; a
 *            remote swap refused busy because M2 drained the owner's W2
 *            from its store buffer; a W3 refusal after the swap; a swap
 *            refused busy while the owner was inside W5; a late count
 *
 * Abstractions (each one is explained in the design text):
 *   - an event is 1 or 2 slots (bytes are not modelled; time extends and
 *     absolute stamps are not modelled as such, a 2-slot event stands for
 *     a longer reservation; the stamp pair's "prev_pos == w && delta fits"
 *     is a non-deterministic choice, which over-approximates the fast
 *     path). With 2-slot events a reservation may straddle the page end
 *     (W5a pads, real_end < capacity) and a page may fill exactly with
 *     the next reservation starting at capacity;
 *   - without SWAPS: record_disabled (W1), the back-pointer check (W3),
 *     swaps are not modelled; discards and the loss marks (push_mark/
 *     push_seq/refused_mark) are never modelled;
 *   - memory is sequentially consistent: one Promela statement per shared
 *     load/store/RMW; owner-local bookkeeping that no other thread reads
 *     is folded into the neighbouring statement. The one exception (SWAPS
 *     with NREQ > 0): the owner's stores to A's state word go through a
 *     store buffer that only the requester's M3 can observe (W2 -> W3 has
 *     no CPU barrier);
 *   - the page resets of W5b and R2 are one atomic step each; assertions
 *     check that nobody else can reach the page being reset.
 */

#ifndef NRING
#define NRING 3
#endif
#ifndef CAP
#define CAP 2
#endif
#ifndef NOWN
#define NOWN 3
#endif
#ifndef H1N
#define H1N 2
#endif
#ifndef H2N
#define H2N 1
#endif
#ifndef SZ0
#define SZ0 1
#endif
#ifndef SZ1
#define SZ1 1
#endif
#ifndef SZ2
#define SZ2 1
#endif

#define NPG   (NRING + 1)          /* ring pages 0..NRING-1, reader page NRING */
#define NSLOT (NPG * CAP)
#define MAXEV (NOWN + H1N + H2N)
#define NONE  255

#define NORMAL 0
#define HEAD   1
#define UPDATE 2

/* ---- the CPU buffer ---------------------------------------------------- */
byte nxt[NPG];      /* BufferPage::next, page part */
byte nfl[NPG];      /* BufferPage::next, flag bits (set with nxt in one store) */
byte prv[NPG];      /* BufferPage::prev */
byte widx[NPG];     /* BufferPage::write, low half (byte index) */
byte wseq[NPG];     /* BufferPage::write, high half (tail sequence number) */
byte pent[NPG];     /* BufferPage::entries */
byte rend[NPG];     /* BufferPage::real_end */
byte pcommit[NPG];  /* DataPage::commit of the data page the descriptor holds */
byte slot[NSLOT];   /* the data as a ghost status, at an event's first
                       slot: 0 nothing written, 1 an event written and not
                       yet accounted for, 2 read, 3 counted in overrun; 4 at
                       the second slot of a 2-slot event */
byte slen[NSLOT];   /* ghost: at an event's first slot, its slots (1, 2) */

byte tail;          /* CpuBuffer::tail_page */
byte commitp;       /* CpuBuffer::commit_page */
byte headhint;      /* CpuBuffer::head_page (a hint) */
byte cing;          /* CpuBuffer::state, bits 0..15 (committing) */
byte cmts;          /* CpuBuffer::state, bits 16..  (commits), same word */
bit  in_w5;
byte tail_seq;

/* writer-side counters */
byte entries, overrun, commit_overrun, dropped, nested_dropped;

/* reader-side state (only the reader writes these) */
byte readerp = NRING;  /* CpuBuffer::reader_page */
byte rread;            /* CpuBuffer::reader_read */
byte readcnt;          /* CpuBuffer::read */

/* ---- handlers: who runs on the owner thread ----------------------------- */
byte running;          /* 0 the owner, 1 a handler on it, 2 a handler on that */
byte h1left = H1N, h2left = H2N;
bit  owner_done;

/* ---- ghosts ------------------------------------------------------------- */
byte nwritten;         /* events whose payload was written */
byte ginfl;            /* writers between their W2 and their leaving W6 */
byte inflight_pg[NPG]; /* reservations on the page whose data is not written yet */
byte rown = NRING;     /* the page the reader owns (changes at its R2 CAS) */
byte rstage;           /* 0; 1 reader page linked with HEAD (R2, before/after a failed CAS); 2 after the CAS, before R3 */
bit  flushed;          /* the reader finished the final flush */
/* ghost witnesses (see WIT_*): how the tail entered its current page (1
   from a page filled exactly: the crossing reservation started at
   capacity; 2 from a padded page: it straddled; 3 a reservation past
   capacity), a padded page's events read or pushed, a take-back, a
   refused straddler */
byte g_entry;
bit  g_padread, g_takeback, g_refstrad;
/* Set only in the run that checks them (no extra states elsewhere). */
#if defined(WIT_EXACT)
#define WIT_ENTRY(v)  g_entry = (v)
#else
#define WIT_ENTRY(v)  skip
#endif
#if defined(WIT_PAD)
#define WIT_PADREAD(p) if :: rend[p] < CAP && gn > 0 -> g_padread = 1 :: else -> skip fi
#else
#define WIT_PADREAD(p) skip
#endif
#if defined(WIT_TAKEBACK)
#define WIT_TAKEN     g_takeback = 1
#else
#define WIT_TAKEN     skip
#endif
#if defined(WIT_REFSTRAD)
#define WIT_REFUSEDST g_refstrad = 1
#else
#define WIT_REFUSEDST skip
#endif

/* ---- swaps (-DSWAPS): the slot, the spare, the owner's binding --------- */
/* docs/DESIGN.md section 7 and "What is proven, and how" say what this
   part covers. Two CPU buffers: A (index 0), the one with the pages above,
   live at the start, and B (index 1), the spare RingBuffer's buffer of the
   same CPU, abstract (no pages: a write that lands in B is one ghost
   reservation between its W2 and its W6 on B's state word). At most one
   swap succeeds (attempts start only while none has: NSIG, NREQ bound the
   attempts), so every attempt starts with a = A, b = B (S2's two loads). */
#if defined(SWAPS)
#if defined(MUT_A) || defined(MUT_B)
#error "MUT_A and MUT_B are checked without SWAPS"
#endif
#ifndef NSIG
#define NSIG 1         /* swap attempts of the doorbell handler (S2..S4 on the owner) */
#endif
#ifndef NREQ
#define NREQ 0         /* swap_cpu_remote attempts of the requester thread (M1..M4) */
#endif
#ifndef NTGL
#define NTGL 0         /* record-disabled toggles (a handler: disable, then enable, ...) */
#endif
#ifndef SBK
#define SBK 2          /* the owner's store buffer: stores to A's state word it holds */
#endif
#if NREQ > 0
#define REMOTE 1
#endif
#if defined(MUT_D) && !defined(REMOTE)
#error "MUT_D needs NREQ > 0"
#endif
#define BUFA  0
#define BUFB  1
#define LIVE  0        /* CpuBuffer::buffer: the live RingBuffer ("this" of the writer) */
#define SPARE 1        /* ... the spare one ("other") */
#define KSW   2        /* record_disabled: kSwapping; bit 0 is the disable count (0 or 1) */
#define EAGAIN 1
#define EBUSY  2

bit  live;             /* RingBuffer::buffers_[cpu] of the live ring: A or B (the
                          spare ring's slot holds the other one) */
bit  bptr[2];          /* CpuBuffer::buffer (the back-pointer W3 reads): LIVE/SPARE */
byte rd[2];            /* CpuBuffer::record_disabled: KSW | count */
bit  cached = BUFA;    /* the owner's binding (W0): ThreadBinding::cb, A or B */
byte ctl;              /* RingBuffer::ctl_[cpu] of the live ring (the spare's stays 0) */
bit  rlock;            /* A's reader_lock (B's: nobody holds it before the swap) */
byte cingB;            /* B's state, committing (commits: not read by anyone) */
byte entriesB;         /* B's entries (a write that landed in B) */
byte disA, disB;       /* CpuBuffer::disabled of A, of B */
byte swref;            /* RingBuffer::slot_refused_[cpu] of the live ring */
byte swleft = NSIG, rqleft = NREQ, tgleft = NTGL;
bit  tdis;             /* the next toggle disables (1) or enables (0) */
/* ghosts */
byte nattempt;         /* writes attempted (W0 reached) */
byte ginflB;           /* writers between their W2 and W6 on B */
byte gres;             /* writers of A past a W3 that saw `this`, before W6 */
byte nswaps;           /* swaps that succeeded (at most 1) */
bit  rqbusy;           /* the requester is inside an attempt */
byte gdump;            /* events the requester's dump of the swapped-out A read */
bit  g_sigok, g_remok, g_sbbusy, g_m2vis, g_w3ref, g_late, g_sww5;

#if defined(REMOTE)
/* The owner's store buffer, for A's state word only (x86-TSO's store->load
   reordering, which is all W2 -> W3 has: a signal fence between them, no
   CPU barrier). The owner and its handlers (one hardware thread) see
   `cing` (store forwarding); another thread (the requester's M3) sees
   `mcing`, which takes the buffered values oldest first. Memory's value is
   read by M3 only, so memory takes them lazily, when M3 loads (any number
   of the oldest, a free choice), when M2 runs (all: the barrier), and when
   the owner stores into a full buffer (the oldest: the core stalls until
   it drains). That is the same set of values M3 can see as draining at
   arbitrary moments. SBK bounds the buffer (DESIGN: why any bound gives
   the same verdict). Every store of the owner to A's state goes through
   it: W2's add, W6's leave, refuse_moved's sub. */
byte mcing;            /* A's committing as memory holds it */
byte sbn;              /* stores buffered */
byte sbq;              /* their directions, oldest at bit 0: 1 = +1, 0 = -1 */
#define SB_DRAIN1 \
  assert(sbn > 0); \
  if :: (sbq & 1) -> mcing++ :: else -> assert(mcing > 0); mcing-- fi; \
  sbq = sbq >> 1; sbn--
#define SB_PUSH(up) ; \
  if :: sbn == SBK -> SB_DRAIN1 :: else -> skip fi; \
  sbq = sbq | ((up) << sbn); sbn++
#define SB_DRAINALL do :: sbn > 0 -> SB_DRAIN1 :: else -> break od
#define SB_DRAINSOME do :: sbn > 0 -> SB_DRAIN1 :: true -> break od
#define SB_POP(q) (((q) & 1) + (((q) >> 1) & 1) + (((q) >> 2) & 1) + (((q) >> 3) & 1))
#define INV_SB (sbn <= SBK && SBK <= 4 && mcing + 2 * SB_POP(sbq) == cing + sbn)
#else
#define SB_PUSH(up)
#endif

/* Hooks in the writer above (empty without SWAPS). */
#define SW_W2G     go && cb == BUFA ->
#define SW_W2      SB_PUSH(1)
#define SW_W3      w3_a();
#define NOTMOVED   !moved &&
#define SW_LEAVE   gres-- SB_PUSH(0);
#define SW_RESERVED assert(live == BUFA);   /* it landed in the slot's buffer */
#define SW_CLR     ; cb = 0; go = 0; moved = 0
#define READER_DONE (owner_done && !rqbusy)
/* witnesses (WIT_SIGSWAP, WIT_REMSWAP, WIT_SBBUSY, WIT_W3REF, WIT_LATE) */
#if defined(WIT_W3REF)
#define WIT_W3REF_SET ; if :: live != BUFA -> g_w3ref = 1 :: else -> skip fi
#else
#define WIT_W3REF_SET
#endif
#if defined(WIT_SBBUSY)
#define WIT_M2PRE   g_m2vis = (mcing == 0);
#define WIT_M2POST  ; g_m2vis = (g_m2vis && mcing != 0)
#define WIT_M3BUSY  ; if :: g_m2vis && sret != 0 -> g_sbbusy = 1 :: else -> skip fi; g_m2vis = 0
#else
#define WIT_M2PRE
#define WIT_M2POST
#define WIT_M3BUSY
#endif
#if defined(WIT_SWW5)
#define WIT_SWW5 ; if :: in_w5 -> g_sww5 = 1 :: else -> skip fi
#else
#define WIT_SWW5
#endif
#if defined(WIT_SIGSWAP) || defined(WIT_REMSWAP)
#define WIT_SWOK(isrem) ; if :: isrem -> g_remok = 1 :: else -> g_sigok = 1 fi
#else
#define WIT_SWOK(isrem)
#endif
/* A refusal counted in a buffer (W1's `disabled`) after the buffer left
   the slot, where the requester reads its counters and then resets it
   (snapshot.cc:272-279). Asserted with -DCHK_LATE (a finding, see
   run_model.sh; with -DMUT_LATE only), recorded for the witness with
   -DWIT_LATE (also with -DMUT_LATE). */
#if defined(CHK_LATE)
#define LATE_CHECK assert(live == cb);
#elif defined(WIT_LATE)
#define LATE_CHECK if :: live != cb -> g_late = 1 :: else -> skip fi;
#else
#define LATE_CHECK
#endif
#else  /* !SWAPS */
#define SW_W2G
#define SW_W2
#define SW_W3
#define NOTMOVED
#define SW_LEAVE
#define SW_RESERVED
#define SW_CLR
#define READER_DONE owner_done
#endif

/* ---- invariants, checked in every reachable state by `monitor` ---------- */
#define ISH(p)   ((nfl[p] == HEAD && (p) != readerp) -> 1 : 0)
#define ISU(p)   ((nfl[p] == UPDATE) -> 1 : 0)
#if NRING == 2
#define NHEAD    (ISH(0) + ISH(1) + ISH(2))
#define NUPD     (ISU(0) + ISU(1) + ISU(2))
#elif NRING == 3
#define NHEAD    (ISH(0) + ISH(1) + ISH(2) + ISH(3))
#define NUPD     (ISU(0) + ISU(1) + ISU(2) + ISU(3))
#elif NRING == 4
#define NHEAD    (ISH(0) + ISH(1) + ISH(2) + ISH(3) + ISH(4))
#define NUPD     (ISU(0) + ISU(1) + ISU(2) + ISU(3) + ISU(4))
#else
#error "NRING must be 2, 3 or 4"
#endif
#define MIN(a,b) (((a) < (b)) -> (a) : (b))

/* Invariant 5: busy (committing != 0) covers W2..W6 of every writer. */
#define INV_BUSY   (ginfl == 0 || cing != 0)
/* committing is exactly the writers in flight (the nesting depth). */
#define INV_DEPTH  (cing == ginfl)
/* Invariant 1: outside W5 (and outside the reader's splice) exactly one
   HEAD in the ring, no UPDATE. Invariant 4: the reader page's next never
   carries HEAD (outside R2, where the reader links it before its CAS). */
#define INV_HEAD   (in_w5 != 0 || rstage == 2 || (NHEAD == 1 && NUPD == 0))
#define INV_RPAGE  (rstage != 0 || nfl[readerp] != HEAD)
/* Idle: with no writer in flight the commit is at the write position. */
#define INV_IDLE   (cing != 0 || (in_w5 == 0 && commitp == tail && \
                    pcommit[tail] == MIN(widx[tail], rend[tail])))

proctype monitor() {
end:
  do
  :: assert(INV_BUSY)
  :: assert(INV_DEPTH)
  :: assert(INV_HEAD)
  :: assert(INV_RPAGE)
  :: assert(INV_IDLE)
#if defined(SWAPS)
  :: assert(cingB == ginflB && gres <= ginfl)
#if defined(REMOTE)
  :: assert(INV_SB)
#endif
#endif
  od
}

/* ======================================================================== */
/* The writer: one write (reserve + payload + commit), as in writer.h.       */
/* Every writer process (the owner, each handler level) declares these.      */
/* ======================================================================== */
#if defined(SWAPS)
#define WRITER_LOCALS \
  byte ecing, ecmts, tp, wi, ws, ei, es, rpg, rslot, cend, cc, cm, cp, tt, \
       nx, nxf, nh, pv, gi, gn, gu, sz, cb, sl; \
  bit fast, ok, resume, isrp, casok, rc, go, moved
#else
#define WRITER_LOCALS \
  byte ecing, ecmts, tp, wi, ws, ei, es, rpg, rslot, cend, cc, cm, cp, tt, \
       nx, nxf, nh, pv, gi, gn, gu, sz; \
  bit fast, ok, resume, isrp, casok, rc
#endif

/* Ghost: the events in slots [from, upto) of page p move from "written"
   to status `to` (2 read, 3 overrun), counted in gn, walking event by
   event as the reader's PageWalker does. An event is read or counted lost
   at most once, and only a written one (an uncommitted or empty slot
   below the commit fails here, and so does a bound in the middle of an
   event: `from` at a 2-slot event's second slot, or `upto` inside one). */
inline ghost_take(p, from, upto, to) {
  gi = from;
  do
  :: gi < upto ->
     assert(slot[(p) * CAP + gi] == 1);
     assert(gi + slen[(p) * CAP + gi] <= upto);
     slot[(p) * CAP + gi] = to;
     gn++;
     gi = gi + slen[(p) * CAP + gi]
  :: else -> break
  od;
  gi = 0
}

/* Ghost: the data of page p is dropped (a reset, a trade): nothing on it
   may still be unread and uncounted. */
inline ghost_clear(p) {
  gi = 0;
  do
  :: gi < CAP ->
     assert(slot[(p) * CAP + gi] != 1);
     slot[(p) * CAP + gi] = 0;
     slen[(p) * CAP + gi] = 0;
     gi++
  :: else -> break
  od;
  gi = 0
}

/* set_commit_to_write (writer.cc). Locals are folded into the statement
   of the shared access next to them. */
inline set_commit_to_write() {
  cp = commitp;
  do
  :: atomic { tail == cp -> break }                    /* load of tail_page */
  :: atomic { tail != cp -> pcommit[cp] = rend[cp] }   /* release store: the left page's commit */
     cp = nxt[cp];                                     /* page_of(cp->next) */
     commitp = cp                                      /* release store of commit_page */
  od;
  /* idx = min(write, real_end) (owner-local loads), release store */
  atomic { pcommit[cp] = MIN(widx[cp], rend[cp]); cp = 0 }
}

/* W6, general (end_commit, writer.cc), and the two mutants. */
inline end_commit() {
  do
#if defined(MUT_B)
  /* the kernel's rb_end_commit: commits = read; if committing == 1
     set_commit_to_write; committing--; if commits moved and committing
     == 0, committing++ and again. */
  :: cm = cmts;
     if
     :: atomic { cing == 1 -> skip }; set_commit_to_write()
     :: atomic { cing != 1 -> skip }
     fi;
     cing--;
     atomic {
       if
       :: cmts != cm && cing == 0 -> cing++
       :: else -> ginfl--; cm = 0; break
       fi
     }
#else
  :: atomic { cc = cing; cm = cmts };                  /* state.load() */
     if
     :: cc == 1 -> set_commit_to_write()
     :: else -> skip
     fi;
#if defined(MUT_A)
     atomic { cing--; ginfl--; cc = 0; cm = 0; break } /* plain decrement */
#else
     atomic {                                          /* cmpxchg(state: c -> c - 1) */
       if
       :: cing == cc && cmts == cm -> cing--; ginfl--; SW_LEAVE cc = 0; cm = 0; break
       :: else -> skip
       fi
     }
#endif
#endif
  od
}

/* W5b: the tail enters nx (page reset, then the tail_page store). The reset
   is one step: nobody else can reach nx (asserted: not the reader's page,
   no reservation on it). */
inline w5b() {
  d_step {
    assert(nx != rown);
    assert(inflight_pg[nx] == 0);
    tail_seq++;
    wseq[nx] = tail_seq;
    widx[nx] = 0;
    pent[nx] = 0;
    rend[nx] = CAP;
    pcommit[nx] = 0;
    ghost_clear(nx);
    WIT_ENTRY((ei - sz == CAP) -> 1 : ((ei - sz < CAP) -> 2 : 3))
  };
  tail = nx;
  atomic { in_w5 = 0; rc = 0; nx = 0; nxf = 0; cp = 0; break }
}

/* W5: move_tail(cb, tp, tail = ei - sz) -> rc (0 retry, 1 refused). */
inline move_tail() {
  if                                   /* W5a: the straddler pads and records real_end */
  :: atomic { ei - sz < CAP -> rend[tp] = ei - sz }
  :: atomic { ei - sz >= CAP -> skip }
  fi;
  if
  :: atomic { in_w5 != 0 -> nested_dropped++; rc = 1 }
  :: atomic { in_w5 == 0 -> in_w5 = 1 };
     if
     :: atomic { tp != tail -> in_w5 = 0; rc = 0 }   /* a handler moved the tail */
     :: atomic { tp == tail -> skip };
        do
        :: atomic { nx = nxt[tp]; nxf = nfl[tp] };   /* acquire load of tp->next */
           cp = commitp;
           if
           :: atomic { nx == cp -> commit_overrun++ };
              atomic { in_w5 = 0; rc = 1; nx = 0; nxf = 0; cp = 0; break }
           :: atomic { nx != cp && nxf == HEAD -> pv = prv[cp] };   /* is_reader_page(commit) */
              atomic { isrp = (nxt[pv] != cp); pv = 0 };
              if
              :: atomic { isrp && tp == cp -> isrp = 0 }            /* stale nx: look again */
              :: atomic { isrp && tp != cp -> commit_overrun++ };
                 atomic { in_w5 = 0; rc = 1; isrp = 0; nx = 0; nxf = 0; cp = 0; break }
              :: atomic { !isrp ->
#if defined(PC)
                    dropped++ };
                 atomic { in_w5 = 0; rc = 1; nx = 0; nxf = 0; cp = 0; break }
#else
                    /* CAS HEAD -> UPDATE */
                    if
                    :: nxt[tp] == nx && nfl[tp] == HEAD -> nfl[tp] = UPDATE; casok = 1
                    :: else -> casok = 0
                    fi };
                 if
                 :: atomic { casok -> casok = 0 };
                    d_step {                        /* overrun += next->entries */
                      overrun = overrun + pent[nx];
                      gn = 0;
                      gu = MIN(widx[nx], rend[nx]);
                      ghost_take(nx, 0, gu, 3);
                      WIT_PADREAD(nx);
                      gu = 0;
                      assert(gn == pent[nx]);
                      gn = 0
                    };
                    nh = nxt[nx];                   /* new_head */
                    nfl[nx] = HEAD;                 /* release store link(new_head, HEAD) */
                    atomic { headhint = nh; nh = 0 };
                    nfl[tp] = NORMAL;               /* release store UPDATE -> NORMAL */
                    w5b()
                 :: atomic { !casok -> skip }       /* the reader took the head: again */
                 fi
#endif
              fi
           :: atomic { nx != cp && nxf != HEAD -> skip };
              w5b()
           fi
        od
     fi
  fi
}

/* W4/W5 in full (reserve_full); resume = the fast path's reservation. */
inline reserve_full() {
  do
  :: if
     :: atomic { resume -> resume = 0 }
     :: atomic { !resume -> tp = tail };
        atomic { wi = widx[tp]; ws = wseq[tp] };                  /* A */
        atomic { widx[tp] = widx[tp] + sz; ei = widx[tp]; es = wseq[tp] }  /* B */
     fi;
     if
     :: atomic { ei > CAP -> skip };                             /* writer.h:265 */
        move_tail();
        if
        :: atomic { rc == 0 -> skip }                           /* retry W4 */
        :: atomic { rc != 0 && ei - sz >= CAP ->                 /* take our bytes back (writer.h:282) */
                    assert(widx[tp] >= sz); widx[tp] = widx[tp] - sz; rc = 0;
                    WIT_TAKEN };
           end_commit();
           atomic { ok = 0; wi = 0; ws = 0; ei = 0; es = 0; break }
        :: atomic { rc != 0 && ei - sz < CAP -> rc = 0;         /* a refused straddler: its padding stays */
                    WIT_REFUSEDST };
           end_commit();
           atomic { ok = 0; wi = 0; ws = 0; ei = 0; es = 0; break }
        fi
     :: atomic { ei <= CAP ->                                    /* W4b */
                 SW_RESERVED pent[tp]++; entries++; inflight_pg[tp]++;
                 rpg = tp; rslot = ei - sz; ok = 1; wi = 0; ws = 0; ei = 0; es = 0; break }
     fi
  od
}

#if defined(SWAPS)
/* count_slot_refusal (writer.cc:23-26): the slot's buffer (acquire load of
   buffers_[cpu]), then the binding refreshed from it (TLS) and the slot's
   slot_refused_ count += 1 (the owner's local add, which nobody reads
   before the requester's take_slot_refused after its dump: folded with
   the TLS store). */
inline count_slot_refusal() {
  atomic { sl = live };
  atomic { cached = sl; swref++; sl = 0; cb = 0 }
}

/* W3 (writer.h:141, in reserve_entered, which reserve_flagged enters too):
   cb->buffer == this, one load; the value loaded decides (refuse_moved
   never loads it again). A writer that passes it counts in gres until its
   W6. */
inline w3_a() {
#if defined(MUT_C)
  /* mutant (c): no re-check of the back-pointer (the 2014 swap race) */
  atomic { moved = 0; gres++ }
#else
  atomic { moved = (bptr[BUFA] != LIVE); if :: !moved -> gres++ :: else -> skip fi }
#endif
}
#endif

/* The size of this write (slots): the level's SZ, or a free choice. */
#if defined(EVMIX)
#define PICK_SIZE(lvsz) if :: sz = 1 :: sz = 2 fi
#else
#define PICK_SIZE(lvsz) sz = lvsz
#endif

#if defined(SWAPS)
inline write_a(lvsz) {   /* W2..W6 in A (write, below, has W0 and W1) */
#else
inline write(lvsz) {
#endif
  /* W2: committing++, commits++ in one add (the event's size is the
     caller's, chosen before: folded in) */
  atomic { SW_W2G PICK_SIZE(lvsz); cing++; cmts++; ecing = cing; ecmts = cmts; ginfl++; ok = 0; fast = 0 SW_W2 };
  SW_W3
  if
  :: atomic { NOTMOVED ecing == 1 -> tp = tail };  /* stamp pair matches, delta fits: fast try */
     atomic { wi = widx[tp]; ws = wseq[tp] };                     /* A */
     atomic { widx[tp] = widx[tp] + sz; ei = widx[tp]; es = wseq[tp] };  /* B */
     if                                   /* writer.h:151: end - evlen == w && end <= capacity */
     :: atomic { ei - sz == wi && es == ws && ei <= CAP ->        /* W4b */
                 SW_RESERVED pent[tp]++; entries++; inflight_pg[tp]++;
                 rpg = tp; rslot = wi; cend = ei; fast = 1; ok = 1;
                 wi = 0; ws = 0; ei = 0; es = 0 }
     :: atomic { !(ei - sz == wi && es == ws && ei <= CAP) -> resume = 1 };
        reserve_full()
     fi
  :: atomic { NOTMOVED ecing == 1 -> skip };       /* the slow path from the start */
     reserve_full()
  :: atomic { NOTMOVED ecing != 1 -> skip };       /* nested: reserve_nested */
     reserve_full()
#if defined(SWAPS)
#if defined(MUT_MOVED)
  /* -DMUT_MOVED: refuse_moved as it was before the model's finding: a
     plain state.sub(kEnter), claiming (writer.cc's old comment, DESIGN W3)
     "nobody can have reserved in cb since our W2" -- asserted: no writer
     entered and stayed since (commits moved). */
  :: atomic { moved ->
       assert(cmts == ecmts);
       cing--; cmts--; ginfl-- SB_PUSH(0) WIT_W3REF_SET };
     count_slot_refusal()
#else
  /* refuse_moved (writer.cc): the plain sub only if nobody entered since
     our W2 (state == entered); otherwise a nested writer reserved here,
     leaving the commit to us: leave through end_commit, which commits for
     it (we stay busy until then). */
  :: atomic { moved && cing == ecing && cmts == ecmts ->
       cing--; cmts--; ginfl-- SB_PUSH(0) WIT_W3REF_SET };
     count_slot_refusal()
  :: atomic { moved && !(cing == ecing && cmts == ecmts) -> gres++ };
     end_commit();
     count_slot_refusal()
#endif
#endif
  fi;
  if
  :: atomic { ok ->
       /* the caller writes the payload (memcpy into r.data): the event
          lies inside the page, below its real_end, on empty slots */
       assert(rslot + sz <= rend[rpg] && rend[rpg] <= CAP);
       assert(slot[rpg * CAP + rslot] == 0);
       slot[rpg * CAP + rslot] = 1;
       slen[rpg * CAP + rslot] = sz;
       if
       :: sz == 2 -> assert(slot[rpg * CAP + rslot + 1] == 0); slot[rpg * CAP + rslot + 1] = 4
       :: else -> skip
       fi;
       nwritten++;
       tp = 0;
       if :: !fast -> inflight_pg[rpg]-- :: else -> skip fi };
     if
     :: atomic { fast ->
          /* W6 fast path: release store of the commit index. The commit
             page is our page, unless a handler entered between our W2 and
             our A and crossed a page: then our page is the tail page ahead
             of the commit page, which no reader reaches before
             set_commit_to_write passes it (and rewrites its commit), and
             our cmpxchg below fails (commits moved). */
          assert(commitp == rpg || cmts != ecmts);
          assert(pcommit[rpg] <= cend);        /* invariant 7: never backwards */
          pcommit[rpg] = cend;
          inflight_pg[rpg]-- };
#if defined(MUT_A)
        atomic { cing--; ginfl-- }
#elif defined(MUT_B)
        end_commit()
#else
        atomic {                               /* cmpxchg(entered -> entered - 1) */
          if
          :: cing == ecing && cmts == ecmts -> cing--; ginfl--; SW_LEAVE fast = 0
          :: else -> skip
          fi
        };
        if
        :: atomic { fast -> fast = 0 }; end_commit()
        :: atomic { !fast -> skip }
        fi
#endif
     :: atomic { !fast -> skip };
        end_commit()
     fi
  :: atomic { !ok -> tp = 0 }          /* refused: end_commit already ran */
  fi;
  atomic { ecing = 0; ecmts = 0; rpg = 0; rslot = 0; cend = 0; fast = 0; ok = 0; sz = 0 SW_CLR }
}

#if defined(SWAPS)
/* refuse_disabled (writer.cc): W1 saw a flag and reserve_flagged's reload
   saw one too: every such refusal is counted in the slot
   (count_slot_refusal). -DMUT_LATE: the code before the model's finding,
   which counted a disable's refusal in the buffer W0 loaded when the
   back-pointer still named it (cb->disabled.inc(), a local op): a handler
   may enable the CPU and a doorbell swap take the buffer out of the slot
   in between (with -DCHK_LATE that count is asserted to land in the
   slot's buffer). */
inline refuse_disabled() {
#if defined(MUT_LATE)
  if
  :: atomic { (rd[cb] & 1) != 0 -> skip };
     if
     :: atomic { bptr[cb] == LIVE -> skip };
        atomic { LATE_CHECK if :: cb == BUFA -> disA++ :: else -> disB++ fi; cb = 0 }
     :: atomic { bptr[cb] != LIVE -> skip };
        count_slot_refusal()
     fi
  :: atomic { (rd[cb] & 1) == 0 -> skip };
     count_slot_refusal()
  fi
#else
  count_slot_refusal()
#endif
}

/* A write that lands in B: W2 and W6 on B's state word, W3 on B's
   back-pointer, the reservation one abstract step (B has no pages). B's
   state is not behind the store buffer: the only other thread that loads
   it is the requester's M3, before the swap, when no writer can reach B
   (the owner's binding is A until a swap moves it). */
inline write_b() {
  atomic { go && cb == BUFB -> cingB++; ginflB++ };              /* W2 */
  if
  :: atomic { bptr[BUFB] == LIVE -> skip };                       /* W3 */
     atomic { assert(live == BUFB); entriesB++ };                 /* W4..W6: it lands in B, which is the slot's */
     atomic { cingB--; ginflB--; cb = 0; go = 0 }                 /* W6: leave */
  :: atomic { bptr[BUFB] != LIVE -> cingB--; ginflB-- };          /* refuse_moved (not reached at one swap) */
     count_slot_refusal()
  fi
}

/* One write: W0 (the binding), W1 (record_disabled of cb; the ring's own
   word is 0 here, so W1's re-test of it, writer.h:116-118, goes straight
   to reserve_flagged, which loads cb's word again and refuses, or goes on
   to reserve_entered: W2, W3 and either path, as every write here), then
   W2.. in the buffer W0 loaded. */
inline write(lvsz) {
  atomic { nattempt++; cb = cached; go = 0 };                    /* W0 (writer.h:60-62) */
  if
  :: atomic { rd[cb] == 0 -> go = 1 }                            /* W1 (writer.h:110-111) */
  :: atomic { rd[cb] != 0 -> skip };
     if
     :: atomic { rd[cb] == 0 -> go = 1 }                         /* reserve_flagged (writer.h:213-218) */
     :: atomic { rd[cb] != 0 -> skip };
        refuse_disabled()
     fi
  fi;
  if
  :: write_a(lvsz)                                               /* its W2 is guarded: go && cb == A */
  :: write_b()                                                   /* go && cb == B */
  :: atomic { !go -> cb = 0 }                                    /* refused at W1 */
  fi
}
#endif

/* The owner thread: NOWN writes. */
proctype owner() provided (running == 0) {
  WRITER_LOCALS;
  byte n;
  do
  :: n < NOWN -> write(SZ0); n++
  :: else -> break
  od;
  owner_done = 1
}

/* A signal handler on the owner: may start at any step of the owner (the
   start is enabled between any two of its statements), runs to completion
   (the owner is not scheduled while running != 0), one write each time. */
proctype handler1() provided (running == 0 || running == 1) {
  WRITER_LOCALS;
end:
  do
  :: atomic { running == 0 && !owner_done && h1left > 0 -> running = 1; h1left-- };
     write(SZ1);
     running = 0
  od
}

/* A handler on that handler. */
proctype handler2() provided (running == 1 || running == 2) {
  WRITER_LOCALS;
end:
  do
  :: atomic { running == 1 && h2left > 0 -> running = 2; h2left-- };
     write(SZ2);
     running = 1
  od
}

#if defined(SWAPS)
/* ======================================================================== */
/* Swaps: S2..S4 (RingBuffer::swap_cpu, run by the doorbell handler on the  */
/* owner) and M1..M4 (swap_cpu_remote, on the requester's thread), both    */
/* swap_cpu_impl (ring_buffer.cc:506-618), with a = A, b = B.               */
/* Result sret: 0 swapped, EAGAIN, EBUSY.                                   */
/* ======================================================================== */
inline swap_impl(isrem) {
  /* S2 (516-521): a, b loaded in the start step (A, B); the rings'
     record_disabled_ words are not modelled (0). S3: kSwapping on a, then
     on b, each a CAS from 0 (538-552); swaps_in_flight/forking not
     modelled. */
  atomic { if :: rd[BUFA] == 0 -> rd[BUFA] = KSW :: else -> sret = EAGAIN fi };
  if
  :: atomic { sret != 0 -> skip }                                 /* -EAGAIN (542) */
  :: atomic { sret == 0 -> if :: rd[BUFB] == 0 -> rd[BUFB] = KSW :: else -> sret = EAGAIN fi };
     if
     :: atomic { sret != 0 -> rd[BUFA] = rd[BUFA] & ~KSW }         /* b refused: clear a's (548) */
     :: atomic { sret == 0 -> if :: ctl != 0 -> sret = EBUSY :: else -> skip fi };   /* ctl_ (564-566) */
        /* both slots re-loaded (567-569); then, on the owner (the signal
           path), committing of a and b (570-571), as the owner sees them
           (store forwarding): one step, nothing the owner writes can change
           while its handler runs */
        atomic {
          if :: sret == 0 && live != BUFA -> sret = EBUSY :: else -> skip fi;
          if :: !(isrem) && sret == 0 && (cing != 0 || cingB != 0) -> sret = EBUSY WIT_SWW5 :: else -> skip fi
        };
        /* trylock a's reader lock (572-575); b's: nobody holds it (the
           spare ring has no reader before the swap) */
        atomic { if :: sret == 0 && rlock == 0 -> rlock = 1; held = 1
                    :: sret == 0 && rlock != 0 -> sret = EBUSY
                    :: else -> skip fi };
#if defined(REMOTE)
        if
        :: atomic { isrem && sret == 0 -> bptr[BUFA] = SPARE };      /* M1 (473) */
           /* M2 (477): membarrier guarantees that the owner thread runs a
              full barrier at some point t of its instruction stream while
              the call is in progress (an IPI if it is running, its context
              switch otherwise). The model drains the owner's store buffer
              in one step. That covers every t: the requester does nothing
              else between M1 and M3, so its M2 step commutes with every
              step of other threads; a run with the barrier at t is the
              model's run in which the owner's steps before t (handlers'
              included: one hardware thread) come before the M2 step and
              those after t come after it. The stores before t are in
              memory after the step (drained), the loads after t see M1
              (stored before the call: the syscall's own barrier on the
              requester orders it before the IPIs), and stores after t may
              still sit in the buffer at M3 (the model keeps buffering
              them). Memory draining earlier than t is the lazy drain. */
#if !defined(MUT_D)
           atomic { WIT_M2PRE SB_DRAINALL WIT_M2POST };
#endif
           /* M3 (480): committing of a (memory's), and of b (0: nobody
              writes B before the swap; folded) */
           atomic { SB_DRAINSOME;
                    if :: mcing != 0 || cingB != 0 -> sret = EBUSY :: else -> skip fi
                    WIT_M3BUSY };
           if
           :: atomic { sret != 0 -> bptr[BUFA] = LIVE }                /* busy: put M1 back (483) */
           :: atomic { sret == 0 -> skip }                           /* M3b (481): not modelled */
           fi
        :: atomic { !(isrem && sret == 0) -> skip }
        fi;
#endif
        if
        :: atomic { sret == 0 ->                                      /* S4/M4: buffers_[cpu] of both rings (590-591) */
             if
             :: isrem -> assert(gres == 0 && ginflB == 0)            /* M4: no writer of a past W3, none in b */
             :: else -> assert(ginfl == 0 && ginflB == 0)            /* S4: no writer of a or b in W2..W6 */
             fi;
             live = BUFB; nswaps++ WIT_SWOK(isrem) };
           atomic { bptr[BUFA] = SPARE };                             /* 592 */
           /* 597; then refresh_binding (600): the caller's own binding,
              the owner's on the signal path (TLS of the owner thread,
              folded); a requester has none */
           atomic { bptr[BUFB] = LIVE; if :: !(isrem) -> cached = BUFB :: else -> skip fi };
           atomic { rlock = 0; held = 0 }                             /* unlock b, a (607-608) */
        :: atomic { sret != 0 -> if :: held -> rlock = 0; held = 0 :: else -> skip fi }  /* -EBUSY (579-583) */
        fi;
        atomic { rd[BUFA] = rd[BUFA] & ~KSW };                         /* 613 */
        atomic { rd[BUFB] = rd[BUFB] & ~KSW }                          /* 614 */
     fi
  fi
}

/* The doorbell handler (snapshot/src/swap.cc:188-213, serve 142-175):
   every signal masked, so nothing nests on it; it may start at any step of
   the owner and (with SWAP_ON_H1, the default) of a level-1 handler. The
   mailbox protocol is not modelled: a run is one swap_cpu. */
#ifndef NO_SWAP_ON_H1
#define SWAP_START (running == 0 || running == 1)
#else
#define SWAP_START (running == 0)
#endif
proctype swaph() provided (SWAP_START || running == 3) {
  byte prev, sret;
  bit held;
end:
  do
  :: atomic { SWAP_START && !owner_done && swleft > 0 && nswaps == 0 ->
              prev = running; running = 3; swleft--; sret = 0; held = 0 };
     swap_impl(0);
     atomic { running = prev; prev = 0; sret = 0 }
  od
}

/* A handler on the owner that toggles the CPU's record_disabled
   (change_cpu_disable, ring_buffer.cc:374-423: record_disable_cpu, then
   record_enable_cpu, alternately). Nothing nests on it. */
proctype toggler() provided (running == 0 || running == 4) {
  byte tcb, old, nw;
end:
  do
  :: atomic { running == 0 && !owner_done && tgleft > 0 ->
              running = 4; tgleft--; tdis = 1 - tdis };
     ctl++;                                                    /* ctl_ += 1 (389) */
     do
     :: atomic { tcb = live };                                 /* the slot (396) */
        atomic { old = rd[tcb] };                              /* its word (397) */
        if
        :: atomic { (old & KSW) != 0 || live != tcb -> skip }  /* swapping or moved: wait (400-404) */
        :: atomic { (old & KSW) == 0 && live == tcb ->          /* the slot again (400) */
             if :: tdis -> nw = old + 1
                :: !tdis && old > 0 -> nw = old - 1
                :: else -> nw = old fi };
           if
           :: atomic { nw == old -> break }                    /* 411 */
           :: atomic { nw != old ->                             /* CAS (417) */
                if :: rd[tcb] == old -> rd[tcb] = nw; break :: else -> skip fi }
           fi
        fi
     od;
     ctl--;                                                    /* 421 */
     atomic { running = 0; tcb = 0; old = 0; nw = 0 }
  od
}

#if defined(REMOTE)
/* The requester's thread: swap_cpu_remote (ring_buffer.cc:501-504),
   NREQ attempts, started while the owner still writes. */
proctype requester() {
  byte sret;
  bit held;
end:
  do
  :: atomic { !owner_done && rqleft > 0 && nswaps == 0 -> rqleft--; rqbusy = 1; sret = 0; held = 0 };
     swap_impl(1);
     atomic { rqbusy = 0; sret = 0 }
  od
}
#endif
#endif

/* ======================================================================== */
/* The reader (reader.cc): get_reader_page (R1..R3), read_page (R4).         */
/* ======================================================================== */

/* R1: find_head -> head (NONE: a writer is inside the push). */
inline find_head() {
  /* prev and the page part of next are written by the reader only: one
     shared access per page, the acquire load of prev->next */
  atomic { head = NONE; p = headhint; i = 0 };
  do
  :: atomic {
       i < 2 * NRING + 2;
       pv = prv[p];
       if
       :: nxt[pv] == p && nfl[pv] == HEAD -> head = p; p = 0; pv = 0; i = 0; break
       :: else -> p = nxt[p]; i++
       fi
     }
  :: atomic { i >= 2 * NRING + 2 -> p = 0; pv = 0; i = 0; break }
  od
}

inline get_reader_page() {
  atomic { bp = NONE; rp = readerp; c = pcommit[rp]; if :: rread < c -> bp = rp :: else fi };
  if
  :: atomic { bp != NONE -> skip }
  :: atomic { bp == NONE -> cpg = commitp };        /* acquire */
     if
     :: atomic { cpg == rp -> c = pcommit[rp]; if :: rread < c -> bp = rp :: else fi }
     :: atomic { cpg != rp -> c = pcommit[rp]; if :: rread < c -> bp = rp :: else fi };
        if
        :: atomic { bp != NONE -> skip }
        :: atomic { bp == NONE -> skip };
           do
           :: find_head();
              if
              :: atomic { head == NONE -> skip }      /* retry */
              :: atomic { head != NONE ->
                 /* R2: reset the reader page (outside the ring, no writer
                    reaches it: the commit has left it) and link it (the
                    page part of head->next and head->prev are the reader's
                    own: writers change only flag bits). */
                   assert(rp != commitp && rp != tail);
                   pent[rp] = 0; rend[rp] = CAP; pcommit[rp] = 0;
                   ghost_clear(rp);
                   after = nxt[head];
                   before = prv[head];
                   nxt[rp] = after; nfl[rp] = HEAD; prv[rp] = before; rstage = 1
                 };
                 atomic {                  /* CAS(before->next: head|HEAD -> rp) */
                   if
                   :: nxt[before] == head && nfl[before] == HEAD ->
                      nxt[before] = rp; nfl[before] = NORMAL; casok = 1;
                      rown = head; rstage = 2
                   :: else -> casok = 0; head = NONE; after = 0; before = 0
                   fi
                 };
                 if
                 :: atomic { casok -> prv[after] = rp };   /* R3: release store of prev */
                    atomic { headhint = after; readerp = head; rread = 0; bp = head;
                             rstage = 0; casok = 0; head = NONE; after = 0; before = 0;
                             break }
                 :: atomic { !casok -> skip }     /* the writer pushed it: again */
                 fi
              fi
           od
        fi
     fi
  fi;
  atomic { rp = 0; cpg = 0 }
}

#if defined(SWAPS)
/* lock_reader (reader.cc:28-42) of the live ring's slot (rring LIVE) or
   of the spare ring's (SPARE: the requester's dump): the slot (acquire),
   the CAS of its buffer's reader_lock (spinning while a swap holds it:
   modelled as waiting), the slot again (moved: unlock, again). B's reads
   are not modelled: the reader that finds B in the slot reads nothing. */
inline lock_reader() {
  do
  :: atomic { rcb = (rring == LIVE -> live : 1 - live) };
     if
     :: atomic { rcb == BUFB -> break }
     :: atomic { rcb == BUFA && rlock == 0 -> rlock = 1 };
        if
        :: atomic { (rring == LIVE -> live : 1 - live) == BUFA -> break }
        :: atomic { (rring == LIVE -> live : 1 - live) != BUFA -> rlock = 0 }
        fi
     fi
  od
}
#endif

/* read_page(rfull) -> ret (1: a page handed out, 0: -EAGAIN) */
inline read_page() {
  ret = 0;
#if defined(SWAPS)
  lock_reader();
  if
  :: atomic { rcb == BUFB -> skip }
  :: atomic { rcb == BUFA -> skip };
#endif
  get_reader_page();
  if
  :: atomic { bp != NONE -> wop = (commitp == bp) };  /* first commit_page (acquire) */
     atomic { c = pcommit[bp];                        /* then the commit index (acquire) */
       if
       :: rread < c && (rread != 0 || wop) && (!rfull || !wop) ->
          /* copy the committed unread part */
          gn = 0;
          ghost_take(bp, rread, c, 2);
          WIT_PADREAD(bp);
          readcnt = readcnt + gn;
          gn = 0;
          rread = c;
          ret = 1
       :: rread < c && (rread != 0 || wop) && rfull && wop -> skip   /* full: refuse the writer's page */
       :: rread < c && rread == 0 && !wop -> skip      /* a trade, next step */
       :: rread >= c -> skip
       fi };
     if
     :: atomic { rread < c && rread == 0 && !wop ->
          /* trade: a page no writer reaches: its entries, its data page */
          assert(inflight_pg[bp] == 0 && tail != bp && commitp != bp);
          gn = 0;
          ghost_take(bp, 0, c, 2);
          assert(gn == pent[bp]);
          WIT_PADREAD(bp);
          readcnt = readcnt + pent[bp];
          gn = 0;
          ghost_clear(bp);              /* the descriptor gets the reader's spare */
          pcommit[bp] = 0;
          rread = 0;
          ret = 1 }
     :: atomic { !(rread < c && rread == 0 && !wop) -> skip }
     fi
  :: atomic { bp == NONE -> skip }
  fi;
#if defined(SWAPS)
  fi;
  /* unlock_reader (reader.cc:218, 44-47) */
  atomic { bp = NONE; c = 0; wop = 0; if :: rcb == BUFA -> rlock = 0 :: else -> skip fi; rcb = 0 }
#else
  atomic { bp = NONE; c = 0; wop = 0 }
#endif
}

proctype reader() {
  byte rp, c, cpg, bp = NONE, head = NONE, p, pv, i, after, before, gi, gn, k;
  bit casok, wop, rfull, ret;
#if defined(SWAPS)
  byte rcb;
  bit rring;
#endif
  do
  :: READER_DONE -> break
  :: atomic { rfull = 0; ret = 0 }; read_page()
  :: atomic { rfull = 1; ret = 0 }; read_page()
  od;
  /* The consumer's final flush (Drainer::do_flush): full pages first, then
     partial ones, at most pages_per_cpu + 2 pages per pass. */
  atomic { rfull = 1; k = 0; ret = 0 };
  do
  :: k < NRING + 2 -> read_page(); if :: ret -> k++ :: else -> break fi
  :: else -> break
  od;
#if !defined(MUT_NO_PARTIAL)
  atomic { rfull = 0; k = 0; ret = 0 };
  do
  :: k < NRING + 2 -> read_page(); if :: ret -> k++ :: else -> break fi
  :: else -> break
  od;
#endif
#if defined(SWAPS)
  /* The requester's dump of the swapped-out buffer (snapshot.cc:240-262):
     spare_->read_page(full = false) until nothing is handed out (at most
     NRING + 2 pages here), then its stats (212). It runs when the writers
     are done: nobody can reach A's pages after the swap (asserted at every
     reservation), so what it reads is what it would read right after the
     swap. */
  if
  :: atomic { live == BUFB -> rring = SPARE; rfull = 0; k = 0; ret = 0; gdump = readcnt };
     do
     :: k < NRING + 2 -> read_page(); if :: ret -> k++ :: else -> break fi
     :: else -> break
     od;
     atomic { gdump = readcnt - gdump; rring = LIVE; k = 0 }
  :: atomic { live == BUFA -> skip }
  fi;
#endif
  /* The accounting identity at the end: every event read exactly once or
     counted in overrun. */
  k = 0;
  d_step {
    assert(cing == 0 && ginfl == 0);
    assert(entries == nwritten);
    /* with swaps: A's entries == what the reader read + what the dump of
       the swapped-out A read (both in readcnt) + overrun */
    assert(entries == readcnt + overrun);
#if defined(SWAPS)
    assert(cingB == 0 && ginflB == 0 && gres == 0 && rlock == 0 && ctl == 0);
    /* every write attempted is an entry in the buffer it landed in, or a
       refusal counted once, by one cause */
    assert(nattempt == entries + entriesB + disA + disB + swref + nested_dropped + commit_overrun + dropped);
#if defined(REMOTE)
    assert(sbn == 0 || mcing + 2 * SB_POP(sbq) == sbn);
#endif
#endif
    k = 0;
    do
    :: k < NSLOT -> assert(slot[k] != 1); k++
    :: else -> break
    od;
    k = 0;
    /* checks of the check (WIT_*): must FAIL, i.e. be reached with the
       identity above holding */
#if defined(WIT_EXACT)
    assert(!(g_entry == 1 && pcommit[tail] > 0));
#endif
#if defined(WIT_PAD)
    assert(!g_padread);
#endif
#if defined(WIT_TAKEBACK)
    assert(!g_takeback);
#endif
#if defined(WIT_REFSTRAD)
    assert(!g_refstrad);
#endif
#if defined(WIT_SIGSWAP)
    assert(!(g_sigok && gdump > 0 && entriesB > 0));
#endif
#if defined(WIT_REMSWAP)
    assert(!(g_remok && gdump > 0 && entriesB > 0));
#endif
#if defined(WIT_SBBUSY)
    assert(!g_sbbusy);
#endif
#if defined(WIT_W3REF)
    assert(!g_w3ref);
#endif
#if defined(WIT_LATE)
    assert(!g_late);
#endif
#if defined(WIT_SWW5)
    assert(!g_sww5);
#endif
    flushed = 1
  }
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < NRING ->
       nxt[i] = (i + 1) % NRING; prv[i] = (i + NRING - 1) % NRING;
       rend[i] = CAP; i++
    :: else -> break
    od;
    nfl[NRING - 1] = HEAD;
    nxt[NRING] = 0; prv[NRING] = NRING - 1; rend[NRING] = CAP;
    tail = 0; commitp = 0; headhint = 0; readerp = NRING; rown = NRING;
#if defined(SWAPS)
    bptr[BUFB] = SPARE;
#if NSIG > 0
    run swaph();
#endif
#if NTGL > 0
    run toggler();
#endif
#if defined(REMOTE)
    run requester();
#endif
#endif
    run owner(); run handler1(); run handler2(); run reader(); run monitor()
  }
}
