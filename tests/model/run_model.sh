#!/bin/sh
# tests/model/run_model.sh - model-check tests/model/ring.pml with Spin:
# the real protocol in several configurations (must report 0 errors), and
# each mutant (the issue's four, and the code before each fix of a flaw
# the model found) and each check of the check (must report a
# counterexample). Exits non-zero if a real configuration fails, a mutant
# or check passes, or spin is missing.
#
# Usage: tests/model/run_model.sh [workdir]     (default: a temporary dir)
# Env:   MODEL_MEMLIM (MB, default 3072), MODEL_DEPTH (pan -m, default 200000)
set -u

here=$(cd "$(dirname "$0")" && pwd)
model="$here/ring.pml"
if ! command -v spin >/dev/null 2>&1; then
  echo "model_spin: FAIL: spin is needed (apt-get install spin)" >&2
  exit 1
fi
CC=${CC:-cc}
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "model_spin: FAIL: a C compiler is needed for pan ($CC not found)" >&2
  exit 1
fi
memlim=${MODEL_MEMLIM:-3072}
depth=${MODEL_DEPTH:-200000}
if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/rbtrace-model.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

status=0
start_all=$(date +%s)

# run NAME EXPECT CFLAG DEFINES...: EXPECT is "pass" (0 errors, search complete)
# or "fail" (a counterexample: the trail is replayed for its length). With
# $want set, a "fail" run must violate the assertion whose text contains it
# (a witness, or the identity, must not pass for another assertion).
want=
run() {
  name=$1
  expect=$2
  opt=$3
  shift 3
  dir="$work/$name"
  mkdir -p "$dir"
  cp "$model" "$dir/ring.pml"
  t0=$(date +%s)
  if ! (cd "$dir" && spin "$@" -a ring.pml >spin.out 2>&1); then
    echo "$name: FAIL: spin -a failed"; cat "$dir/spin.out"; status=1; return
  fi
  # Single-threaded; no partial-order reduction (the model uses provided
  # clauses for the handlers); states compressed (COLLAPSE).
  if ! (cd "$dir" && "$CC" "$opt" -w -DSAFETY -DNOREDUCE -DCOLLAPSE -DMEMLIM="$memlim" \
          -o pan pan.c >cc.out 2>&1); then
    echo "$name: FAIL: compiling pan failed"; cat "$dir/cc.out"; status=1; return
  fi
  # A mutant's search iteratively shortens its counterexample (-i, cheap
  # for them); the trail kept is the shortest found.
  case $name in mutant_*) iter=-i ;; *) iter= ;; esac
  (cd "$dir" && ./pan -m"$depth" $iter >pan.out 2>&1)
  t1=$(date +%s)
  out="$dir/pan.out"
  errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$out" | head -1)
  stored=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | head -1)
  dreach=$(sed -n 's/.*depth reached \([0-9][0-9]*\),.*/\1/p' "$out" | head -1)
  ptime=$(sed -n 's/^pan: elapsed time \(.*\)/\1/p' "$out" | head -1)
  echo "$name ($*):"
  grep -m1 "assertion violated" "$out" | sed 's/^/    first: /'
  grep -E "State-vector|states, stored|pan: elapsed time|error: max search depth|out of memory" "$out" | sed 's/^/    /'
  echo "    => errors=${errors:-?} states=${stored:-?} depth=${dreach:-?} pan-time=${ptime:-?} wall=$((t1 - t0))s"
  if grep -q "error: max search depth too small" "$out"; then
    echo "$name: FAIL: the depth bound $depth cut the search (raise MODEL_DEPTH)"
    status=1; return
  fi
  if grep -q "out of memory\|pan: reached -DMEMLIM" "$out"; then
    echo "$name: FAIL: out of memory (MODEL_MEMLIM=$memlim MB)"
    status=1; return
  fi
  if [ "$expect" = pass ]; then
    if [ "${errors:-x}" != 0 ]; then
      echo "$name: FAIL: the real model has a counterexample (trail in $dir/ring.pml.trail):"
      (cd "$dir" && spin "$@" -t -p -g -l ring.pml 2>&1 | tail -60)
      status=1
    else
      echo "$name: ok (0 errors, exhaustive at these bounds)"
    fi
  else
    if [ "${errors:-0}" = 0 ] || [ ! -f "$dir/ring.pml.trail" ]; then
      echo "$name: FAIL: the mutant was NOT caught (no counterexample)"
      status=1
    elif [ -n "$want" ] && ! grep -m1 "assertion violated" "$out" | grep -qF "$want"; then
      echo "$name: FAIL: the counterexample violates another assertion than the one containing '$want'"
      (cd "$dir" && spin "$@" -t -p -g -l ring.pml 2>&1 | tail -60)
      status=1
    else
      steps=$(cd "$dir" && spin "$@" -t ring.pml 2>&1 | sed -n 's/^spin: trail ends after \([0-9]*\) steps.*/\1/p' | head -1)
      what=$(grep -m1 "assertion violated" "$out" | sed 's/ (at depth.*//')
      echo "$name: ok (caught: counterexample, trail length ${steps:-?} steps: $what)"
    fi
  fi
}

