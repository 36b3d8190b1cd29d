// recover_validate_test.cc - recover publishes only what our reader reads to
// the end (issue 12: "Recover publishes files our own reader rejects").
//
// A child process records typed events (a string field, a wide fixed
// record) through a Consumer with one segment and is SIGKILLed once its
// full pages are in the spool: the spool a crashed process leaves. Copies
// of that spool are then damaged and recovered:
//   - deterministic: chosen corruptions, one per page, of event headers
//     (lengths past the page, every header of a page, a header one word
//     short), of the page header (commit beyond the page, unknown bits,
//     MISSED_STORED alone) and of records (a type whose format needs more
//     bytes, a __data_loc outside the record); plus two changes that leave
//     a page valid (a time delta, an unknown event type). Recover must skip
//     exactly the corrupted pages, count them per CPU, keep every event of
//     the others, and publish a file our reader, `rbtrace report` (text and
//     JSON) and `trace-cmd report` read to the end;
//   - a seeded fuzz loop (fixed seed, 300 copies, 1..3 random mutations of
//     headers, records and commit words each): whatever recover publishes
//     is read to the end by our reader and by trace-cmd, and every page is
//     either published or counted as skipped;
//   - a crash while the publisher compacts the segment file in place
//     (its meta with the plan, the file truncated and 0..all of the
//     collapses done, for real, with fallocate): every event recovered
//     once, in order.
// The spool is version 2 (consumer/src/spool.h): one `000001.dat` per
// segment, CPU c's pages from its region's base; the tests take each
// CPU's pages out of it and put them back (tests/support/spool_view.h).
// And the `.new-<session>` directories a crash between a consumer's mkdir
// and its rename leaves (spool/.new-*): recover removes one that is ours,
// older than a minute, holds only its lock (or nothing) and whose lock it
// can take; it leaves one whose lock is held, a young one (a consumer may be
// between mkdir and flock), one with anything else in it, a symbolic link
// (not followed: what it points at is untouched), a lock that is a link,
// and one of another user.
#include <gtest/gtest.h>

#include <algorithm>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat_reader.h"
#include "../support/spool_view.h"
#include "rbtrace_test/consumer_common.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(rv, msg, ((uint64_t, seq))((uint32_t, cpu))((rbtrace::str, text)))
RBTRACE_EVENT(rv, wide,
              ((uint64_t, seq))((uint64_t, a))((uint64_t, b))((uint64_t, c))((uint64_t, d))(
                  (uint64_t, e))((uint64_t, f))((uint64_t, g)))

