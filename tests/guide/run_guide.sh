#!/usr/bin/env bash
# Runs every ```sh block of docs/GUIDE.md, in order, as one bash script in
# an empty directory, with the build's bin/ first in PATH (the guide writes
# `rbtrace` and `rbtrace-example-*`). Fails on the first command that
# fails (set -euo pipefail), naming the guide's line. Blocks of any other
# kind (```text, ```cpp, ```cmake) are not run.
# Usage: run_guide.sh GUIDE.md BINDIR WORKDIR
set -euo pipefail
guide=$1 bin=$2 work=$3
[ -f "$guide" ] || { echo "guide: no $guide"; exit 1; }
[ -x "$bin/rbtrace" ] || { echo "guide: no $bin/rbtrace"; exit 1; }
guide=$(cd "$(dirname "$guide")" && pwd)/$(basename "$guide")
bin=$(cd "$bin" && pwd)
rm -rf "$work"
mkdir -p "$work"
script="$work.sh"

# The script: a prologue, then each block preceded by a line that says
# where it comes from (echoed, so a failure's output shows the block).
awk -v bin="$bin" '
  BEGIN {
    print "set -euo pipefail"
    print "export PATH=\"" bin ":$PATH\""
    # What a user shell might carry would change what the guide shows.
    print "unset RBTRACE_RECORD RBTRACE_CONTROL_DIR RBTRACE_CPUS RBTRACE_MAX_CPUS RBTRACE_PAGES"
    print "unset RBTRACE_PAGE_SIZE RBTRACE_MODE RBTRACE_CLOCK RBTRACE_SEGMENT_MB RBTRACE_PREFIX"
    # A background job the guide started and a failure left running.
    print "trap '\''kill $(jobs -p) 2>/dev/null || true'\'' EXIT"
    print "trap '\''echo \"guide: exit status $? from: $BASH_COMMAND (in the block above)\"'\'' ERR"
  }
  /^```sh[ \t]*$/ { inblock = 1; blocks++; printf "echo \"== GUIDE.md:%d\"\n", NR; next }
  /^```/ && inblock { inblock = 0; next }
  inblock { print; if ($0 !~ /^[ \t]*(#|$)/) commands++ }
  END {
    if (inblock) { print "echo \"guide: an unterminated sh block\"; exit 1" }
    printf "echo \"guide: %d blocks, %d commands ran\"\n", blocks, commands
  }
' "$guide" >"$script"

blocks=$(grep -c '^echo "== GUIDE.md:' "$script" || true)
[ "$blocks" -gt 0 ] || { echo "guide: no sh block found in $guide"; exit 1; }
cd "$work"
# `set -x`-like tracing would double the output; each command's own output
# and the block markers say enough. Bounded: ctest's TIMEOUT.
exec bash "$script"
