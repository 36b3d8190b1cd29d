#!/usr/bin/env python3
"""bench/callgrind.py - instructions per event on the writer fast path.

Runs build/bin/rbtrace-callgrind-driver under valgrind --tool=callgrind with
N and 2N events and divides the difference by N: start-up, calibration and
ring creation cancel, page crossings (W5) are counted at their steady-state
rate. Instruction counts do not depend on what else the machine is doing, so
this is the stable number on a noisy machine.

Prints:
  * instructions per event (whole loop, and without the driver's own code),
  * per function (self cost, per event),
  * per writer step W0..W6: every instruction is mapped to the innermost
    source line in rbtrace/detail/writer.h (the inline writer) of its inline
    chain (addr2line -i), and lines to the steps by the writer's functions
    and the W labels in its comments; the general W6 by its functions in
    ringbuf/src/writer.cc.

Usage: bench/callgrind.py [--build DIR] [-n N] [--mode reserve|emit|disabled|no-tracer|lib-no-tracer|lib-traced|lib-untraced|lib-disabled]
                       [--clock counter|mono] [--json FILE] [--keep DIR]
Needs: valgrind (callgrind_annotate), binutils (addr2line), python3.
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP_NAMES = collections.OrderedDict([
    ("W0", "entry: length check, TLS binding (cached CPU buffer); reserve_first"),
    ("W1", "record_disabled checks (global, per CPU)"),
    ("W2", "enter: one add to the state word (committing, commits)"),
    ("W3", "back-pointer re-check, nesting depth"),
    ("W4", "clock read, stamp pair check, reserve (xadd)"),
    ("W4b", "page entries, event header, stamp pair, Reservation"),
    ("W4-full", "reserve_full (and reserve_flagged, reserve_nested): time events, "
                "nesting, other clocks, page starts (amortized)"),
    ("W5", "page crossing (move_tail), amortized"),
    ("W6", "commit fast path: commit store, cmpxchg on the state"),
    ("W6-slow", "end_commit loop, set_commit_to_write (amortized)"),
    ("rb-other", "other ring buffer code (writer.h outside the steps, ringbuf/src)"),
    ("event", "typed event: enabled check, record fill"),
    ("driver", "driver loop, call, payload copy"),
    ("other", "elsewhere"),
])


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def parse_callgrind(path):
    """Self cost (Ir) per function and per (object, instruction address)."""
    per_fn = collections.Counter()
    per_addr = collections.Counter()
    total = None
    fn = ob = None
    skip_next = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*" or line.startswith("0x"):
                if skip_next:  # the inclusive cost of a call
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) < 3:
                    continue
                addr = int(parts[0], 16) if parts[0].startswith("0x") else None
                ir = int(parts[2])
                per_fn[(ob, fn)] += ir
                if addr is not None:
                    per_addr[(ob, addr)] += ir
                continue
            if line.startswith("fn="):
                fn = line[3:]
            elif line.startswith("ob="):
                ob = line[3:]
            elif line.startswith("calls="):
                skip_next = True
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
    if total is None:
        total = sum(per_fn.values())
    return total, per_fn, per_addr


def header_regions(header):
    """Line number -> step, from the functions of rbtrace/detail/writer.h
    and the W labels in the fast path's comments."""
    lines = open(header).read().split("\n")

    def find(pat, start=0):
        for i in range(start, len(lines)):
            if re.search(pat, lines[i]):
                return i + 1  # 1-based
        raise SystemExit("bench/callgrind.py: cannot find /%s/ in %s" % (pat, header))

    def func_end(start):
        for i in range(start, len(lines)):
            if lines[i] == "}":
                return i + 1
        return len(lines)

    def func(pat, step):
        first = find(pat)
        return (first, func_end(first), step)

    # W0: the length check and the first binding (reserve), the other
    # bindings (thread_cpu) and the first event of a thread (reserve_first).
    regions = [func(r"inline int32_t thread_cpu\(", "W0"),
               func(r"Reservation RingBuffer::reserve\(uint32_t length\) \{", "W0"),
               func(r"Reservation RingBuffer::reserve_first\(", "W0")]
    # The inline fast path: W1..W4b in RingBuffer::reserve_fast, by label,
    # and W4b's event header.
    res = find(r"Reservation RingBuffer::reserve_fast\(")
    w1 = find(r"// W1", res)
    w2 = find(r"// W2", w1)
    w3 = find(r"// W3", w2)
    w4 = find(r"// W4", w3)
    w4b = find(r"// W4b", w4)
    res_end = func_end(w4b)
    regions += [(res, w1 - 1, "W0"), (w1, w2 - 1, "W1"), (w2, w3 - 1, "W2"),
                (w3, w4 - 1, "W3"), (w4, w4b - 1, "W4"), (w4b, res_end, "W4b")]
    regions.append(func(r"unsigned char\* write_data_header\(", "W4b"))
    # The paths the fast one leaves for: the full W4 (time events, nesting,
    # interruptions, page starts) and the way into it for nested writers and
    # other clocks; page crossings (W5); the commit (W6, fast path).
    regions.append(func(r"Reservation RingBuffer::reserve_flagged\(", "W4-full"))
    regions.append(func(r"Reservation RingBuffer::reserve_nested\(", "W4-full"))
    regions.append(func(r"Reservation RingBuffer::reserve_full\(", "W4-full"))
    regions.append(func(r"int RingBuffer::move_tail\(", "W5"))
    regions.append(func(r"void RingBuffer::commit\(const Reservation& r\) \{", "W6"))
    return regions