namespace {

constexpr uint32_t kPage = 4096;
constexpr uint32_t kCpus = 2;
constexpr uint64_t kEvents = 1500;  // per CPU: about 20 pages each

using rbtrace_test::Proc;
using rbtrace_test::run;

int emit(rbtrace::RingBuffer& rb, uint32_t cpu, uint64_t seq) {
  if (seq % 4 == 3)
    return rbtrace_events::rv_wide::emit(rb, seq, seq, seq + 1, seq + 2, seq + 3, seq + 4, seq + 5,
                                         seq + 6);
  return rbtrace_events::rv_msg::emit(rb, seq, cpu,
                                      std::string(seq % 37, static_cast<char>('a' + seq % 26)));
}

// The child: records kEvents per CPU, waits until every full page is in
// the spool (the last, partial page of each CPU stays in the ring), and
// dies by SIGKILL.
[[noreturn]] void record_and_die(const std::string& dir) {
  rbtrace::Options o;
  o.ncpus = kCpus;
  o.page_size = kPage;
  o.pages_per_cpu = 64;  // everything fits: no loss
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  if (!rb) _exit(10);
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.period_us = 1000;
  co.segment_bytes = 0;  // one segment, published only at stop: never here
  co.fsync = false;
  auto c = rbtrace::Consumer::create(*rb, co);
  if (!c) _exit(11);
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    std::thread([&, cpu] {
      if (rb->bind_thread(cpu) != 0) _exit(12);
      for (uint64_t s = 0; s < kEvents;) {
        if (emit(*rb, cpu, s) == 0) s++;
        else std::this_thread::yield();
      }
      rb->unbind_thread();
    }).join();
  }
  // A page holds fewer than 150 events (the smallest is 28 bytes): once
  // kEvents - 150 of a CPU are read, only its partial page is left.
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);;) {
    if (std::chrono::steady_clock::now() > until) _exit(13);
    const rbtrace::ConsumerStats st = c->stats();
    bool done = st.pages_written == st.pages_read && st.events_read.size() == kCpus;
    for (uint32_t cpu = 0; done && cpu < kCpus; cpu++) done = st.events_read[cpu] + 150 >= kEvents;
    if (done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(getpid(), SIGKILL);
  _exit(14);
}

// One event of a pristine page.
struct Ev {
  uint32_t hdr = 0;   // offset of its header in the page
  uint32_t rec = 0;   // offset of its record in the page
  uint32_t len = 0;   // record bytes
  uint16_t type = 0;  // common_type
  uint64_t seq = 0;
};

// The files of a spool session directory, in memory: the segment file
// (spool version 2, one `000001.dat`) as each CPU's pages, taken from and
// put back at its region of the file (spool_view.h); the others as they
// are.
constexpr const char* kDat = "000001.dat";
struct Files {
  std::map<std::string, std::string> other;  // name -> bytes: meta, cmdlines, lock
  std::vector<std::string> cpus;             // [cpu] -> its pages, back to back
};

// The spool the child left, in memory.
struct Spool {
  std::string session;
  spoolv::SpoolMeta meta;  // 000001.meta
  uint64_t dat_size = 0;   // 000001.dat's size
  Files files;
  std::vector<std::vector<std::vector<Ev>>> pages;  // [cpu][page] -> events
};

const Spool& pristine() {
  static Spool s;
  static bool made = false;
  if (made) return s;
  made = true;
  const std::string dir = ctest::make_temp_dir("/tmp", "recval-src");
  EXPECT_FALSE(dir.empty());
  const pid_t pid = fork();
  if (pid == 0) record_and_die(dir);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  EXPECT_TRUE(ctest::traces(dir).empty()) << "the child published before it died";
  const auto sessions = ctest::list(dir + "/spool");
  EXPECT_EQ(sessions.size(), 1u);
  if (sessions.size() != 1) return s;
  s.session = sessions[0];
  const std::string sdir = dir + "/spool/" + s.session;
  for (const std::string& f : ctest::list(sdir)) {
    if (f == kDat) continue;
    std::string bytes;
    EXPECT_TRUE(ctest::read_file(sdir + "/" + f, &bytes)) << f;
    s.files.other[f] = bytes;
  }
  spoolv::Segment seg;
  EXPECT_EQ(spoolv::load_segment(sdir, 1, &seg), "");
  ctest::remove_tree(dir);
  EXPECT_TRUE(seg.meta.final_sizes.empty()) << "the child began publishing before it died";
  EXPECT_EQ(seg.meta.ncpus, kCpus);
  EXPECT_EQ(seg.meta.page_size, kPage);
  if (seg.meta.ncpus != kCpus || !seg.meta.final_sizes.empty()) {
    s.session.clear();  // SetUp fails
    return s;
  }
  s.meta = seg.meta;
  s.dat_size = seg.size;
  s.files.cpus = seg.cpus;
  s.pages.resize(kCpus);
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    const std::string& d = s.files.cpus[cpu];
    EXPECT_EQ(d.size() % kPage, 0u);
    for (size_t p = 0; p + kPage <= d.size(); p += kPage) {
      const auto* page = reinterpret_cast<const unsigned char*>(d.data()) + p;
      const uint64_t commit = rbtrace::load_u64(page + 8);
      rbtrace::PageWalker w(page + 16, static_cast<uint32_t>(commit & rbtrace::kCommitMask),
                            rbtrace::load_u64(page));
      std::vector<Ev> evs;
      rbtrace::PageEvent e;
      while (w.next(&e)) {
        Ev x;
        x.hdr = 16 + e.offset;
        x.rec = static_cast<uint32_t>(e.data - page);
        x.len = e.length;
        std::memcpy(&x.type, e.data, 2);
        x.seq = rbtrace::load_u64(e.data + 8);
        evs.push_back(x);
      }
      EXPECT_FALSE(w.error());
      s.pages[cpu].push_back(evs);
    }
  }
  return s;
}

