#!/usr/bin/env python3
"""bench/snapshot_cli.py - end-to-end latency of `rbtrace snapshot PID`
(the demo) beside `lttng snapshot record` (the LTTng-UST peer), in one run
(issue 14, part 3: "rbtrace snapshot of the demo <= 3 ms median, and beside
lttng snapshot record of the LTTng peer in the same run").

Method
------
Two traced processes run for the whole measurement:

  * the rbtrace demo, `rbtrace-demo --threads 2 --control --seconds 86400`
    (plus --demo-args), whose first stdout line gives its control socket and
    pid;
  * the LTTng peer, `rbtrace-bench --benchmark_filter=BM_Peer_LttngUst
    --benchmark_min_time=<large> --benchmark_repetitions=1` with
    RBTRACE_BENCH_LTTNG_SESSION=0, emitting rbtrace_bench:rec16 in a loop
    (restarted if it ever finishes), into a session this script sets up
    exactly as bench/lttng/lttng_session.cc does:
        lttng create S --snapshot --output=<tmp>/lttng
        lttng enable-channel --userspace --session=S --overwrite
              --subbuf-size=4096 --num-subbuf=8 rbtrace_ch
        lttng enable-event --userspace --session=S --channel=rbtrace_ch
              rbtrace_bench:rec16
        lttng start S
    (per-UID buffers, the default). Unless --no-track, the session's VPID
    inclusion set is narrowed to the peer's pid (`lttng untrack --all
    --vpid`, then `lttng track --vpid=PID`) so that another rbtrace-bench of
    the same user is not traced by this session. lttng-sessiond is started
    (`--daemonize --no-kernel`) only if `lttng list` finds none, and then
    stopped at the end (SIGTERM to the pid of its pid file).

Then, round by round, four commands are each run once, in an order rotated
every round (so no command always follows the same one):

  true      /bin/true                               (process start floor)
  stat      rbtrace stat PID                        (control round trip,
                                                     no snapshot)
  rbtrace   rbtrace snapshot PID -o <tmp>/rbtrace/snap-<i>.dat
  lttng     lttng snapshot record -s S

Each sample is the wall clock (time.perf_counter) around subprocess.run,
fork+exec and the wait for exit included, stdout/stderr captured through
pipes for all four alike. Every run must exit 0; an rbtrace snapshot must
have produced its file, an lttng snapshot record a new snapshot-* directory
with its stream files. The file sizes are read right after the command
returns and again after the last round: a difference would mean the files
were still being written after the command had returned (asynchronous
completion). --warmup rounds come first and are discarded; --gap-ms sleeps
between two commands (the rings refill).

What a snapshot holds: the rbtrace file size and the "N pages, B bytes of
events" line rbtrace prints; for LTTng the bytes of the per-CPU stream files
(rbtrace_ch_<cpu>) and of the metadata file. Note the demo's own reader
drains full pages every millisecond, so an rbtrace snapshot of the demo
holds only what that reader has not taken yet, not the whole ring; the
LTTng snapshot session has no reader, so its snapshot holds the whole
overwrite ring (8 x 4 KiB per CPU).

Usage
-----
  bench/snapshot_cli.py [-n RUNS] [--warmup N] [--gap-ms MS] [--build DIR]
                        [--demo-args "ARGS"] [--busy K] [--no-track]
                        [--peer-nice N] [--demo-nice N]
                        [--keep] [--json FILE]

  -n RUNS       measured rounds (default 40): RUNS samples of each command
  --busy K      also run K busy loops (sh -c 'while :; do :; done') for the
                whole measurement: a loaded figure
  --demo-args   extra demo arguments, e.g. "--pages 8" (the LTTng channel's
                32 KiB per CPU) or "--mode overwrite"
  --peer-nice N raise the peer's nice value (it spins on a whole CPU, yet
                takes no part in `lttng snapshot record`)
  --keep        keep the temporary directory (snapshot files, logs)
  --json FILE   write the raw samples (ms), file sizes and the summary

Everything started here (demo, peer, busy loops, the LTTng session, a
sessiond started here, the temporary directory, the demo's stale control
socket) is removed at the end, on error and on Ctrl-C/SIGTERM too.
Needs python3 (stdlib only), a built build/bin/{rbtrace,rbtrace-demo,
rbtrace-bench} (the latter with the LTTng-UST peer) and lttng-tools.
"""
import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Failure(Exception):
    pass