def step_of_line(regions, line):
    best = None
    for first, last, step in regions:
        if first <= line <= last:
            if best is None or (last - first) < (best[1] - best[0]):
                best = (first, last, step)
    return best[2] if best else "rb-other"


def addr2line(binary, addrs):
    """addr -> list of (function, file, line), innermost first."""
    if not addrs:
        return {}
    inp = "".join("0x%x\n" % a for a in addrs)
    out = subprocess.run(["addr2line", "-i", "-f", "-C", "-a", "-e", binary],
                         input=inp, capture_output=True, text=True, check=True).stdout
    result = {}
    cur = None
    it = iter(out.split("\n"))
    for line in it:
        if re.match(r"^0x[0-9a-f]+$", line):
            cur = int(line, 16)
            result[cur] = []
            continue
        if cur is None or not line:
            continue
        fn = line
        loc = next(it, "")
        m = re.match(r"^(.*):(\d+)", loc)
        if m:
            result[cur].append((fn, m.group(1), int(m.group(2))))
        else:
            result[cur].append((fn, loc, 0))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--mode", default="reserve", choices=["reserve", "emit", "disabled", "no-tracer", "lib-no-tracer", "lib-traced", "lib-untraced", "lib-disabled"])
    ap.add_argument("--clock", default="counter", choices=["counter", "mono"])
    ap.add_argument("--json", help="write the result as JSON to this file")
    ap.add_argument("--keep", help="keep the callgrind.out files in this directory")
    ap.add_argument("--quiet", action="store_true", help="only the summary line")
    ap.add_argument("--lines", action="store_true",
                    help="list every source line of each step with its instructions per event")
    a = ap.parse_args()

    for tool in ("valgrind", "callgrind_annotate", "addr2line"):
        if not shutil.which(tool):
            sys.exit("bench/callgrind.py: %s not found (apt-get install valgrind binutils)" % tool)
    driver = os.path.join(a.build, "bin", "rbtrace-callgrind-driver")
    if os.path.exists(os.path.join(a.build, "CMakeCache.txt")):
        run(["cmake", "--build", a.build, "-j1", "--target", "rbtrace-callgrind-driver"],
            stdout=subprocess.DEVNULL)
    if not os.path.exists(driver):
        sys.exit("bench/callgrind.py: %s not found; configure and build first:\n"
                 "  cmake -S . -B %s && cmake --build %s --target rbtrace-callgrind-driver"
                 % (driver, a.build, a.build))

    work = a.keep or tempfile.mkdtemp(prefix="rbtrace-callgrind-")
    os.makedirs(work, exist_ok=True)
    results = {}
    for n in (a.n, 2 * a.n):
        out = os.path.join(work, "callgrind.out.%s.%d" % (a.mode, n))
        run(["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-strings=no",
             "--compress-pos=no", "--callgrind-out-file=" + out, driver, str(n), a.mode,
             a.clock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results[n] = parse_callgrind(out)
    t1, fn1, ad1 = results[a.n]
    t2, fn2, ad2 = results[2 * a.n]
    per_event = (t2 - t1) / a.n

    # Per function, per event.
    fns = collections.Counter()
    for k in set(fn1) | set(fn2):
        d = fn2.get(k, 0) - fn1.get(k, 0)
        if d:
            fns[k] = d / a.n

    # Per instruction of the driver binary -> step.
    drv_real = os.path.realpath(driver)
    addrs = {}
    other = collections.Counter()
    for k in set(ad1) | set(ad2):
        d = ad2.get(k, 0) - ad1.get(k, 0)
        if not d:
            continue
        ob, addr = k
        if ob and os.path.realpath(ob) == drv_real:
            addrs[addr] = d
        else:
            other[os.path.basename(ob or "?")] += d
    chains = addr2line(driver, sorted(addrs))
    header = os.path.join(ROOT, "ringbuf", "include", "rbtrace", "detail", "writer.h")
    regions = header_regions(header)
    steps = collections.Counter()
    lines_by_step = collections.defaultdict(collections.Counter)
    for addr, d in addrs.items():
        chain = chains.get(addr, [])
        step = "other"
        where = None
        for fn, file, line in chain:  # innermost first
            if file.endswith("rbtrace/detail/writer.h"):
                step = step_of_line(regions, line)
                where = "writer.h:%d" % line
                break
        else:
            ev = [(file, line) for fn, file, line in chain if file.endswith("rbtrace/event.h")]
            if ev:
                step = "event"
                where = "event.h:%d" % ev[0][1]
            elif any("ringbuf/src/" in f for _, f, _ in chain):
                fn, f, line = next(c for c in chain if "ringbuf/src/" in c[1])
                step = "W6-slow" if ("end_commit" in fn or "set_commit_to_write" in fn) else "rb-other"
                where = "%s:%d" % (os.path.basename(f), line)
            elif chain and chain[-1][1].endswith("callgrind_driver.cc"):
                step = "driver"
                where = "callgrind_driver.cc:%d" % chain[-1][2]
            elif chain:
                where = "%s:%d" % (os.path.basename(chain[0][1]), chain[0][2])
        steps[step] += d / a.n
        lines_by_step[step][where] += d / a.n
    for ob, d in other.items():
        steps["other"] += d / a.n
        lines_by_step["other"][ob] += d / a.n
    ring_only = per_event - steps.get("driver", 0.0) - steps.get("event", 0.0)

    summary = ("callgrind: %s/%s: %.1f instructions per event (%.1f in the ring buffer: "
               "without the driver's loop, the payload copy and the typed-event code); N=%d" % (a.mode, a.clock, per_event, ring_only, a.n))
    if a.quiet:
        print(summary)
    else:
        print(summary)
        print()
        print("per function (self instructions per event):")
        for (ob, fn), v in sorted(fns.items(), key=lambda kv: -kv[1]):
            if abs(v) >= 0.05:
                print("  %7.2f  %s  [%s]" % (v, fn, os.path.basename(ob or "?")))
        print()
        print("per writer step (docs/DESIGN.md W0..W6; instructions per event):")
        for s, desc in STEP_NAMES.items():
            v = steps.get(s, 0.0)
            if abs(v) < 0.005:
                continue
            top = ", ".join("%s %.1f" % (w, c) for w, c in
                            lines_by_step[s].most_common(4) if w)
            print("  %-8s %7.2f  %-48s %s" % (s, v, desc, top))
        print("  %-8s %7.2f" % ("total", sum(steps.values())))
        if a.lines:
            src = {}
            for s_ in STEP_NAMES:
                if not lines_by_step[s_]:
                    continue
                print("\n  %s (%s):" % (s_, STEP_NAMES[s_]))
                for w, c in sorted(lines_by_step[s_].items(), key=lambda kv: str(kv[0])):
                    if c < 0.05 or not w:
                        continue
                    text = ""
                    m = re.match(r"^(.*):(\d+)$", w)
                    if m:
                        path = {"writer.h": header,
                                "event.h": os.path.join(os.path.dirname(header), "event.h"),
                            "callgrind_driver.cc": os.path.join(ROOT, "bench",
                                                                "callgrind_driver.cc")
                                }.get(m.group(1))
                        if path:
                            if path not in src:
                                src[path] = open(path).read().split("\n")
                            text = src[path][int(m.group(2)) - 1].strip()
                    print("    %6.2f  %-26s %s" % (c, w, text[:90]))
        print()
        print("callgrind_annotate of the %d-event run (whole program, self cost):" % (2 * a.n))
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=99",
                              os.path.join(work, "callgrind.out.%s.%d" % (a.mode, 2 * a.n))],
                             capture_output=True, text=True).stdout
        print("\n".join(l for l in ann.split("\n")
                        if re.match(r"^\s*[\d,]+ \(", l) or "PROGRAM TOTALS" in l)[:2000])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"mode": a.mode, "clock": a.clock, "n": a.n,
                       "instructions_per_event": per_event,
                       "instructions_per_event_ring_only": ring_only,
                       "steps": {k: v for k, v in steps.items()},
                       "functions": {fn: v for (ob, fn), v in fns.items()}}, f, indent=1)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