// A copy of the spool in a new DIR below `parent` (the files as given;
// the segment file laid out as the drain thread writes it: each CPU's
// pages at its region's base, holes elsewhere, the pristine size).
std::string stage(const Spool& s, const Files& files, const std::string& parent = "/tmp") {
  const std::string dir = ctest::make_temp_dir(parent.c_str(), "recval");
  if (dir.empty()) return dir;
  const std::string sdir = dir + "/spool/" + s.session;
  if (mkdir((dir + "/spool").c_str(), 0700) != 0 || mkdir(sdir.c_str(), 0700) != 0) return "";
  for (const auto& [name, bytes] : files.other) {
    const int fd = open((sdir + "/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return "";
    const bool ok = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
    close(fd);
    if (!ok) return "";
  }
  const std::string e = spoolv::write_segment(sdir + "/" + kDat, s.meta, files.cpus, s.dat_size);
  if (!e.empty()) {
    ADD_FAILURE() << e;
    return "";
  }
  return dir;
}

// Reads a published file to the end as `rbtrace report` does (text, JSON)
// and as the Chrome export does; collects the per-CPU seq of every record.
// "" or the first error.
std::string read_to_end(const std::string& path, std::vector<std::vector<uint64_t>>* seqs) {
  std::string err;
  auto r = rbtrace::TraceDatReader::open(path, &err);
  if (!r) return "open: " + err;
  // Recover names the recording's process as the consumer did (the pid
  // that ends the session's name).
  if (r->process_pid() <= 0) return "no process pid (PROCMAPS option)";
  seqs->assign(r->ncpus(), {});
  rbtrace::TraceRecord rec;
  int rc;
  while ((rc = r->next(&rec)) > 0) {
    if (rec.size >= 16) (*seqs)[rec.cpu].push_back(rbtrace::load_u64(rec.data + 8));
  }
  if (rc < 0) return "next: " + r->error();
  FILE* null = std::fopen("/dev/null", "w");
  rbtrace::ReportOptions ro;
  std::string what;
  if (rbtrace::write_report_text(*r, null, ro, &err) != 0) what = "report: " + err;
  else if (rbtrace::write_report_json(*r, null, &err) != 0) what = "report --json: " + err;
  else if (rbtrace::write_chrome_json(*r, null, 1, &err) != 0) what = "export --chrome: " + err;
  std::fclose(null);
  return what;
}

// A real client reads it to the end.
std::string trace_cmd_reads(const std::string& dir, const std::string& path) {
  const Proc p = run(dir, {RBTRACE_TRACE_CMD, "report", path});
  if (p.status != 0)
    return "trace-cmd report exit " + std::to_string(p.status) + ": " + p.err.substr(0, 500);
  return "";
}

void put32(std::string* d, size_t at, uint32_t v) { std::memcpy(&(*d)[at], &v, 4); }
void put64(std::string* d, size_t at, uint64_t v) { std::memcpy(&(*d)[at], &v, 8); }
uint32_t get32(const std::string& d, size_t at) { return rbtrace::load_u32(d.data() + at); }

class RecoverValidates : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(RBTRACE_TRACE_CMD, X_OK), 0)
        << RBTRACE_TRACE_CMD << " is needed (apt-get install trace-cmd)";
    const Spool& s = pristine();
    ASSERT_FALSE(s.session.empty());
    for (uint32_t cpu = 0; cpu < kCpus; cpu++)
      ASSERT_GE(s.pages[cpu].size(), 8u) << "CPU " << cpu << " spooled too few pages";
  }
};

// The undamaged spool: every page published, nothing skipped.
TEST_F(RecoverValidates, AnUndamagedSpoolIsPublishedWhole) {
  const Spool& s = pristine();
  const std::string dir = stage(s, s.files);
  ASSERT_FALSE(dir.empty());
  rbtrace::RecoverResult r;
  std::string err;
  ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
  ASSERT_EQ(r.published.size(), 1u);
  EXPECT_EQ(r.pages_rejected, 0u);
  EXPECT_EQ(r.pages_corrupt, 0u);
  std::vector<std::vector<uint64_t>> seqs;
  ASSERT_EQ(read_to_end(r.published[0], &seqs), "");
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    uint64_t n = 0;
    for (const auto& p : s.pages[cpu]) n += p.size();
    EXPECT_EQ(seqs[cpu].size(), n) << "CPU " << cpu;
  }
  EXPECT_EQ(trace_cmd_reads(dir, r.published[0]), "");
  ctest::remove_tree(dir);
}

// One chosen corruption per page. Returns the damaged files and, per CPU,
// the pages that must be skipped.
struct Damage {
  Files files;
  std::vector<std::set<size_t>> corrupt;  // [cpu] -> pages
  std::vector<std::string> what;
};

