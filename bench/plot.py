#!/usr/bin/env python3
"""bench/plot.py - pictures from rbtrace-bench's JSON (gnuplot).

Draws what the JSON holds, each picture with its baseline in it:
  * writer.png: ns per event against payload size, for each clock (the CPU
    counter and CLOCK_MONOTONIC), reserve+commit and the typed emit with a
    string field, beside the bare clock read of that clock (a flat line);
  * drain.png: the consumer's drain rate (GB/s) against page size, per file
    system and backend (BM_Consumer_Drain), pwritev the baseline;
  * drain_cpus.png: the drain rate against the ring's CPU count, per file
    system and backend (BM_Consumer_DrainCpus, 64 KiB pages), pwritev the
    baseline;
  * publish.png: publish time (stop()) against the segment's size, per file
    system (BM_Consumer_Publish): in place on ext4 (O_DIRECT and page
    cache), copied on tmpfs;
  * dump.png: Snapshot::take time against the buffer size per CPU
    (BM_Snapshot_TakeDump).
A picture whose rows are not in the JSON is skipped, and says so.

Numbers are medians over the repetitions (compare.py's reading: CPU time
per item for the writer rows, the benchmarks' own counters for the rest).

Usage: bench/plot.py JSON [--out DIR]       (default DIR: bench/plots)
  e.g. build/bin/rbtrace-bench --benchmark_filter='BM_Writer_(ReserveCommit|EmitStr)/|BM_Baseline_ClockRead/(tsc|mono)$' \\
         --benchmark_repetitions=3 --benchmark_out=writer.json --benchmark_out_format=json
       bench/plot.py writer.json
Needs: python3, gnuplot (Debian: gnuplot-nox).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (medians, ns_per_item, io_summary: one reading of the JSON)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gnuplot(script, out_png):
    with tempfile.NamedTemporaryFile("w", suffix=".gp", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        subprocess.run(["gnuplot", path], check=True)
    finally:
        os.unlink(path)
    print("wrote", out_png)


def data_block(name, rows):
    """A gnuplot inline data block: rows of numbers."""
    lines = ["$%s << EOD" % name]
    lines += [" ".join(str(v) for v in r) for r in rows]
    lines.append("EOD")
    return "\n".join(lines) + "\n"


def header(out, title, xlabel, ylabel):
    """The gnuplot lines every picture starts with."""
    return """
set terminal pngcairo size 900,560 font ',10' noenhanced
set output '%s'
set title '%s'
set xlabel '%s'
set ylabel '%s'
set grid
""" % (out, title, xlabel, ylabel)


def writer_plot(runs, out):
    series = [("BM_Writer_ReserveCommit/%d", "reserve+commit, counter clock"),
              ("BM_Writer_ReserveCommit/mono/%d", "reserve+commit, CLOCK_MONOTONIC"),
              ("BM_Writer_EmitStr/%d", "typed emit (string field), counter clock"),
              ("BM_Writer_EmitStr/mono/%d", "typed emit (string field), CLOCK_MONOTONIC")]
    sizes = sorted({int(m.group(1)) for n in runs
                    for m in [re.fullmatch(r"BM_Writer_(?:ReserveCommit|EmitStr)/(?:mono/)?(\d+)", n)]
                    if m})
    if not sizes:
        print("writer.png: no BM_Writer_ReserveCommit/EmitStr rows in the JSON; skipped")
        return
    blocks, plots = "", []
    for i, (pat, title) in enumerate(series):
        rows = [(s, "%.3f" % compare.ns_per_item(runs[pat % s])) for s in sizes
                if pat % s in runs and compare.ns_per_item(runs[pat % s]) is not None]
        if not rows:
            continue
        blocks += data_block("s%d" % i, rows)
        plots.append("$s%d using 1:2 with linespoints lw 2 title '%s'" % (i, title))
    for key, title, dash in (("BM_Baseline_ClockRead/tsc", "bare counter read (baseline)", 2),
                             ("BM_Baseline_ClockRead/mono", "clock_gettime(CLOCK_MONOTONIC) (baseline)", 3)):
        ns = compare.ns_per_item(runs.get(key))
        if ns is not None:
            plots.append("%.3f with lines dt %d lw 2 lc rgb 'black' title '%s'" % (ns, dash, title))
    script = blocks + header(out, "Writer: ns per event against payload size (medians, CPU time)",
                             "payload bytes", "ns per event") + """