# The real protocol. Bounds: NRING ring pages + 1 reader page, CAP slots a
# page, NOWN owner writes, H1N handler runs on the owner, H2N handler runs
# on a handler (nesting depth 2); SZ0/SZ1/SZ2 slots an owner's / level-1 /
# level-2 event takes (default 1).
# (-O2 for the real model: pan runs long; -O0 for the mutants: compiling
# pan.c takes longer than finding their counterexample.)
run overwrite_2x2 pass -O2 -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=1
run overwrite_3x1 pass -O2 -DNRING=3 -DCAP=1 -DNOWN=2 -DH1N=1 -DH2N=1
run pc_2x2        pass -O2 -DPC -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=1
# Sizes: the owner's events take 2 slots of a 3-slot page, the handlers' 1.
# A reservation straddles the page end (W5a pads, real_end < capacity), a
# page fills exactly (2 + 1) and the next reservation starts AT capacity,
# refused straddlers keep their padding, refused non-straddlers take their
# slots back; the final flush's identity is checked after each.
run sizes_2x3     pass -O2 -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
# Checks of the check for sizes_2x3: each scenario is reached with the
# final accounting identity holding (a counterexample is the witness).
want='g_entry'
run check_exact_fill_tail     fail -O0 -DWIT_EXACT -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
want='g_padread'
run check_padded_page_read    fail -O0 -DWIT_PAD -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
want='g_takeback'
run check_takeback            fail -O0 -DWIT_TAKEBACK -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
want='g_refstrad'
run check_refused_straddler   fail -O0 -DWIT_REFSTRAD -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
want=
# The mutants: each must be caught.
run mutant_a_plain_decrement fail -O0 -DMUT_A -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=1
run mutant_b_kernel_loop     fail -O0 -DMUT_B -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=1
# A check of the check: without the flush's partial pass the final
# accounting identity must fail (it is not vacuous).
want='entries==(readcnt+overrun)'
run check_no_partial_flush   fail -O0 -DMUT_NO_PARTIAL -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=1
# The same with 2-slot events (straddling, padding, exact fill).
run check_no_partial_flush_sizes fail -O0 -DMUT_NO_PARTIAL -DSZ0=2 -DNRING=2 -DCAP=3 -DNOWN=3 -DH1N=1 -DH2N=1
want=