Damage chosen_damage(const Spool& s) {
  Damage d;
  d.files = s.files;
  d.corrupt.resize(kCpus);
  std::string* f[kCpus] = {&d.files.cpus[0], &d.files.cpus[1]};
  auto base = [](size_t page) { return page * kPage; };
  auto first_msg = [&](uint32_t cpu, size_t page) {
    for (const Ev& e : s.pages[cpu][page])
      if (e.type == rbtrace_events::rv_msg::id()) return e;
    ADD_FAILURE() << "no msg record on CPU " << cpu << " page " << page;
    return s.pages[cpu][page][0];
  };
  auto mark = [&](uint32_t cpu, size_t page, const std::string& what) {
    d.corrupt[cpu].insert(page);
    d.what.push_back("CPU " + std::to_string(cpu) + " page " + std::to_string(page) + ": " + what);
  };
  // CPU 0, page 1: the first event says type_len 0 with a length past the page.
  {
    const Ev& e = s.pages[0][1][0];
    put32(f[0], base(1) + e.hdr, rbtrace::make_event_word(0, 0));
    put32(f[0], base(1) + e.hdr + 4, 1u << 20);
    mark(0, 1, "length past the page");
  }
  // CPU 0, page 2: every event header of the page says type_len 1 (a
  // 4-byte record, shorter than the common header).
  for (const Ev& e : s.pages[0][2]) {
    const uint32_t w = get32(*f[0], base(2) + e.hdr);
    put32(f[0], base(2) + e.hdr, rbtrace::make_event_word(1, rbtrace::event_time_delta(w)));
  }
  mark(0, 2, "every header type_len 1");
  // CPU 0, page 3: commit larger than the page.
  put64(f[0], base(3) + 8, kPage + 64);
  mark(0, 3, "commit beyond the page");
  // CPU 0, page 4: a msg record relabelled as a wide one (its format needs
  // 72 bytes).
  {
    const Ev e = first_msg(0, 4);
    EXPECT_LT(e.len, 72u);
    const uint16_t wide = rbtrace_events::rv_wide::id();
    std::memcpy(&(*f[0])[base(4) + e.rec], &wide, 2);
    mark(0, 4, "type whose format needs more bytes");
  }
  // CPU 0, page 5: a __data_loc pointing outside its record.
  {
    const Ev e = first_msg(0, 5);
    put32(f[0], base(5) + e.rec + offsetof(rbtrace_events::rv_msg::record, text),
          (200u << 16) | 0xff0);
    mark(0, 5, "__data_loc outside the record");
  }
  // CPU 1, page 1: an unknown bit in the commit word.
  put64(f[1], base(1) + 8, rbtrace::load_u64(f[1]->data() + base(1) + 8) | (1ull << 40));
  mark(1, 1, "unknown commit bit");
  // CPU 1, page 2: type_len 0 with a length that is not a multiple of 4.
  {
    const Ev& e = s.pages[1][2][3];
    put32(f[1], base(2) + e.hdr, rbtrace::make_event_word(0, 0));
    put32(f[1], base(2) + e.hdr + 4, 6);
    mark(1, 2, "type_len 0, length 6");
  }
  // CPU 1, page 3: MISSED_STORED without MISSED_EVENTS.
  put64(f[1], base(3) + 8, rbtrace::load_u64(f[1]->data() + base(3) + 8) | rbtrace::kMissedStored);
  mark(1, 3, "MISSED_STORED alone");
  // CPU 1, page 4: a msg record's header one word short (two bytes of the
  // header changed: type_len - 1): its string now ends past the record.
  {
    const Ev e = first_msg(1, 4);
    const uint32_t w = get32(*f[1], base(4) + e.hdr);
    const uint32_t tl = rbtrace::event_type_len(w);
    EXPECT_GE(tl, 7u);
    put32(f[1], base(4) + e.hdr, rbtrace::make_event_word(tl - 1, rbtrace::event_time_delta(w)));
    mark(1, 4, "header one word short");
  }
  // Valid changes, kept: CPU 0 page 6, a time delta at its maximum; CPU 1
  // page 5, a record of a type that has no format.
  {
    const Ev& e = s.pages[0][6][2];
    const uint32_t w = get32(*f[0], base(6) + e.hdr);
    put32(f[0], base(6) + e.hdr,
          rbtrace::make_event_word(rbtrace::event_type_len(w), (1u << 27) - 1));
    const Ev& u = s.pages[1][5][1];
    const uint16_t unknown = 0xfffe;
    std::memcpy(&(*f[1])[base(5) + u.rec], &unknown, 2);
  }
  return d;
}

// A segment published in place under `name.1` (another user's file had
// the name) by a process killed before it removed its spool: the spool file
// is that published file, so recover only cleans up, and publishes no
// second copy (`name.2`).
TEST_F(RecoverValidates, ASegmentLinkedInPlaceUnderAnotherNameIsNotPublishedTwice) {
  const Spool& s = pristine();
  const std::string dir = stage(s, s.files);
  ASSERT_FALSE(dir.empty());
  const std::string name = dir + "/" + s.meta.public_name;
  const int fd = open(name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fchown(fd, 65534, 65534), 0) << "the test runs as root (CI does)";
  close(fd);
  const std::string dat = dir + "/spool/" + s.session + "/" + kDat;
  ASSERT_EQ(link(dat.c_str(), (name + ".1").c_str()), 0);
  rbtrace::RecoverResult r;
  std::string err;
  ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
  EXPECT_TRUE(r.published.empty());
  EXPECT_NE(std::find_if(r.messages.begin(), r.messages.end(),
                         [](const std::string& m) { return m.find("already published") != std::string::npos; }),
            r.messages.end());
  struct stat st;
  EXPECT_NE(lstat((name + ".2").c_str(), &st), 0) << "published twice";
  EXPECT_EQ(lstat((name + ".1").c_str(), &st), 0);
  EXPECT_TRUE(ctest::list(dir + "/spool").empty());
  ctest::remove_tree(dir);
}

