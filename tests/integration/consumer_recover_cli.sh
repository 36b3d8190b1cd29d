#!/usr/bin/env bash
# rbtrace-demo --out DIR is killed with SIGKILL mid-recording; `rbtrace
# recover DIR` turns its spool into trace.dat files; trace-cmd report (a
# real client) and rbtrace report read the first published file and every
# recovered one (the gtest integration_consumer_crash checks all files with
# its own walker). Usage: consumer_recover_cli.sh RBTRACE RBTRACE_DEMO WORKDIR
set -euo pipefail
rbtrace=$1 demo=$2 dir=$3
rm -rf "$dir"
"$demo" --seconds 30 --threads 2 --out "$dir" >/dev/null 2>&1 &
pid=$!
sleep 1.5
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
ls "$dir"/spool/*/*.meta >/dev/null  # something was in flight
first=$(ls "$dir"/*.dat 2>/dev/null | head -1 || true)
"$rbtrace" recover "$dir" | tee "$dir/recover.txt"
[ -z "$(ls -A "$dir/spool")" ] || { echo "spool not empty after recover"; exit 1; }
recovered=$(sed -n 's/^recovered //p' "$dir/recover.txt")
[ -n "$recovered" ] || { echo "nothing recovered"; exit 1; }
n=0
for f in $first $recovered; do
  trace-cmd report "$f" >"$dir/report.txt" 2>&1 || { echo "trace-cmd report $f failed"; tail "$dir/report.txt"; exit 1; }
  grep -q "work:" "$dir/report.txt" || { echo "no events in $f"; exit 1; }
  "$rbtrace" report "$f" >/dev/null || { echo "rbtrace report $f failed"; exit 1; }
  n=$((n + 1))
done
[ "$n" -ge 1 ] || { echo "no file read"; exit 1; }
echo "recover-cli: $n files read by trace-cmd and rbtrace report"
rm -rf "$dir"
