#!/bin/sh
# tests/model/run_model.sh - model-check tests/model/ring.pml with Spin:
# the real protocol in several configurations (must report 0 errors) and
# each mutant (must report a counterexample). Exits non-zero if a real
# configuration fails, a mutant passes, or spin is missing.
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

end_all=$(date +%s)
echo "model_spin: total $((end_all - start_all))s, $( [ $status = 0 ] && echo PASS || echo FAIL )"
exit $status