TEST_F(RecoverValidates, ChosenCorruptionsAreSkippedCountedAndTheRestIsReadable) {
  const Spool& s = pristine();
  const Damage d = chosen_damage(s);
  const std::string dir = stage(s, d.files);
  ASSERT_FALSE(dir.empty());
  rbtrace::RecoverResult r;
  std::string err;
  ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
  for (const std::string& m : r.messages) std::printf("  recover: %s\n", m.c_str());
  ASSERT_EQ(r.published.size(), 1u);
  uint64_t corrupted = 0, total = 0;
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    corrupted += d.corrupt[cpu].size();
    total += s.pages[cpu].size();
  }
  EXPECT_EQ(r.pages_rejected, corrupted);
  EXPECT_EQ(r.pages_corrupt, corrupted);
  ASSERT_EQ(r.corrupt_per_cpu.size(), kCpus);
  for (uint32_t cpu = 0; cpu < kCpus; cpu++)
    EXPECT_EQ(r.corrupt_per_cpu[cpu], d.corrupt[cpu].size()) << "CPU " << cpu;
  EXPECT_EQ(r.pages, total - corrupted);
  // Said, per CPU, with the first pages named.
  bool said = false;
  for (const std::string& m : r.messages)
    said = said || m.find("9 corrupt pages skipped (cpu 0: 5, cpu 1: 4)") != std::string::npos;
  EXPECT_TRUE(said);
  // Read to the end, and every event of every page not corrupted is there,
  // in order.
  std::vector<std::vector<uint64_t>> seqs;
  EXPECT_EQ(read_to_end(r.published[0], &seqs), "");
  ASSERT_EQ(seqs.size(), kCpus);
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    std::vector<uint64_t> want;
    for (size_t p = 0; p < s.pages[cpu].size(); p++)
      if (!d.corrupt[cpu].count(p))
        for (const Ev& e : s.pages[cpu][p]) want.push_back(e.seq);
    EXPECT_EQ(seqs[cpu], want) << "CPU " << cpu;
  }
  EXPECT_EQ(trace_cmd_reads(dir, r.published[0]), "");
  const Proc rep = run(dir, {RBTRACE_CLI, "report", r.published[0]});
  EXPECT_EQ(rep.status, 0) << rep.err;
  const Proc js = run(dir, {RBTRACE_CLI, "report", "--json", r.published[0]});
  EXPECT_EQ(js.status, 0) << js.err;
  ctest::remove_tree(dir);
}

// The same damage through the CLI: it says how many pages were corrupt,
// per CPU, and the file it names reads to the end.
TEST_F(RecoverValidates, TheCliReportsCorruptPagesPerCpu) {
  const Spool& s = pristine();
  const Damage d = chosen_damage(s);
  const std::string dir = stage(s, d.files);
  ASSERT_FALSE(dir.empty());
  const Proc p = run(dir, {RBTRACE_CLI, "recover", dir});
  EXPECT_EQ(p.status, 0) << p.out << p.err;
  std::printf("%s", p.out.c_str());
  EXPECT_NE(p.out.find("; 0 incomplete pages skipped; 9 corrupt pages skipped (cpu 0: 5, cpu 1: 4)\n"),
            std::string::npos)
      << p.out;
  // The first corrupt pages named, each by its CPU's place in the segment
  // file (spool version 2: "000001.dat CPU <n>") and its offset there.
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    const std::string where = std::string(kDat) + " CPU " + std::to_string(cpu) + " page 1 (offset " +
                              std::to_string(spoolv::base(s.meta, cpu) + kPage) + "): ";
    EXPECT_NE(p.out.find("  " + where), std::string::npos) << where << "\n" << p.out;
  }
  const auto files = ctest::traces(dir);
  ASSERT_EQ(files.size(), 1u) << p.out;
  const Proc rep = run(dir, {RBTRACE_CLI, "report", files[0]});
  EXPECT_EQ(rep.status, 0) << rep.err;
  EXPECT_EQ(trace_cmd_reads(dir, files[0]), "");
  ctest::remove_tree(dir);
}

// Seeded fuzz: whatever recover publishes reads to the end.
TEST_F(RecoverValidates, FuzzedSpoolsPublishOnlyReadableFiles) {
  const Spool& s = pristine();
  constexpr int kRounds = 300;
  std::mt19937_64 rng(0x12c0de);
  uint64_t total_pages = 0;
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) total_pages += s.pages[cpu].size();
  uint64_t published = 0, rounds_with_skips = 0, skipped = 0, mutations = 0, unreadable = 0;
  for (int round = 0; round < kRounds; round++) {
    Files files = s.files;
    std::string log;
    const int n = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < n; k++) {
      const uint32_t cpu = static_cast<uint32_t>(rng() % kCpus);
      const size_t page = rng() % s.pages[cpu].size();
      const auto& evs = s.pages[cpu][page];
      std::string& f = files.cpus[cpu];
      const size_t b = page * kPage;
      const Ev& e = evs[rng() % evs.size()];
      size_t at = 0;
      switch (rng() % 5) {
        case 0: at = b + e.hdr + rng() % 4; break;                       // event header word
        case 1: at = b + e.hdr + 4 + rng() % 4; break;                   // length / first word
        case 2: at = b + e.rec + rng() % std::min<uint32_t>(e.len, 24); break;  // common header, seq, loc
        case 3: at = b + 8 + rng() % 8; break;                           // commit word
        default: at = b + 16 + rng() % (kPage - 16); break;              // anywhere in the data
      }
      const unsigned char old = static_cast<unsigned char>(f[at]);
      unsigned char v = static_cast<unsigned char>(rng());
      if (v == old) v ^= 0x80;
      f[at] = static_cast<char>(v);
      if (rng() % 2 && at + 1 < f.size()) f[at + 1] = static_cast<char>(rng());  // two bytes
      mutations++;
      log += " cpu" + std::to_string(cpu) + "@" + std::to_string(at);
    }
    const std::string dir = stage(s, files);
    ASSERT_FALSE(dir.empty());
    rbtrace::RecoverResult r;
    std::string err;
    ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << "round " << round << log << ": " << err;
    EXPECT_EQ(r.pages + r.pages_rejected, total_pages) << "round " << round << log;
    for (const std::string& p : r.published) {
      std::vector<std::vector<uint64_t>> seqs;
      const std::string e1 = read_to_end(p, &seqs);
      const std::string e2 = trace_cmd_reads(dir, p);
      EXPECT_EQ(e1, "") << "round " << round << log;
      EXPECT_EQ(e2, "") << "round " << round << log;
      if (!e1.empty() || !e2.empty()) unreadable++;
      published++;
    }
    skipped += r.pages_rejected;
    if (r.pages_rejected) rounds_with_skips++;
    ctest::remove_tree(dir);
  }
  std::printf("[recover fuzz] %d spools, %llu mutations: %llu files published, %llu read to the "
              "end by rbtrace and trace-cmd, %llu unreadable; %llu rounds skipped pages (%llu "
              "pages)\n",
              kRounds, static_cast<unsigned long long>(mutations),
              static_cast<unsigned long long>(published),
              static_cast<unsigned long long>(published - unreadable),
              static_cast<unsigned long long>(unreadable),
              static_cast<unsigned long long>(rounds_with_skips),
              static_cast<unsigned long long>(skipped));
  EXPECT_EQ(unreadable, 0u);
  EXPECT_GT(rounds_with_skips, 50u) << "the mutations hardly ever hit a check";
}