class Interrupted(BaseException):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def run_checked(cmd, what=None, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        raise Failure(f"'{' '.join(cmd)}' exited {p.returncode}: {p.stdout.strip()}")
    return p.stdout


def stop_process(p, name, grace=3.0):
    """Ends a child we started (by its pid), SIGTERM then SIGKILL, and reaps it."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass


def nicer(n):
    """A preexec_fn that raises the child's nice value by n (None for 0)."""
    return (lambda: os.nice(n)) if n else None


def pct(xs, q):
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dir_files(d):
    out = {}
    for base, _dirs, files in os.walk(d):
        for f in files:
            path = os.path.join(base, f)
            out[os.path.relpath(path, d)] = os.path.getsize(path)
    return out


class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = os.path.join(args.build, "bin")
        self.tmp = None
        self.demo = None
        self.demo_pid = None
        self.demo_sock = None
        self.demo_lines = []
        self.app = None
        self.app_log = None
        self.app_starts = 0
        self.busy = []
        self.session = None
        self.session_created = False
        self.sessiond_pid = 0
        self.notes = []

    # ---- setup -----------------------------------------------------------
    def start_demo(self):
        cmd = [os.path.join(self.bin, "rbtrace-demo"), "--threads", "2", "--control",
               "--seconds", "86400"] + self.a.demo_args.split()
        self.demo_cmd = cmd
        self.demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, preexec_fn=nicer(self.a.demo_nice))
        fd = self.demo.stdout
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                line = fd.readline()
                if not line:
                    break
                self.demo_lines.append(line.rstrip())
                m = re.search(r"control socket (\S+) \(pid (\d+)\)", line)
                if m:
                    self.demo_sock, self.demo_pid = m.group(1), int(m.group(2))
                    break
        if not self.demo_pid:
            raise Failure("rbtrace-demo did not print its control socket: " +
                          " | ".join(self.demo_lines))

        def drain():
            for l in fd:
                self.demo_lines.append(l.rstrip())
        threading.Thread(target=drain, daemon=True).start()
        self.demo_stat = run_checked([os.path.join(self.bin, "rbtrace"), "stat", str(self.demo_pid)])

    def lttng_rundir(self):
        if os.geteuid() == 0:
            return "/var/run/lttng"
        home = os.environ.get("LTTNG_HOME") or os.environ.get("HOME", "")
        return os.path.join(home, ".lttng")

    def start_lttng(self):
        for t in ("lttng", "lttng-sessiond"):
            if not shutil.which(t):
                raise Failure(f"{t} is not on PATH (apt-get install lttng-tools)")
        self.lttng_version = run_checked(["lttng", "--version"]).strip()
        if subprocess.run(["lttng", "list"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            run_checked(["lttng-sessiond", "--daemonize", "--no-kernel"])
            pidfile = os.path.join(self.lttng_rundir(), "lttng-sessiond.pid")
            try:
                with open(pidfile) as f:
                    self.sessiond_pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                self.sessiond_pid = 0
            self.notes.append(f"started lttng-sessiond (pid {self.sessiond_pid}); "
                              "stopped at the end")
        else:
            self.notes.append("an lttng-sessiond was already running: used, left running")
        self.session = f"rbtrace-snapcli-{os.getpid()}"
        self.lttng_out = os.path.join(self.tmp, "lttng")
        s = self.session
        run_checked(["lttng", "create", s, "--snapshot", f"--output={self.lttng_out}"])
        self.session_created = True
        run_checked(["lttng", "enable-channel", "--userspace", f"--session={s}", "--overwrite",
                     "--subbuf-size=4096", "--num-subbuf=8", "rbtrace_ch"])
        run_checked(["lttng", "enable-event", "--userspace", f"--session={s}",
                     "--channel=rbtrace_ch", "rbtrace_bench:rec16"])
        if not self.a.no_track:
            run_checked(["lttng", "untrack", "--userspace", f"--session={s}", "--all", "--vpid"])
        run_checked(["lttng", "start", s])
        self.start_app()

    def start_app(self):
        bench = os.path.join(self.bin, "rbtrace-bench")
        cmd = [bench, "--benchmark_filter=BM_Peer_LttngUst",
               f"--benchmark_min_time={self.a.app_min_time}", "--benchmark_repetitions=1"]
        self.app_cmd = cmd
        env = dict(os.environ, RBTRACE_BENCH_LTTNG_SESSION="0")
        log = os.path.join(self.tmp, f"peer-{self.app_starts}.log")
        self.app_log = log
        with open(log, "w") as f:
            self.app = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=nicer(self.a.peer_nice))
        self.app_starts += 1
        if not self.a.no_track:
            run_checked(["lttng", "track", "--userspace", f"--session={self.session}",
                         f"--vpid={self.app.pid}"])
        # The peer waits up to 3 s for a session to enable its tracepoint and
        # says so in its context lines ("lttng: active (external session)").
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(log) as f:
                text = f.read()
            if "lttng: active" in text:
                return
            if "lttng: " in text or self.app.poll() is not None:
                raise Failure("the LTTng peer did not get its tracepoint enabled: " +
                              text.strip()[-1500:])
            time.sleep(0.05)
        raise Failure("the LTTng peer printed nothing for 15 s: see " + log)

    def start_busy(self):
        for _ in range(self.a.busy):
            self.busy.append(subprocess.Popen(["sh", "-c", "while :; do :; done"]))

    # ---- measurement -----------------------------------------------------
    def measure(self):
        rb = os.path.join(self.bin, "rbtrace")
        pid = str(self.demo_pid)
        rbdir = os.path.join(self.tmp, "rbtrace")
        os.makedirs(rbdir)
        names = ["true", "stat", "rbtrace", "lttng"]
        samples = {n: [] for n in names}
        self.rb_files = []   # (path, size at return, "pages/bytes" line)
        self.lt_snaps = []   # (dir, {file: size at return})
        seen = set(os.listdir(self.lttng_out)) if os.path.isdir(self.lttng_out) else set()
        total = self.a.warmup + self.a.runs
        for r in range(total):
            measured = r >= self.a.warmup
            if self.app.poll() is not None:  # the peer finished its benchmark: again
                self.notes.append(f"LTTng peer exited ({self.app.returncode}) before round {r}; "
                                  "restarted")
                self.start_app()
            order = names[r % 4:] + names[:r % 4]
            for name in order:
                if name == "true":
                    cmd = ["/bin/true"]
                elif name == "stat":
                    cmd = [rb, "stat", pid]
                elif name == "rbtrace":
                    out = os.path.join(rbdir, f"snap-{r}.dat")
                    cmd = [rb, "snapshot", pid, "-o", out]
                else:
                    cmd = ["lttng", "snapshot", "record", "-s", self.session]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                dt = (time.perf_counter() - t0) * 1e3
                if p.returncode != 0:
                    raise Failure(f"round {r}: '{' '.join(cmd)}' exited {p.returncode}: "
                                  f"{(p.stdout + p.stderr).decode(errors='replace').strip()}")
                if name == "rbtrace":
                    if not os.path.isfile(out) or os.path.getsize(out) == 0:
                        raise Failure(f"round {r}: rbtrace snapshot exited 0 but {out} is "
                                      "missing or empty")
                    if measured:
                        self.rb_files.append((out, os.path.getsize(out),
                                              p.stdout.decode(errors="replace").strip()))
                elif name == "lttng":
                    now = set(os.listdir(self.lttng_out))
                    new = sorted(now - seen)
                    seen = now
                    if len(new) != 1:
                        raise Failure(f"round {r}: lttng snapshot record exited 0 but "
                                      f"{len(new)} new snapshot directories appeared: {new}")
                    d = os.path.join(self.lttng_out, new[0])
                    files = dir_files(d)
                    if not any(re.search(r"rbtrace_ch_\d+$", f) for f in files):
                        raise Failure(f"round {r}: {d} has no stream file: {files}")
                    if measured:
                        self.lt_snaps.append((d, files))
                if measured:
                    samples[name].append(dt)
                if self.a.gap_ms > 0:
                    time.sleep(self.a.gap_ms / 1e3)
        self.samples = samples

    # ---- report ----------------------------------------------------------
    def sizes(self):
        """Sizes at return and after the last round; asynchronous completion."""
        rb_ret = [s for _, s, _ in self.rb_files]
        rb_late = [os.path.getsize(p) for p, _, _ in self.rb_files]
        rb_ev = []
        for _, _, line in self.rb_files:
            m = re.search(r"(\d+) pages, (\d+) bytes of events, ([\d.]+) ms in the process", line)
            if m:
                rb_ev.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
        lt_stream, lt_meta, lt_total, lt_changed = [], [], [], []
        for d, files in self.lt_snaps:
            late = dir_files(d)
            if late != files:
                lt_changed.append((d, files, late))
            lt_stream.append(sum(v for k, v in files.items() if re.search(r"rbtrace_ch_\d+$", k)))
            lt_meta.append(sum(v for k, v in files.items() if k.endswith("metadata")))
            lt_total.append(sum(files.values()))
        ncpu_files = sorted({len([k for k in f if re.search(r"rbtrace_ch_\d+$", k)])
                             for _, f in self.lt_snaps})
        return dict(
            rbtrace_file_bytes=rb_ret,
            rbtrace_files_changed_after_return=sum(a != b for a, b in zip(rb_ret, rb_late)),
            rbtrace_pages=[e[0] for e in rb_ev],
            rbtrace_event_bytes=[e[1] for e in rb_ev],
            rbtrace_in_process_ms=[e[2] for e in rb_ev],
            lttng_stream_bytes=lt_stream,
            lttng_metadata_bytes=lt_meta,
            lttng_total_bytes=lt_total,
            lttng_stream_files_per_snapshot=ncpu_files,
            lttng_snapshots_changed_after_return=len(lt_changed),
            lttng_changed_examples=[dict(dir=d, at_return=a, later=b)
                                    for d, a, b in lt_changed[:3]],
        )

    def summary(self):
        s = {}
        for name, xs in self.samples.items():
            s[name] = dict(n=len(xs), median=statistics.median(xs), p10=pct(xs, 0.10),
                           p90=pct(xs, 0.90), min=min(xs), max=max(xs))
        s["ratio_rbtrace_over_lttng_median"] = s["rbtrace"]["median"] / s["lttng"]["median"]
        s["ratio_rbtrace_over_lttng_net_of_true"] = (
            (s["rbtrace"]["median"] - s["true"]["median"]) /
            (s["lttng"]["median"] - s["true"]["median"]))
        return s

    def print_report(self, summ, sz):
        labels = {
            "true": "/bin/true",
            "stat": "rbtrace stat PID",
            "rbtrace": "rbtrace snapshot PID -o F",
            "lttng": "lttng snapshot record -s S",
        }
        print()
        print(f"{self.a.runs} samples per command (+{self.a.warmup} warm-up rounds discarded), "
              f"order rotated per round, gap {self.a.gap_ms} ms, busy loops: {self.a.busy}, "
              f"nice: demo +{self.a.demo_nice}, peer +{self.a.peer_nice}")
        print(f"{'command':28s} {'median':>8s} {'p10':>8s} {'p90':>8s} {'min':>8s} {'max':>8s}  "
              f"(ms, wall clock around subprocess.run)")
        for k in ("true", "stat", "rbtrace", "lttng"):
            v = summ[k]
            print(f"{labels[k]:28s} {v['median']:8.3f} {v['p10']:8.3f} {v['p90']:8.3f} "
                  f"{v['min']:8.3f} {v['max']:8.3f}")
        print(f"ratio rbtrace/lttng of the medians: {summ['ratio_rbtrace_over_lttng_median']:.3f}"
              f"   (net of the /bin/true median: "
              f"{summ['ratio_rbtrace_over_lttng_net_of_true']:.3f})")
        target = summ["rbtrace"]["median"] <= 3.0
        print(f"issue 14 target, rbtrace snapshot median <= 3 ms: "
              f"{'met' if target else 'MISSED'} ({summ['rbtrace']['median']:.3f} ms)")
        med = lambda xs: statistics.median(xs) if xs else float("nan")
        print()
        print("what a snapshot holds (medians over the measured runs):")
        print(f"  rbtrace: file {med(sz['rbtrace_file_bytes']):.0f} B "
              f"(min {min(sz['rbtrace_file_bytes'])}, max {max(sz['rbtrace_file_bytes'])}); "
              f"{med(sz['rbtrace_pages']):.0f} pages, {med(sz['rbtrace_event_bytes']):.0f} B of "
              f"events; rbtrace's own 'ms in the process': {med(sz['rbtrace_in_process_ms']):.3f}")
        print(f"  lttng:   stream files {med(sz['lttng_stream_bytes']):.0f} B "
              f"(min {min(sz['lttng_stream_bytes'])}, max {max(sz['lttng_stream_bytes'])}) in "
              f"{sz['lttng_stream_files_per_snapshot']} per-CPU files, + metadata "
              f"{med(sz['lttng_metadata_bytes']):.0f} B; whole snapshot directory (with "
              f"index files) {med(sz['lttng_total_bytes']):.0f} B")
        print(f"  files whose size changed after the command returned: rbtrace "
              f"{sz['rbtrace_files_changed_after_return']}, lttng "
              f"{sz['lttng_snapshots_changed_after_return']}")
        print(f"  demo ring: {self.geometry}")
        print("  lttng ring: per-UID, per-CPU overwrite channel, 8 x 4096 B sub-buffers per CPU")
        for n in self.notes:
            print("note:", n)

    def cleanup(self):
        errors = []
        for p in self.busy:
            stop_process(p, "busy")
        stop_process(self.app, "peer")
        if self.session_created:
            for c in (["lttng", "stop", self.session], ["lttng", "destroy", self.session]):
                p = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if p.returncode != 0 and c[1] == "destroy":
                    errors.append(f"'{' '.join(c)}': {p.stdout.strip()}")
            self.session_created = False
        if self.sessiond_pid > 0:
            try:
                os.kill(self.sessiond_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.sessiond_pid = 0
        stop_process(self.demo, "demo")
        if self.demo_sock:  # the demo has no SIGTERM handler: its socket stays
            for f in (self.demo_sock, re.sub(r"\.sock$", ".lock", self.demo_sock)):
                if f.endswith((".sock", ".lock")) and os.path.basename(f).startswith(
                        f"{self.demo_pid}."):
                    try:
                        os.unlink(f)
                    except FileNotFoundError:
                        pass
        if self.tmp and not self.a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        for e in errors:
            print("cleanup:", e, file=sys.stderr)

    def main(self):
        for b in ("rbtrace", "rbtrace-demo", "rbtrace-bench"):
            if not os.access(os.path.join(self.bin, b), os.X_OK):
                raise Failure(f"{os.path.join(self.bin, b)} is not built")
        self.tmp = tempfile.mkdtemp(prefix="rbtrace-snapcli-")
        load0 = os.getloadavg()
        self.start_demo()
        m = re.search(r"\d+ CPUs, \d+ pages of \d+ bytes per CPU, [a-z/ ]+ mode", self.demo_stat)
        self.geometry = (m.group(0) if m else self.demo_stat.splitlines()[0]) + \
            " (the demo's reader drains full pages every 1 ms)"
        print(f"demo: pid {self.demo_pid}, {self.geometry}", file=sys.stderr)
        self.start_lttng()
        print(f"lttng: session {self.session}, peer pid {self.app.pid}", file=sys.stderr)
        self.start_busy()
        self.measure()
        load1 = os.getloadavg()
        for p in self.busy:
            stop_process(p, "busy")
        sz = self.sizes()
        summ = self.summary()
        self.notes.append(f"load average 1 min: {load0[0]:.2f} before, {load1[0]:.2f} after; "
                          f"{os.cpu_count()} CPUs")
        self.print_report(summ, sz)
        if self.a.json:
            doc = dict(
                config=dict(runs=self.a.runs, warmup=self.a.warmup, gap_ms=self.a.gap_ms,
                            busy=self.a.busy, demo_nice=self.a.demo_nice,
                            peer_nice=self.a.peer_nice, demo_cmd=self.demo_cmd, peer_cmd=self.app_cmd,
                            lttng_session=self.session, lttng_version=self.lttng_version,
                            tracked_vpid=not self.a.no_track, demo_geometry=self.geometry,
                            host=platform.node(), kernel=platform.release(),
                            cpus=os.cpu_count(), load_before=load0, load_after=load1),
                samples_ms=self.samples, sizes=sz, summary=summ, notes=self.notes)
            with open(self.a.json, "w") as f:
                json.dump(doc, f, indent=1)
            print(f"wrote {self.a.json}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gap-ms", type=float, default=10.0)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--demo-args", default="")
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--no-track", action="store_true")
    ap.add_argument("--peer-nice", type=int, default=0,
                    help="nice value added to the LTTng peer (it spins on a CPU but takes no "
                         "part in lttng snapshot record: per-UID buffers are read by the "
                         "consumer daemon)")
    ap.add_argument("--demo-nice", type=int, default=0)
    ap.add_argument("--app-min-time", default="3600",
                    help="--benchmark_min_time of the peer (default 3600; it is restarted "
                         "if it finishes first)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    b = Bench(a)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        b.main()
        return 0
    except Failure as e:
        print(f"snapshot_cli: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"snapshot_cli: interrupted ({e})", file=sys.stderr)
        return 130
    finally:
        # No second signal may cut the cleanup short.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
