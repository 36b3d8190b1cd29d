#!/usr/bin/env python3
"""Writes the trace.dat corpus of this directory: one small valid file,
built here from the trace-cmd v6 format description (independently of
rbtrace's writer), and corrupt variants of it. Each corrupt file must make
the reader (and `rbtrace report`) fail with a message; valid*.dat must read.
README.md lists the files with one line each. Re-run after a format change:

    python3 tests/corpus/tracedat/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096

FORMAT = (
    "name: ev\nID: 1000\nformat:\n"
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
    "\tfield:u32 n;\toffset:8;\tsize:4;\tsigned:0;\n"
    "\tfield:__data_loc char[] s;\toffset:12;\tsize:4;\tsigned:0;\n\n"
    'print fmt: "n=%u s=%s", REC->n, __get_str(s)\n')

HEADER_PAGE = (
    "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
    "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
    "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
    "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n")

HEADER_EVENT = (
    "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n"
    "\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n"
    "\ttime_stamp : type == 31\n\tdata max type_len  == 28\n")


def record(n, s, pid):
    """The event record: common header, n, __data_loc s, the string."""
    body = s.encode() + b"\0"
    loc = (len(body) << 16) | 16
    rec = struct.pack("<HBBiII", 1000, 0, 0, pid, n, loc) + body
    return rec + b"\0" * (-len(rec) % 4)


def page(ts, events, commit_flags=0, extra=b""):
    """A buffer_data_page: events are (delta, record) with type_len = len/4."""
    data = b""
    for delta, rec in events:
        assert len(rec) % 4 == 0 and len(rec) <= 112
        data += struct.pack("<I", (len(rec) // 4) | (delta << 5)) + rec
    body = data + extra
    return struct.pack("<QQ", ts, len(data) | commit_flags) + body + b"\0" * (PAGE - 16 - len(body))


class Parts:
    """The file as named byte strings, so a variant can change one part."""

    def __init__(self):
        self.magic = b"\x17\x08\x44tracing"
        self.version = b"6\0"
        self.endian_long = bytes([0, 8])
        self.page_size = struct.pack("<I", PAGE)
        self.header_page = b"header_page\0" + struct.pack("<Q", len(HEADER_PAGE)) + HEADER_PAGE.encode()
        self.header_event = b"header_event\0" + struct.pack("<Q", len(HEADER_EVENT)) + HEADER_EVENT.encode()
        self.ftrace = struct.pack("<I", 0)
        self.formats = self.events_section(FORMAT.encode())
        self.kallsyms = struct.pack("<I", 0)
        self.printk = struct.pack("<I", 0)
        cmd = b"100 main\n101 worker\n"
        self.cmdlines = struct.pack("<Q", len(cmd)) + cmd
        self.cpus = 2
        # TRACECLOCK repeats the clock text: trace-cmd 3.1.6 reads an empty one
        # past its end (consumer/tracedat/src/tracedat_writer.cc).
        self.options = [(2, b"CPU: 0\nentries: 0\n\0"), (2, b"CPU: 1\nentries: 0\n\0"),
                        (4, b"[mono]\0")]
        self.clock = b"[mono]"
        self.pages = [
            [page(1000, [(0, record(1, "hello", 100)), (5, record(2, "world!", 100))])],
            [page(1002, [(0, record(3, "", 101)), (1, record(4, "x" * 60, 101))]),
             page(2000, [(0, record(5, "after loss", 101))], commit_flags=(1 << 31) | (1 << 30),
                  extra=struct.pack("<Q", 7))],
        ]
        self.table_override = None

    @staticmethod
    def events_section(fmt):
        return struct.pack("<I", 1) + b"corpus\0" + struct.pack("<I", 1) + struct.pack("<Q", len(fmt)) + fmt

    def build(self):
        head = (self.magic + self.version + self.endian_long + self.page_size + self.header_page +
                self.header_event + self.ftrace + self.formats + self.kallsyms + self.printk +
                self.cmdlines + struct.pack("<I", self.cpus) + b"options  \0")
        for oid, data in self.options:
            head += struct.pack("<HI", oid, len(data)) + data
        head += struct.pack("<H", 0) + b"flyrecord\0"
        end = len(head) + 16 * len(self.pages) + 8 + len(self.clock)
        offsets, pos = [], end
        for pages in self.pages:
            pos = (pos + PAGE - 1) // PAGE * PAGE
            offsets.append((pos, len(pages) * PAGE))
            pos += len(pages) * PAGE
        table = self.table_override(offsets) if self.table_override else offsets
        for off, size in table:
            head += struct.pack("<QQ", off, size)
        head += struct.pack("<Q", len(self.clock)) + self.clock
        out = bytearray(head)
        for (off, _), pages in zip(offsets, self.pages):
            out += b"\0" * (off - len(out))
            for p in pages:
                out += p
        return bytes(out)


def variants():
    v = {}

    def make(name, note, change=None, post=None):
        p = Parts()
        if change:
            change(p)
        data = p.build()
        if post:
            data = post(data)
        v[name] = (data, note)

    make("valid_two_cpus.dat", "valid: 2 CPUs, 5 events, a string field, one page with 7 lost events stored")
    make("bad_magic.dat", "the magic's third byte is 0x45, not 0x44",
         lambda p: setattr(p, "magic", b"\x17\x08\x45tracing"))
    make("version_7.dat", "version string \"7\" (sectioned format, not read)",
         lambda p: setattr(p, "version", b"7\0"))
    make("big_endian.dat", "endianness byte 1 (big endian)",
         lambda p: setattr(p, "endian_long", bytes([1, 8])))
    make("page_size_5000.dat", "page size 5000, not a power of two",
         lambda p: setattr(p, "page_size", struct.pack("<I", 5000)))
    make("header_page_len_huge.dat", "header_page length 2^62",
         lambda p: setattr(p, "header_page", b"header_page\0" + struct.pack("<Q", 1 << 62) + HEADER_PAGE.encode()))
    make("truncated_in_formats.dat", "the file ends in the middle of the event format",
         post=lambda d: d[:d.find(b"print fmt")])
    make("format_bad_offset.dat", "a field line with offset:abc",
         lambda p: setattr(p, "formats", Parts.events_section(FORMAT.replace("offset:8;", "offset:abc;").encode())))
    make("systems_count_huge.dat", "event system count 0xffffffff",
         lambda p: setattr(p, "formats", struct.pack("<I", 0xffffffff) + p.formats[4:]))
    make("cmdlines_len_beyond_eof.dat", "cmdlines length 2^40 (beyond the end, above the cap)",
         lambda p: setattr(p, "cmdlines", struct.pack("<Q", 1 << 40) + p.cmdlines[8:]))
    make("cpu_count_huge.dat", "CPU count 0x7fffffff",
         lambda p: setattr(p, "cpus", 0x7fffffff))
    make("option_len_beyond_eof.dat", "an option of 0xfffffff0 bytes",
         lambda p: setattr(p, "options", [(9, b"x" * 4)]), post=lambda d: d.replace(
             struct.pack("<HI", 9, 4) + b"xxxx", struct.pack("<HI", 9, 0xfffffff0) + b"xxxx"))
    make("tsc2nsec_short.dat", "a TSC2NSEC option of 8 bytes (needs 16)",
         lambda p: p.options.append((14, struct.pack("<II", 1, 0))))
    make("cpu_offset_beyond_eof.dat", "CPU 1 data at offset 2^40",
         lambda p: setattr(p, "table_override", lambda t: [t[0], (1 << 40, t[1][1])]))
    make("cpu_data_overlap.dat", "CPU 1 data at CPU 0's offset",
         lambda p: setattr(p, "table_override", lambda t: [t[0], (t[0][0], t[1][1])]))
    make("cpu_offset_unaligned.dat", "CPU 0 data at a non page-aligned offset",
         lambda p: setattr(p, "table_override", lambda t: [(t[0][0] + 8, t[0][1]), t[1]]))

    def set_page(p, cpu, idx, pg):
        p.pages[cpu][idx] = pg

    make("commit_too_large.dat", "a page commit of 8192 bytes in a 4096-byte page",
         lambda p: set_page(p, 0, 0, p.pages[0][0][:8] + struct.pack("<Q", 8192) + p.pages[0][0][16:]))
    make("commit_unknown_bits.dat", "a page commit word with bit 40 set",
         lambda p: set_page(p, 0, 0, p.pages[0][0][:8] + struct.pack("<Q", (1 << 40) | 44) + p.pages[0][0][16:]))
    make("missed_stored_no_room.dat", "MISSED_STORED on a page with no room for the count",
         lambda p: set_page(p, 0, 0, p.pages[0][0][:8] + struct.pack("<Q", 4080 | (3 << 30)) + p.pages[0][0][16:]))
    make("event_length_beyond_page.dat", "a type_len 0 event whose length runs past the page",
         lambda p: set_page(p, 0, 0, page(1000, []) [:8] + struct.pack("<Q", 12) +
                            struct.pack("<II", 0, 5000) + b"\0" * (PAGE - 24)))
    make("data_loc_outside_record.dat", "a __data_loc string at offset 200 of a 24-byte record",
         lambda p: set_page(p, 0, 0, page(1000, [(0, struct.pack("<HBBiII", 1000, 0, 0, 100, 1, (4 << 16) | 200) + b"abc\0")])))
    make("record_shorter_than_format.dat", "a record of 12 bytes for a format that needs 16",
         lambda p: set_page(p, 0, 0, page(1000, [(0, struct.pack("<HBBiI", 1000, 0, 0, 100, 1))])))
    return v


def main():
    notes = []
    for name, (data, note) in sorted(variants().items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        notes.append(f"- `{name}`: {note}")
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write("# trace.dat corpus\n\n"
                "Small trace.dat files for the reader: `valid*.dat` must read, every other\n"
                "file must be refused with a message (tests/unit/tracedat_test.cc,\n"
                "tests/integration/trace_cmd_test.cc through `rbtrace report`), and all of\n"
                "them seed the libFuzzer target (tests/fuzz). Written by `make_corpus.py`,\n"
                "which builds the valid file from the trace-cmd v6 format description\n"
                "independently of rbtrace's writer.\n\n")
        f.write("\n".join(notes) + "\n")


if __name__ == "__main__":
    main()