// ---- a crash while the segment is compacted in place ---------------------------

// The publisher compacts the segment file in place (publisher.cc, compact):
// it rewrites the meta with the plan (each CPU's final size, where the data
// starts), truncates the file to the end of the last kept byte, then
// collapses the gaps one by one, from the highest (fallocate
// FALLOC_FL_COLLAPSE_RANGE), then writes the header in front and links the
// file. A crash after any of these steps: recover finds each CPU's pages
// where the collapses done so far put them (told by the file's size), and
// publishes every event once, in order, nothing skipped. Done here for real
// on the pristine spool, for every number of collapses, with the data
// starting one page in (a gap before CPU 0 too) and at the header room (no
// gap there), and with the header written after the last collapse.
// The file system must collapse ranges: RBTRACE_COLLAPSE_DIR (default
// /var/tmp) on ext4 or XFS.
TEST_F(RecoverValidates, ACrashDuringInPlaceCompactionIsRecovered) {
  const Spool& s = pristine();
  const char* env = std::getenv("RBTRACE_COLLAPSE_DIR");
  const std::string parent = env && *env ? env : "/var/tmp";
  std::vector<uint64_t> sizes(kCpus);
  uint64_t total = 0;
  std::vector<std::vector<uint64_t>> want(kCpus);
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    sizes[cpu] = s.files.cpus[cpu].size();
    total += s.pages[cpu].size();
    for (const auto& p : s.pages[cpu])
      for (const Ev& e : p) want[cpu].push_back(e.seq);
  }
  const rbtrace::detail::SegmentLayout layout{s.meta.header_room, s.meta.cpu_region};
  int cases = 0;
  for (const uint64_t data_start : {uint64_t{kPage}, s.meta.header_room}) {
    rbtrace::detail::SegmentLayout::Plan plan;
    ASSERT_TRUE(layout.plan(sizes, data_start, &plan));
    ASSERT_EQ(plan.steps.size(), data_start < s.meta.header_room ? 2u : 1u);
    spoolv::SpoolMeta m = s.meta;
    m.final_sizes = plan.sizes;
    m.final_data_start = plan.final_offset[0];
    ASSERT_EQ(m.final_data_start, data_start);
    Files files = s.files;
    files.other["000001.meta"] = rbtrace::detail::encode_meta(m);
    for (size_t k = 0; k <= plan.steps.size(); k++) {
      for (const bool header : {false, true}) {
        if (header && k < plan.steps.size()) continue;  // written after the last collapse
        SCOPED_TRACE("data_start " + std::to_string(data_start) + ", " + std::to_string(k) +
                     " of " + std::to_string(plan.steps.size()) + " collapses done" +
                     (header ? ", header written" : ""));
        const std::string dir = stage(s, files, parent);
        ASSERT_FALSE(dir.empty()) << "cannot stage the spool in " << parent;
        const std::string sdir = dir + "/spool/" + s.session;
        const std::string dat = sdir + "/" + kDat;
        const int fd = open(dat.c_str(), O_RDWR | O_CLOEXEC);
        ASSERT_GE(fd, 0) << dat;
        ASSERT_EQ(ftruncate(fd, static_cast<off_t>(plan.truncate_to)), 0) << std::strerror(errno);
        for (size_t j = 0; j < k; j++) {
          const auto& c = plan.steps[j];
          const int rc = fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, static_cast<off_t>(c.off),
                                   static_cast<off_t>(c.len));
          const int e = errno;
          ASSERT_EQ(rc, 0) << "fallocate(FALLOC_FL_COLLAPSE_RANGE, " << c.off << ", " << c.len
                           << ") in " << parent << ": " << std::strerror(e)
                           << (e == EOPNOTSUPP || e == ENOTSUP
                                   ? ": this file system cannot collapse ranges; set "
                                     "RBTRACE_COLLAPSE_DIR to a directory on ext4 or XFS"
                                   : "");
        }
        if (header) {  // anything: recover reads only the pages
          const std::string h(data_start, 'H');
          ASSERT_EQ(pwrite(fd, h.data(), h.size(), 0), static_cast<ssize_t>(h.size()));
        }
        struct stat st;
        ASSERT_EQ(fstat(fd, &st), 0);
        close(fd);
        ASSERT_EQ(static_cast<uint64_t>(st.st_size), plan.size_after(k));
        // The pages are where this test's own arithmetic says (spool_view.h).
        spoolv::Segment seg;
        ASSERT_EQ(spoolv::load_segment(sdir, 1, &seg), "");
        for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
          EXPECT_EQ(seg.ranges[cpu].start, plan.offset_after(layout, cpu, k)) << "CPU " << cpu;
          EXPECT_TRUE(seg.cpus[cpu] == s.files.cpus[cpu]) << "CPU " << cpu << " moved elsewhere";
        }
        rbtrace::RecoverResult r;
        std::string err;
        ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
        for (const std::string& msg : r.messages) std::printf("  recover: %s\n", msg.c_str());
        ASSERT_EQ(r.published.size(), 1u);
        EXPECT_EQ(r.pages_rejected, 0u);
        EXPECT_EQ(r.pages_corrupt, 0u);
        EXPECT_EQ(r.pages, total);
        std::vector<std::vector<uint64_t>> seqs;
        EXPECT_EQ(read_to_end(r.published[0], &seqs), "");
        ASSERT_EQ(seqs.size(), kCpus);
        for (uint32_t cpu = 0; cpu < kCpus; cpu++)
          EXPECT_EQ(seqs[cpu], want[cpu]) << "CPU " << cpu << ": events lost, doubled or moved";
        EXPECT_EQ(trace_cmd_reads(dir, r.published[0]), "");
        EXPECT_TRUE(ctest::list(dir + "/spool").empty()) << "spool not cleaned up";
        ctest::remove_tree(dir);
        cases++;
      }
    }
  }
  EXPECT_EQ(cases, 7);  // (3 + 1) + (2 + 1)
}