set logscale x 2
set xrange [%d:%d]
set yrange [0:*]
set key top left
plot %s
""" % (sizes[0] / 1.4, sizes[-1] * 1.4, ", \\\n     ".join(plots))
    gnuplot(script, out)


def backend_lines(rows, xkey, tag):
    """One line per (file system, backend) of `rows` (x = r[xkey], y = GB/s),
    pwritev dashed as the baseline: the data blocks and the plot clauses."""
    blocks, plots, i = "", [], 0
    for fs in sorted({r["fs"] for r in rows}):
        for be in ("pwritev", "io_uring", "io_uring+vec"):
            pts = sorted((r[xkey], "%.3f" % r["gb_s"]) for r in rows
                         if r["fs"] == fs and r["backend"] == be)
            if not pts:
                continue
            blocks += data_block("%s%d" % (tag, i), pts)
            style = "dt 2" if be == "pwritev" else "dt 1"
            plots.append("$%s%d using 1:2 with linespoints %s lw 2 title '%s, %s%s'"
                         % (tag, i, style, fs, be, " (baseline)" if be == "pwritev" else ""))
            i += 1
    return blocks, plots


def gbs_plot(rows, xkey, what, out, title, xlabel, xset):
    """GB/s of `rows` against r[xkey], a line per file system and backend."""
    if not rows:
        print("%s: no %s rows in the JSON; skipped" % (os.path.basename(out), what))
        return
    blocks, plots = backend_lines(rows, xkey, "d")
    script = blocks + header(out, title, xlabel, "GB/s") + xset + """
set yrange [0:*]
set key outside right
plot %s
""" % ", \\\n     ".join(plots)
    gnuplot(script, out)


def drain_plot(io, out):
    rows = [r for r in io["consumer_drain"] if r["gb_s"] is not None and r["backend"] != "seqcopy"]
    gbs_plot(rows, "page", "BM_Consumer_Drain", out,
             "Consumer drain rate against page size (medians)", "page size (bytes)",
             "set logscale x 2\n")


def drain_cpus_plot(io, out):
    rows = [r for r in io["consumer_drain_cpus"] if r["gb_s"] is not None]
    gbs_plot(rows, "ncpus", "BM_Consumer_DrainCpus", out,
             "Consumer drain rate against CPU count, 64 KiB pages (medians)",
             "CPU slots of the ring", "set xtics (1, 2, 4)\n")


def publish_plot(io, out):
    rows = [r for r in io["consumer_publish"] if r["publish_ms"] is not None]
    if not rows:
        print("publish.png: no BM_Consumer_Publish rows in the JSON; skipped")
        return
    blocks, plots, i = "", [], 0
    for fs in sorted({r["fs"] for r in rows}):
        pts = sorted((r["mib"], "%.3f" % r["publish_ms"]) for r in rows if r["fs"] == fs)
        blocks += data_block("p%d" % i, pts)
        plots.append("$p%d using 1:2 with linespoints lw 2 title '%s'" % (i, fs))
        i += 1
    script = blocks + header(out, "Publish (stop()) time against segment size (medians)",
                             "segment MiB", "ms") + """
set logscale xy 2
set key outside right
plot %s
""" % ", \\\n     ".join(plots)
    gnuplot(script, out)


def dump_plot(io, out):
    rows = sorted((r["mib_per_cpu"], "%.3f" % r["total_ms"]) for r in io["snapshot_take_dump"]
                  if r["total_ms"] is not None)
    if not rows:
        print("dump.png: no BM_Snapshot_TakeDump rows in the JSON; skipped")
        return
    script = data_block("t", rows) + header(
        out, "Snapshot::take of 2 CPUs against buffer size per CPU (medians)", "MiB per CPU",
        "ms") + """
set logscale xy 2
plot $t using 1:2 with linespoints lw 2 title 'swap + dump + trace.dat'
"""
    gnuplot(script, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "plots"))
    a = ap.parse_args()
    if not shutil.which("gnuplot"):
        sys.exit("bench/plot.py: gnuplot is needed (apt-get install gnuplot-nox)")
    import json
    with open(a.json) as f:
        data = json.load(f)
    runs = compare.medians(data)
    os.makedirs(a.out, exist_ok=True)
    writer_plot(runs, os.path.join(a.out, "writer.png"))
    io = compare.io_summary(runs)
    drain_plot(io, os.path.join(a.out, "drain.png"))
    drain_cpus_plot(io, os.path.join(a.out, "drain_cpus.png"))
    publish_plot(io, os.path.join(a.out, "publish.png"))
    dump_plot(io, os.path.join(a.out, "dump.png"))


if __name__ == "__main__":
    main()