# Swaps (-DSWAPS; docs/DESIGN.md section 11, "Swaps in the model"): W0, W1
# and W3 in the writer, a spare buffer B (no pages), the reader lock, the
# requester's dump of the swapped-out buffer, at most one successful swap.
# NSIG: attempts of the doorbell handler's swap_cpu (S2..S4), which may
# start at any step of the owner and of a level-1 handler, W5 included;
# NREQ: attempts of a requester thread's swap_cpu_remote (M1..M4), with the
# owner's store buffer on its state word; NTGL: record-disabled toggles (a
# handler). -O0 throughout: compiling pan.c at -O2 costs more than it saves
# at these sizes.
sig="-DSWAPS -DNSIG=1 -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=1 -DH2N=0"
rem="-DSWAPS -DNSIG=0 -DNREQ=2 -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=0 -DH2N=0"
run swap_signal_2x2    pass -O0 $sig
# No handler writes here (the next-but-two run has one).
run swap_remote_2x2    pass -O0 $rem
run swap_toggle_signal pass -O0 -DSWAPS -DNTGL=2 -DNSIG=1 -DNRING=2 -DCAP=2 -DNOWN=3 -DH1N=0 -DH2N=0
run swap_toggle_remote pass -O0 -DSWAPS -DNTGL=2 -DNSIG=0 -DNREQ=1 -DNRING=2 -DCAP=2 -DNOWN=2 -DH1N=0 -DH2N=0
# The remote path with a handler writer (the configuration of the second
# finding below, on the fixed code).
run swap_remote_nested pass -O0 -DSWAPS -DNSIG=0 -DNREQ=1 -DNRING=2 -DCAP=2 -DNOWN=1 -DH1N=1 -DH2N=0
# Checks of the check, at the bounds of the runs above: each scenario is
# reached with every property and the final identities holding.
want='g_sigok'
run check_signal_swap        fail -O0 -DWIT_SIGSWAP $sig
want='g_sww5'
run check_swap_inside_w5     fail -O0 -DWIT_SWW5 $sig
want='g_w3ref'
run check_w3_refusal_signal  fail -O0 -DWIT_W3REF $sig
want='g_remok'
run check_remote_swap        fail -O0 -DWIT_REMSWAP $rem
want='g_sbbusy'
run check_store_buffer_busy  fail -O0 -DWIT_SBBUSY $rem
want='g_w3ref'
run check_w3_refusal_remote  fail -O0 -DWIT_W3REF $rem
# Mutants (c) and (d), at the smallest bounds that show them.
want='live==0'
run mutant_c_no_w3_recheck   fail -O0 -DMUT_C -DSWAPS -DNSIG=1 -DNRING=2 -DCAP=2 -DNOWN=2 -DH1N=0 -DH2N=0
want='gres==0'
run mutant_d_no_membarrier   fail -O0 -DMUT_D -DSWAPS -DNSIG=0 -DNREQ=1 -DNRING=2 -DCAP=2 -DNOWN=1 -DH1N=0 -DH2N=0
# The model's findings, as mutants: the code before each fix must fail
# (docs/DESIGN.md section 11, "Findings"; both fixed in the code).
# refuse_moved undid W2 with a plain sub although a nested writer may have
# reserved in the buffer since (it left the commit to us): with the remote
# swap, that event was never committed (lost if the swap then went
# through; invisible until the owner's next write otherwise).
want='cmts==ecmts'
run mutant_moved_plain_sub fail -O0 -DMUT_MOVED -DSWAPS -DNSIG=0 -DNREQ=1 -DNRING=2 -DCAP=2 -DNOWN=1 -DH1N=1 -DH2N=0
# refuse_disabled checked the back-pointer, then incremented `disabled` of
# the buffer: an enable and a swap in between made it count in a buffer
# the requester was reading and resetting.
want='live==cb'
run mutant_late_disabled_count fail -O0 -DMUT_LATE -DCHK_LATE -DSWAPS -DNTGL=2 -DNSIG=1 -DNRING=2 -DCAP=2 -DNOWN=2 -DH1N=0 -DH2N=0
want=

end_all=$(date +%s)
echo "model_spin: total $((end_all - start_all))s, $( [ $status = 0 ] && echo PASS || echo FAIL )"
exit $status