// ---- `.new-*` directories -------------------------------------------------------

bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}
void touch(const std::string& p) {
  const int fd = open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
  ASSERT_GE(fd, 0) << p;
  close(fd);
}
// Sets the modification time an hour back (the link itself for a link).
void age(const std::string& p) {
  struct timespec t[2];
  clock_gettime(CLOCK_REALTIME, &t[0]);
  t[0].tv_sec -= 3600;
  t[1] = t[0];
  ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << p;
}
// DIR/spool/.new-<tag>, made as a consumer makes it (0700, `lock` 0600),
// its times an hour back unless `young`.
std::string new_dir(const std::string& dir, const std::string& tag, bool with_lock = true,
                    bool young = false) {
  const std::string d = dir + "/spool/.new-20250101-000000-000000000-" + tag;
  EXPECT_EQ(mkdir(d.c_str(), 0700), 0) << d;
  if (with_lock) touch(d + "/lock");
  if (!young) {
    if (with_lock) age(d + "/lock");
    age(d);
  }
  return d;
}
bool said(const rbtrace::RecoverResult& r, const std::string& path, const std::string& what) {
  for (const std::string& m : r.messages)
    if (m.find(path) != std::string::npos && m.find(what) != std::string::npos) return true;
  return false;
}

struct NewDirs : ::testing::Test {
  void SetUp() override {
    dir = ctest::make_temp_dir("/tmp", "newdirs");
    ASSERT_FALSE(dir.empty());
    ASSERT_EQ(mkdir((dir + "/spool").c_str(), 0700), 0);
  }
  void TearDown() override { ctest::remove_tree(dir); }
  rbtrace::RecoverResult recover() {
    rbtrace::RecoverResult r;
    std::string err;
    EXPECT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
    for (const std::string& m : r.messages) std::printf("  recover: %s\n", m.c_str());
    return r;
  }
  std::string dir;
};

// A crash between mkdir and rename: only a free lock (or nothing, a crash
// before the lock was made) in an old `.new-*`: removed.
TEST_F(NewDirs, AStaleOneWithAFreeLockOrEmptyIsRemoved) {
  const std::string a = new_dir(dir, "1");
  const std::string b = new_dir(dir, "2", /*with_lock=*/false);
  const rbtrace::RecoverResult r = recover();
  EXPECT_FALSE(exists(a)) << "a stale .new- directory with a free lock was kept";
  EXPECT_FALSE(exists(b)) << "a stale empty .new- directory was kept";
  EXPECT_EQ(r.stale_new_dirs_removed, 2u);
  EXPECT_TRUE(said(r, a, "removed"));
  EXPECT_EQ(ctest::list(dir + "/spool").size(), 0u);
}

