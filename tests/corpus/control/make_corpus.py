#!/usr/bin/env python3
"""tests/corpus/control/make_corpus.py - writes the control protocol's fuzz
seeds (rbtrace/control.h, protocol version 3): one valid message of each
request type and each reply body. Run it from anywhere; it writes beside
itself. The fuzzer (tests/fuzz/control_fuzz.cc) mutates from these.
"""
import os
import struct

MAGIC = 0x43544252  # "RBTC"
VERSION = 3
STAT, SNAPSHOT, EVENTS, REPLY = 1, 2, 3, 0x100
EVENT_LIST, RECORD_START, RECORD_STOP, RECORD_FLUSH, RECORD_STATUS, RECORD_SWITCH = 4, 5, 6, 7, 8, 9
HERE = os.path.dirname(os.path.abspath(__file__))


def message(mtype, payload=b""):
    return struct.pack("<IHHII", MAGIC, VERSION, mtype, len(payload), 0) + payload


def reply(status, text, body=b""):
    t = text.encode()
    return message(REPLY, struct.pack("<iH", status, len(t)) + t + body)


def cpu_stats(v):
    # entries, bytes, overrun, commit_overrun, dropped, nested_dropped, disabled, read
    return struct.pack("<8Q", *([v] * 8))


def stat_body():
    cpus = [(123, 0x0101010101010101), (0, 0x0101010101010101)]
    out = struct.pack("<IIIIQQ", 4096, 16, 0, len(cpus), 3, 4000)  # ..., snapshots, no_slot_dropped
    for owner, v in cpus:
        out += struct.pack("<iI", owner, 0) + cpu_stats(v) + cpu_stats(v)
    return out


def snapshot_body():
    cpus = [(0, 0, 5, 1234, 20000, 7000), (1, -110, 0, 4321, 0, 500000000)]  # -ETIMEDOUT
    out = struct.pack("<QII", 1000, len(cpus), 0)
    for cpu, rc, pages, owner, nbytes, ns in cpus:
        out += struct.pack("<iiIiQQ", cpu, rc, pages, owner, nbytes, ns)
    return out


def text(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def record_options():
    # segment_bytes, segment_seconds, pool_pages, period_us, watermark_pages,
    # batch_pages, file_mode, backend, publish, fsync, direct_io, prefix
    return struct.pack("<QIIIIIIBBBB", 1 << 20, 0, 64, 10000, 0, 64, 0o600, 2, 0, 1, 0) + text("trace")


def event_list_body():
    events = [(1, "demo:tick"), (0, "demo:work")]
    out = struct.pack("<IB3x", len(events), 0)
    for on, name in events:
        out += struct.pack("<BB", on, 0) + text(name)
    return out


def record_body(files):
    out = struct.pack("<BBHI6Q", 1, 1, 0, len(files), 16, 1, 0, 1234, 0, 0) + text("")
    for f in files:
        out += text(f)
    return out


SEEDS = {
    "stat.bin": message(STAT),
    "snapshot_all.bin": message(SNAPSHOT, struct.pack("<iI", -1, 500)),
    "snapshot_cpu1.bin": message(SNAPSHOT, struct.pack("<iI", 1, 100)),
    "events.bin": message(EVENTS, struct.pack("<BBH", 1, 0, 9) + b"demo:tick"),
    "reply_stat.bin": reply(0, "", stat_body()),
    "reply_snapshot.bin": reply(0, "", snapshot_body()),
    "reply_error.bin": reply(-22, "no CPU 9"),
    "events_all.bin": message(EVENTS, struct.pack("<BBH", 0, 0, 3) + b"*:*"),
    "event_list.bin": message(EVENT_LIST, text("demo:*")),
    "event_list_all.bin": message(EVENT_LIST, text("")),
    "record_start.bin": message(RECORD_START, record_options()),
    "record_stop.bin": message(RECORD_STOP),
    "record_flush.bin": message(RECORD_FLUSH),
    "record_status.bin": message(RECORD_STATUS),
    "record_off.bin": message(RECORD_SWITCH, struct.pack("<B3x", 0)),
    "reply_event_list.bin": reply(0, "", event_list_body()),
    "reply_record.bin": reply(0, "flushed", record_body(["trace-1-000001.dat", "trace-1-000002.dat"])),
}

if __name__ == "__main__":
    for name, data in SEEDS.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(SEEDS), HERE))
