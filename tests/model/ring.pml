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
 * Abstractions (each one is explained in the design text):
 *   - an event is 1 or 2 slots (bytes are not modelled; time extends and
 *     absolute stamps are not modelled as such, a 2-slot event stands for
 *     a longer reservation; the stamp pair's "prev_pos == w && delta fits"
 *     is a non-deterministic choice, which over-approximates the fast
 *     path). With 2-slot events a reservation may straddle the page end
 *     (W5a pads, real_end < capacity) and a page may fill exactly with
 *     the next reservation starting at capacity;
 *   - record_disabled (W1), the back-pointer check (W3), swaps, discards,
 *     the loss marks (push_mark/push_seq/refused_mark) are not modelled;
 *   - memory is sequentially consistent: one Promela statement per shared
 *     load/store/RMW; owner-local bookkeeping that no other thread reads
 *     is folded into the neighbouring statement;
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
  od
}

/* ======================================================================== */
/* The writer: one write (reserve + payload + commit), as in writer.h.       */
/* Every writer process (the owner, each handler level) declares these.      */
/* ======================================================================== */
#define WRITER_LOCALS \
  byte ecing, ecmts, tp, wi, ws, ei, es, rpg, rslot, cend, cc, cm, cp, tt, \
       nx, nxf, nh, pv, gi, gn, gu, sz; \
  bit fast, ok, resume, isrp, casok, rc

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
       :: cing == cc && cmts == cm -> cing--; ginfl--; cc = 0; cm = 0; break
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
                 pent[tp]++; entries++; inflight_pg[tp]++;
                 rpg = tp; rslot = ei - sz; ok = 1; wi = 0; ws = 0; ei = 0; es = 0; break }
     fi
  od
}

/* The size of this write (slots): the level's SZ, or a free choice. */
#if defined(EVMIX)
#define PICK_SIZE(lvsz) if :: sz = 1 :: sz = 2 fi
#else
#define PICK_SIZE(lvsz) sz = lvsz
#endif

inline write(lvsz) {
  /* W2: committing++, commits++ in one add (the event's size is the
     caller's, chosen before: folded in) */
  atomic { PICK_SIZE(lvsz); cing++; cmts++; ecing = cing; ecmts = cmts; ginfl++; ok = 0; fast = 0 };
  if
  :: atomic { ecing == 1 -> tp = tail };  /* stamp pair matches, delta fits: fast try */
     atomic { wi = widx[tp]; ws = wseq[tp] };                     /* A */
     atomic { widx[tp] = widx[tp] + sz; ei = widx[tp]; es = wseq[tp] };  /* B */
     if                                   /* writer.h:151: end - evlen == w && end <= capacity */
     :: atomic { ei - sz == wi && es == ws && ei <= CAP ->        /* W4b */
                 pent[tp]++; entries++; inflight_pg[tp]++;
                 rpg = tp; rslot = wi; cend = ei; fast = 1; ok = 1;
                 wi = 0; ws = 0; ei = 0; es = 0 }
     :: atomic { !(ei - sz == wi && es == ws && ei <= CAP) -> resume = 1 };
        reserve_full()
     fi
  :: atomic { ecing == 1 -> skip };       /* the slow path from the start */
     reserve_full()
  :: atomic { ecing != 1 -> skip };       /* nested: reserve_nested */
     reserve_full()
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
          :: cing == ecing && cmts == ecmts -> cing--; ginfl--; fast = 0
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
  atomic { ecing = 0; ecmts = 0; rpg = 0; rslot = 0; cend = 0; fast = 0; ok = 0; sz = 0 }
}

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

/* read_page(rfull) -> ret (1: a page handed out, 0: -EAGAIN) */
inline read_page() {
  ret = 0;
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
  atomic { bp = NONE; c = 0; wop = 0 }
}

proctype reader() {
  byte rp, c, cpg, bp = NONE, head = NONE, p, pv, i, after, before, gi, gn, k;
  bit casok, wop, rfull, ret;
  do
  :: owner_done -> break
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
  /* The accounting identity at the end: every event read exactly once or
     counted in overrun. */
  k = 0;
  d_step {
    assert(cing == 0 && ginfl == 0);
    assert(entries == nwritten);
    assert(entries == readcnt + overrun);
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
    run owner(); run handler1(); run handler2(); run reader(); run monitor()
  }
}