// A consumer between its flock and its rename holds the lock: kept, even
// when old; once the lock is free, removed.
TEST_F(NewDirs, OneWhoseLockIsHeldIsKept) {
  const std::string d = new_dir(dir, "held");
  const int fd = open((d + "/lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  age(d + "/lock");
  age(d);
  rbtrace::RecoverResult r = recover();
  EXPECT_TRUE(exists(d + "/lock")) << "a .new- directory whose lock is held was touched";
  EXPECT_EQ(r.stale_new_dirs_removed, 0u);
  EXPECT_TRUE(said(r, d, "lock is held"));
  close(fd);  // the holder is gone
  r = recover();
  EXPECT_FALSE(exists(d));
  EXPECT_EQ(r.stale_new_dirs_removed, 1u);
}

// A young one may be a consumer between mkdir and flock (its lock free or
// not made yet): not touched, not mentioned. Aged, it goes.
TEST_F(NewDirs, AYoungOneIsKeptWhateverItsLock) {
  const std::string a = new_dir(dir, "y1", true, /*young=*/true);
  const std::string b = new_dir(dir, "y2", false, /*young=*/true);
  rbtrace::RecoverResult r = recover();
  EXPECT_TRUE(exists(a + "/lock"));
  EXPECT_TRUE(exists(b));
  EXPECT_EQ(r.stale_new_dirs_removed, 0u);
  EXPECT_TRUE(r.messages.empty());
  age(a + "/lock");
  age(a);
  age(b);
  r = recover();
  EXPECT_FALSE(exists(a));
  EXPECT_FALSE(exists(b));
  EXPECT_EQ(r.stale_new_dirs_removed, 2u);
}

// More than a consumer puts there before the rename: left, and said.
TEST_F(NewDirs, OneHoldingMoreThanItsLockIsKept) {
  const std::string d = new_dir(dir, "full");
  touch(d + "/000001.meta");
  age(d);
  const rbtrace::RecoverResult r = recover();
  EXPECT_TRUE(exists(d + "/lock"));
  EXPECT_TRUE(exists(d + "/000001.meta"));
  EXPECT_EQ(r.stale_new_dirs_removed, 0u);
  EXPECT_TRUE(said(r, d, "holds '000001.meta'"));
}

// Links: `.new-x -> elsewhere` is not followed (what it points at, a
// directory that would qualify, keeps its lock) and the link itself is
// left (a consumer never makes one), and said; a `.new-*` whose lock is a
// link is left; a regular file named `.new-*` too.
TEST_F(NewDirs, LinksAreNeitherFollowedNorRemoved) {
  const std::string victim = ctest::make_temp_dir("/tmp", "newdirs-victim");
  ASSERT_FALSE(victim.empty());
  touch(victim + "/lock");
  age(victim + "/lock");
  age(victim);
  const std::string link = dir + "/spool/.new-20250101-000000-000000000-link";
  ASSERT_EQ(symlink(victim.c_str(), link.c_str()), 0);
  age(link);
  const std::string secret = victim + "/secret";
  touch(secret);
  const std::string k = new_dir(dir, "locklink", /*with_lock=*/false);
  ASSERT_EQ(symlink(secret.c_str(), (k + "/lock").c_str()), 0);
  age(k + "/lock");
  age(k);
  const std::string f = dir + "/spool/.new-20250101-000000-000000000-file";
  touch(f);
  age(f);
  const rbtrace::RecoverResult r = recover();
  EXPECT_TRUE(exists(victim + "/lock")) << "recover went through the link";
  EXPECT_TRUE(exists(secret));
  EXPECT_TRUE(exists(link)) << "the link was removed";
  EXPECT_TRUE(said(r, link, "symbolic link"));
  EXPECT_TRUE(exists(k + "/lock"));
  EXPECT_TRUE(said(r, k, "its lock is a symbolic link"));
  EXPECT_TRUE(exists(f));
  EXPECT_TRUE(said(r, f, "not a directory"));
  EXPECT_EQ(r.stale_new_dirs_removed, 0u);
  ctest::remove_tree(victim);
}

// One of another user (root plants it for uid 65534): not ours, left.
TEST_F(NewDirs, OneOfAnotherUserIsKept) {
  ASSERT_EQ(geteuid(), 0u) << "needs root (to hand the directory to another uid); the suite runs as root";
  const std::string d = new_dir(dir, "other");
  ASSERT_EQ(chown((d + "/lock").c_str(), 65534, 65534), 0);
  ASSERT_EQ(chown(d.c_str(), 65534, 65534), 0);
  age(d);
  const rbtrace::RecoverResult r = recover();
  EXPECT_TRUE(exists(d + "/lock"));
  EXPECT_EQ(r.stale_new_dirs_removed, 0u);
  EXPECT_TRUE(said(r, d, "not a directory of ours"));
}

}  // namespace
