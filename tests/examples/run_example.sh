#!/usr/bin/env bash
# Runs one of examples/ and checks what it produced: files, event counts,
# exit codes (not only that it ran). Usage: run_example.sh NAME BINDIR WORKDIR
# (BINDIR: the build's bin/, holding rbtrace and rbtrace-example-*).
# Every wait is for a condition, bounded (60 s): no sleep hoping for timing.
set -euo pipefail
name=$1 bin=$2 work=$3
export PATH="$bin:$PATH"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
unset RBTRACE_RECORD RBTRACE_CONTROL_DIR

fail() { echo "example $name: FAIL: $*"; exit 1; }
# expect_count WHAT WANT GOT
expect_count() { [ "$2" = "$3" ] || fail "$1: expected $2, got $3"; }
# A count of lines matching a pattern (grep -c exits 1 on 0).
count() { grep -c -- "$1" "$2" || true; }
# wait_for TEST...: polls the test every 0.1 s, up to 60 s.
wait_for() {
  for _ in $(seq 600); do "$@" && return 0; sleep 0.1; done
  fail "timed out waiting for: $*"
}

case $name in
record-to-disk)
  rbtrace-example-record-to-disk rec 10000 >out.txt
  cat out.txt
  grep -q '^published 20000 of 20000 events in 1 files' out.txt || fail "not every event published"
  files=(rec/*.dat)
  expect_count "trace files" 1 "${#files[@]}"
  rbtrace report "${files[@]}" >report.txt
  expect_count "app:work events in rbtrace report" 20000 "$(count ' work: ' report.txt)"
  trace-cmd report "${files[@]}" >tc.txt 2>&1 || fail "trace-cmd report failed"
  expect_count "app:work events in trace-cmd report" 20000 "$(count ' work: ' tc.txt)"
  ;;
read-tracedat)
  rbtrace-example-record-to-disk rec 1000 >/dev/null
  rbtrace-example-read-tracedat rec/*.dat >out.txt
  cat out.txt
  grep -qx 'app:work: 2000 events' out.txt || fail "event count"
  # value = 2 * seq, seq 0..999, two threads: 4 * 499500
  grep -qx 'sum of value: 1998000' out.txt || fail "sum of the value field"
  head -c 5000 rec/*.dat >truncated.dat
  if rbtrace-example-read-tracedat truncated.dat >/dev/null 2>err.txt; then
    fail "a truncated file was read without an error"
  fi
  grep -q 'truncated' err.txt || fail "the error does not say truncated: $(cat err.txt)"
  ;;
flight-recorder)
  rbtrace-example-flight-recorder fr >out.txt
  cat out.txt
  files=(fr/crash-*.dat)
  expect_count "crash files" 1 "${#files[@]}"
  rbtrace report "${files[0]}" >report.txt
  grep -q 'request: *id=4321 status=500' report.txt || fail "the failing request is not in the snapshot"
  grep -q 'error: *id=4321 what=database timeout' report.txt || fail "the error event is missing"
  ! grep -q 'request: *id=0 ' report.txt || fail "the oldest request was not overwritten (ring too big?)"
  grep -q 'EVENTS DROPPED' report.txt || fail "the overwritten events are not reported"
  ! grep -q 'id=4322' report.txt || fail "events after the error are in the snapshot"
  ;;
thread-pool)
  rbtrace-example-thread-pool 16 >out.txt
  cat out.txt
  grep -qE '^threads=16 slots=16 no_cpu_dropped=0 written=16000 read=16000$' out.txt ||
    fail "slots on demand or accounting"
  ;;
events-on-off)
  rbtrace-example-events-on-off >out.txt
  cat out.txt
  grep -qE '^net:\* disabled: +disk:io$' out.txt || fail "pattern disable"
  grep -qE '^ring off: +\(nothing\)$' out.txt || fail "record_off"
  grep -qx 'refused while off: 3' out.txt || fail "refusals while off not counted"
  ;;
library)
  rbtrace-example-library-host lib >out.txt
  rbtrace-example-read-tracedat lib/*.dat >host.txt
  cat host.txt
  grep -qx 'mylib:query: 1000 events' host.txt || fail "host: mylib:query count"
  grep -qx 'rbtrace:slice_begin: 1000 events' host.txt || fail "host: RBTRACE_SCOPE begins"
  grep -qx 'rbtrace:slice_end: 1000 events' host.txt || fail "host: RBTRACE_SCOPE ends"
  # The environment alone, with a recording's defaults (producer mode, 256
  # pages per CPU: room for every event of the run), so the count is exact
  # whatever the consumer thread's scheduling.
  RBTRACE_RECORD="$work/auto" rbtrace-example-library-autohost >auto.txt
  grep -q 'recording started by the environment' auto.txt || fail "autostart did not start"
  rbtrace-example-read-tracedat auto/*.dat >autoread.txt
  cat autoread.txt
  grep -qx 'mylib:query: 1000 events' autoread.txt || fail "autohost: mylib:query count"
  rbtrace-example-library-autohost >none.txt
  grep -q '^not tracing' none.txt || fail "no environment: something traced"
  ;;
request-latency)
  rbtrace-example-request-latency lat 100 >out.txt
  rbtrace export --chrome lat/*.dat -o latency.json
  jq empty latency.json || fail "not JSON"
  for p in B E b e; do
    printf '%s: %s\n' "$p" "$(grep -o "\"ph\":\"$p\"" latency.json | wc -l)"
  done | tee phases.txt
  expect_count "B (handle, parse, db per request)" "B: 300" "$(sed -n 1p phases.txt)"
  expect_count "E" "E: 300" "$(sed -n 2p phases.txt)"
  expect_count "b (one async slice per request)" "b: 100" "$(sed -n 3p phases.txt)"
  expect_count "e" "e: 100" "$(sed -n 4p phases.txt)"
  # Every async begin has its end: the same ids.
  diff <(jq -r '.traceEvents[] | select(.ph=="b") | .id' latency.json | sort) \
       <(jq -r '.traceEvents[] | select(.ph=="e") | .id' latency.json | sort) ||
    fail "async begin/end ids differ"
  ;;
recover-crash)
  rbtrace-example-recover-crash crash >out.txt
  cat out.txt
  grep -qE '^recovered 1 sessions, [1-9][0-9]* pages \(0 rejected\)' out.txt || fail "recover"
  [ -z "$(ls -A crash/spool)" ] || fail "the spool is not empty after recover"
  files=(crash/*.dat)
  expect_count "recovered files" 1 "${#files[@]}"
  rbtrace report "${files[0]}" >report.txt
  [ "$(count ' step: ' report.txt)" -gt 0 ] || fail "no crash:step event in the recovered file"
  # A second recovery finds nothing to do (the CLI's form of recover_spool).
  rbtrace recover crash | tee recover2.txt
  grep -q '^0 dead session' recover2.txt || fail "a second recover found sessions"
  ;;
blocked-signals)
  rbtrace-example-blocked-signals snap.dat >out.txt
  cat out.txt
  grep -qx "2 of 2 workers' CPUs captured without a signal" out.txt || fail "remote swap path"
  rbtrace report snap.dat >report.txt
  [ "$(count ' step: ' report.txt)" -gt 0 ] || fail "no worker event in the snapshot"
  ;;
daemon)
  export RBTRACE_CONTROL_DIR="$work/ctl"
  rbtrace-example-daemon >daemon.txt &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null || true' EXIT
  wait_for test -S "ctl/$pid.sock"
  rbtrace list >list.txt
  grep -qE "^$pid " list.txt || fail "rbtrace list does not show $pid"
  rbtrace stat "$pid" >stat.txt
  grep -q 'recording: none' stat.txt || fail "stat"
  rbtrace events "$pid" >events.txt
  grep -qE '^daemon:tick +enabled$' events.txt || fail "events list"
  rbtrace events "$pid" 'daemon:*' --disable
  rbtrace events "$pid" 'daemon:*' >events2.txt
  expect_count "daemon events disabled" 2 "$(count disabled events2.txt)"
  rbtrace events "$pid" '*' --enable
  rbtrace events "$pid" 'daemon:*' >events3.txt
  expect_count "daemon events enabled" 2 "$(count ' enabled$' events3.txt)"
  # An event pattern that matches nothing: exit 1 (the table in rbtrace --help).
  set +e; rbtrace events "$pid" 'nosuch:*' --enable >/dev/null 2>&1; rc=$?; set -e
  expect_count "exit status of a pattern matching nothing" 1 "$rc"
  rbtrace snapshot "$pid" -o snap.dat
  rbtrace report snap.dat >snap.txt
  [ "$(count ' tick: ' snap.txt)" -gt 0 ] || fail "no tick in the snapshot"
  rbtrace record start "$pid" -o rec
  # Rotate until a published segment holds events (the daemon ticks every
  # millisecond; on a loaded machine the first may be empty).
  rotated_with_events() {
    rbtrace record rotate "$pid" >rotate.txt
    grep -qE 'published \([0-9]+ pages, [1-9][0-9]* events\)' rotate.txt
  }
  wait_for rotated_with_events
  rbtrace record status "$pid" | tee status.txt
  grep -q 'recording: running' status.txt || fail "record status"
  set +e; rbtrace record start "$pid" -o rec2 >/dev/null 2>&1; rc=$?; set -e
  expect_count "exit status of a second record start (refused)" 6 "$rc"
  rbtrace record stop "$pid"
  files=(rec/*.dat)
  [ "${#files[@]}" -ge 2 ] || fail "expected at least 2 files (rotate, stop), got ${#files[@]}"
  rbtrace report "${files[@]}" >rec.txt
  [ "$(count ' tick: ' rec.txt)" -gt 0 ] || fail "no tick recorded"
  kill -TERM "$pid"
  wait "$pid" || fail "the daemon exited with $?"
  trap - EXIT
  grep -q 'signal 15, stopping' daemon.txt || fail "the daemon did not stop on SIGTERM"
  [ ! -e "ctl/$pid.sock" ] || fail "the socket was left behind"
  set +e; rbtrace stat "$pid" >/dev/null 2>&1; rc=$?; set -e
  expect_count "exit status of stat on a process gone" 4 "$rc"
  ;;
*)
  fail "unknown example"
  ;;
esac
echo "example $name: ok"
