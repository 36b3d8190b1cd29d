// The control protocol codec (rbtrace/control.h): round trips, and every
// kind of bad message (bad magic, version, type, flags; oversized;
// truncated at every length; trailing bytes; bad fields) rejected with the
// right error. Plus the private directory checks.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "rbtrace/control.h"

using namespace rbtrace;
using namespace rbtrace::control;

namespace {

int parse(const std::vector<uint8_t>& m, Request* r = nullptr) {
  Request tmp;
  std::string why;
  return parse_request(m.data(), m.size(), r ? r : &tmp, &why);
}

template <class T>
void poke(std::vector<uint8_t>* m, size_t at, T v) {
  std::memcpy(m->data() + at, &v, sizeof v);
}

TEST(ControlCodec, RequestsRoundTrip) {
  Request r;
  r.type = MsgType::kSnapshot;
  r.cpu = 3;
  r.timeout_ms = 250;
  Request got;
  ASSERT_EQ(parse(encode_request(r), &got), 0);
  EXPECT_EQ(got.type, MsgType::kSnapshot);
  EXPECT_EQ(got.cpu, 3);
  EXPECT_EQ(got.timeout_ms, 250u);
  r.cpu = -1;
  ASSERT_EQ(parse(encode_request(r), &got), 0);
  EXPECT_EQ(got.cpu, -1);

  Request e;
  e.type = MsgType::kEvents;
  e.enable = false;
  e.event = "demo:tick";
  ASSERT_EQ(parse(encode_request(e), &got), 0);
  EXPECT_EQ(got.type, MsgType::kEvents);
  EXPECT_FALSE(got.enable);
  EXPECT_EQ(got.event, "demo:tick");

  Request s;
  s.type = MsgType::kStat;
  ASSERT_EQ(parse(encode_request(s), &got), 0);
  EXPECT_EQ(got.type, MsgType::kStat);
  EXPECT_EQ(encode_request(s).size(), kHeaderSize);
}

TEST(ControlCodec, RepliesRoundTrip) {
  Reply r;
  r.for_type = MsgType::kStat;
  r.stat.page_size = 4096;
  r.stat.pages_per_cpu = 16;
  r.stat.snapshots = 7;
  r.stat.no_slot_dropped = 4000;
  r.stat.cpus.resize(3);
  r.stat.cpus[1].owner = 1234;
  r.stat.cpus[1].total.entries = 99;
  r.stat.cpus[2].live.read = 5;
  auto m = encode_reply(r);
  Reply got;
  std::string why;
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kStat, &got, &why), 0) << why;
  ASSERT_EQ(got.stat.cpus.size(), 3u);
  EXPECT_EQ(got.stat.cpus[1].owner, 1234);
  EXPECT_EQ(got.stat.cpus[1].total.entries, 99u);
  EXPECT_EQ(got.stat.cpus[2].live.read, 5u);
  EXPECT_EQ(got.stat.snapshots, 7u);
  EXPECT_EQ(got.stat.no_slot_dropped, 4000u);

  Reply s;
  s.for_type = MsgType::kSnapshot;
  s.snapshot.total_ns = 123;
  s.snapshot.cpus.push_back({1, -ETIMEDOUT, 0, 4321, 0, 9});
  m = encode_reply(s);
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kSnapshot, &got, &why), 0) << why;
  ASSERT_EQ(got.snapshot.cpus.size(), 1u);
  EXPECT_EQ(got.snapshot.cpus[0].swap_result, -ETIMEDOUT);
  EXPECT_EQ(got.snapshot.cpus[0].owner, 4321);
  EXPECT_EQ(got.snapshot.cpus[0].swap_ns, 9u);

  Reply err;
  err.for_type = MsgType::kSnapshot;
  err.status = -EINVAL;
  err.message = "no CPU 9";
  m = encode_reply(err);
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kSnapshot, &got, &why), 0) << why;
  EXPECT_EQ(got.status, -EINVAL);
  EXPECT_EQ(got.message, "no CPU 9");
  // A truncated reply is refused at every length.
  for (size_t n = 0; n < m.size(); n++)
    EXPECT_NE(parse_reply(m.data(), n, MsgType::kSnapshot, &got, &why), 0) << n;
}

TEST(ControlCodec, BadHeadersAreRejected) {
  Request r;
  r.type = MsgType::kSnapshot;
  const auto good = encode_request(r);
  auto m = good;
  poke<uint32_t>(&m, 0, 0xdeadbeef);
  EXPECT_EQ(parse(m), -EPROTO);
  m = good;
  for (uint16_t v : {uint16_t{0}, uint16_t{kVersion - 1}, uint16_t{kVersion + 1}}) {
    m = good;
    poke<uint16_t>(&m, 4, v);  // an older or newer peer: said, not guessed at
    EXPECT_EQ(parse(m), -EPROTONOSUPPORT) << "version " << v;
  }
  m = good;
  poke<uint16_t>(&m, 6, 77);
  EXPECT_EQ(parse(m), -EPROTO);
  m = good;
  poke<uint16_t>(&m, 6, static_cast<uint16_t>(MsgType::kReply));  // a reply is no request
  EXPECT_EQ(parse(m), -EPROTO);
  m = good;
  poke<uint32_t>(&m, 12, 1);
  EXPECT_EQ(parse(m), -EBADMSG);
}

TEST(ControlCodec, OversizedIsRejectedFromTheHeaderAlone) {
  std::vector<uint8_t> m = encode_request(Request{});
  poke<uint32_t>(&m, 8, kMaxRequestPayload + 1);
  uint16_t type;
  uint32_t len;
  std::string why;
  EXPECT_EQ(parse_header(m.data(), m.size(), kMaxRequestPayload, &type, &len, &why), -EMSGSIZE);
  poke<uint32_t>(&m, 8, 0xffffffffu);
  EXPECT_EQ(parse(m), -EMSGSIZE);
}

TEST(ControlCodec, TruncatedAtEveryLengthIsRejected) {
  Request e;
  e.type = MsgType::kEvents;
  e.event = "system:name";
  const auto m = encode_request(e);
  Request got;
  std::string why;
  for (size_t n = 0; n < m.size(); n++)
    EXPECT_EQ(parse_request(m.data(), n, &got, &why), -EBADMSG) << n;
  auto longer = m;
  longer.push_back(0);
  EXPECT_EQ(parse(longer), -EBADMSG);  // trailing bytes
}

TEST(ControlCodec, BadFieldsAreRejected) {
  Request r;
  r.type = MsgType::kSnapshot;
  r.cpu = -2;
  EXPECT_EQ(parse(encode_request(r)), -EBADMSG);
  r.cpu = 1 << 20;
  EXPECT_EQ(parse(encode_request(r)), -EBADMSG);
  r.cpu = 0;
  r.timeout_ms = 0;
  EXPECT_EQ(parse(encode_request(r)), -EBADMSG);
  r.timeout_ms = 3600000;
  EXPECT_EQ(parse(encode_request(r)), -EBADMSG);

  Request e;
  e.type = MsgType::kEvents;
  for (const char* bad : {"", "nocolon", ":name", "sys:", "a:b:c", "sys:na me", "sys:\n",
                          "../../etc:passwd"}) {
    e.event = bad;
    EXPECT_EQ(parse(encode_request(e)), -EBADMSG) << bad;
  }
  e.event = std::string(kMaxEventName + 1, 'a');
  e.event[3] = ':';
  EXPECT_EQ(parse(encode_request(e)), -EBADMSG);
  e.event = "sys:*";
  auto m = encode_request(e);
  EXPECT_EQ(parse(m), 0);
  m[kHeaderSize] = 2;  // enable must be 0 or 1
  EXPECT_EQ(parse(m), -EBADMSG);
  m[kHeaderSize] = 1;
  m[kHeaderSize + 1] = 1;  // pad must be 0
  EXPECT_EQ(parse(m), -EBADMSG);
  m[kHeaderSize + 1] = 0;
  poke<uint16_t>(&m, kHeaderSize + 2, 200);  // name longer than the payload
  EXPECT_EQ(parse(m), -EBADMSG);
  // A stat request with a payload.
  Request s;
  m = encode_request(s);
  poke<uint32_t>(&m, 8, 4);
  m.insert(m.end(), {1, 2, 3, 4});
  EXPECT_EQ(parse(m), -EBADMSG);
}

TEST(ControlCodec, PatternsTakeStarsAnywhere) {
  for (const char* good : {"*", "*:*", "sys:*", "*:name", "sy*:na*e", "sys:name"})
    EXPECT_TRUE(valid_event_pattern(good)) << good;
  for (const char* bad : {"", "nocolon", "**", ":*", "*:", "a:b:c", "s y:*", "sys:\n", "*:*:*"})
    EXPECT_FALSE(valid_event_pattern(bad)) << bad;
  EXPECT_TRUE(event_matches("*", "demo", "tick"));
  EXPECT_TRUE(event_matches("*:*", "demo", "tick"));
  EXPECT_TRUE(event_matches("demo:*", "demo", "tick"));
  EXPECT_TRUE(event_matches("*:tick", "demo", "tick"));
  EXPECT_TRUE(event_matches("de*:t*k", "demo", "tick"));
  EXPECT_TRUE(event_matches("d*o*o:*", "doodoo", "x"));
  EXPECT_FALSE(event_matches("demo:*", "demox", "tick"));
  EXPECT_FALSE(event_matches("*:tic", "demo", "tick"));
  EXPECT_FALSE(event_matches("de*:t*x", "demo", "tick"));
  Request e;
  e.type = MsgType::kEvents;
  for (const char* p : {"*", "*:*", "*:tick"}) {
    e.event = p;
    Request got;
    ASSERT_EQ(parse(encode_request(e), &got), 0) << p;
    EXPECT_EQ(got.event, p);
  }
}

TEST(ControlCodec, RecordRequestsRoundTrip) {
  Request r;
  r.type = MsgType::kRecordStart;
  r.record.segment_bytes = 2 << 20;
  r.record.segment_seconds = 5;
  r.record.pool_pages = 32;
  r.record.period_us = 1000;
  r.record.watermark_pages = 8;
  r.record.batch_pages = 16;
  r.record.file_mode = 0640;
  r.record.backend = 2;
  r.record.publish = 1;
  r.record.fsync = false;
  r.record.direct_io = true;
  r.record.prefix = "run_1-a";
  Request got;
  ASSERT_EQ(parse(encode_request(r), &got), 0);
  EXPECT_EQ(got.type, MsgType::kRecordStart);
  EXPECT_EQ(got.record.segment_bytes, 2u << 20);
  EXPECT_EQ(got.record.segment_seconds, 5u);
  EXPECT_EQ(got.record.pool_pages, 32u);
  EXPECT_EQ(got.record.period_us, 1000u);
  EXPECT_EQ(got.record.watermark_pages, 8u);
  EXPECT_EQ(got.record.batch_pages, 16u);
  EXPECT_EQ(got.record.file_mode, 0640u);
  EXPECT_EQ(got.record.backend, 2);
  EXPECT_EQ(got.record.publish, 1);
  EXPECT_FALSE(got.record.fsync);
  EXPECT_TRUE(got.record.direct_io);
  EXPECT_EQ(got.record.prefix, "run_1-a");
  for (MsgType t : {MsgType::kRecordStop, MsgType::kRecordFlush, MsgType::kRecordStatus}) {
    Request e;
    e.type = t;
    ASSERT_EQ(parse(encode_request(e), &got), 0);
    EXPECT_EQ(got.type, t);
    EXPECT_EQ(encode_request(e).size(), kHeaderSize);
  }
  Request sw;
  sw.type = MsgType::kRecordSwitch;
  sw.on = false;
  ASSERT_EQ(parse(encode_request(sw), &got), 0);
  EXPECT_FALSE(got.on);
  sw.on = true;
  ASSERT_EQ(parse(encode_request(sw), &got), 0);
  EXPECT_TRUE(got.on);
  Request l;
  l.type = MsgType::kEventList;
  ASSERT_EQ(parse(encode_request(l), &got), 0);
  EXPECT_EQ(got.event, "");
  l.event = "demo:*";
  ASSERT_EQ(parse(encode_request(l), &got), 0);
  EXPECT_EQ(got.event, "demo:*");

  // Each new request, truncated at every length or with a byte more.
  for (const Request& q : {r, sw, l}) {
    const auto m = encode_request(q);
    for (size_t n = 0; n < m.size(); n++) EXPECT_EQ(parse(std::vector<uint8_t>(m.begin(), m.begin() + n)), -EBADMSG) << n;
    auto longer = m;
    longer.push_back(0);
    poke<uint32_t>(&longer, 8, static_cast<uint32_t>(longer.size() - kHeaderSize));
    EXPECT_EQ(parse(longer), -EBADMSG);
  }
}

TEST(ControlCodec, BadRecordFieldsAreRejected) {
  auto start = [](auto change) {
    Request r;
    r.type = MsgType::kRecordStart;
    change(&r.record);
    return parse(encode_request(r));
  };
  EXPECT_EQ(start([](RecordOptions*) {}), 0);
  EXPECT_EQ(start([](RecordOptions* o) { o->segment_bytes = 0; }), 0);  // never rotate by size
  EXPECT_EQ(start([](RecordOptions* o) { o->segment_bytes = 4096; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->segment_bytes = ~0ULL; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->segment_seconds = 30 * 86400; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->pool_pages = 5000; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->period_us = 1; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->period_us = 100000000; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->watermark_pages = 1u << 30; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->batch_pages = 0; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->file_mode = 0666; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->file_mode = 04600; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->backend = 3; }), -EBADMSG);
  EXPECT_EQ(start([](RecordOptions* o) { o->publish = 9; }), -EBADMSG);
  for (const char* bad : {"", "../x", "a/b", "-x", ".hidden", "sp ace"})
    EXPECT_EQ(start([&](RecordOptions* o) { o->prefix = bad; }), -EBADMSG) << bad;
  EXPECT_EQ(start([](RecordOptions* o) { o->prefix = std::string(65, 'a'); }), -EBADMSG);
  // The two flag bytes after backend/publish must be 0 or 1.
  Request r;
  r.type = MsgType::kRecordStart;
  auto m = encode_request(r);
  const size_t flags = kHeaderSize + 8 + 6 * 4;
  m[flags + 2] = 2;
  EXPECT_EQ(parse(m), -EBADMSG);
  // A switch's on must be 0 or 1, its pad 0.
  Request sw;
  sw.type = MsgType::kRecordSwitch;
  m = encode_request(sw);
  m[kHeaderSize] = 2;
  EXPECT_EQ(parse(m), -EBADMSG);
  m[kHeaderSize] = 1;
  m[kHeaderSize + 3] = 1;
  EXPECT_EQ(parse(m), -EBADMSG);
  // Stop, flush, status take no payload.
  Request stop;
  stop.type = MsgType::kRecordStop;
  m = encode_request(stop);
  poke<uint32_t>(&m, 8, 1);
  m.push_back(0);
  EXPECT_EQ(parse(m), -EBADMSG);
  // A list pattern that is no pattern, or longer than its payload.
  Request l;
  l.type = MsgType::kEventList;
  l.event = "a:b:c";
  EXPECT_EQ(parse(encode_request(l)), -EBADMSG);
  l.event = "x:y";
  m = encode_request(l);
  poke<uint16_t>(&m, kHeaderSize, 50);
  EXPECT_EQ(parse(m), -EBADMSG);
}

TEST(ControlCodec, EventListAndRecordRepliesRoundTrip) {
  Reply r;
  r.for_type = MsgType::kEventList;
  r.events = {{"demo:tick", true}, {"demo:work", false}};
  r.events_truncated = true;
  auto m = encode_reply(r);
  Reply got;
  std::string why;
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kEventList, &got, &why), 0) << why;
  ASSERT_EQ(got.events.size(), 2u);
  EXPECT_EQ(got.events[0].name, "demo:tick");
  EXPECT_TRUE(got.events[0].enabled);
  EXPECT_FALSE(got.events[1].enabled);
  EXPECT_TRUE(got.events_truncated);
  for (size_t n = 0; n < m.size(); n++)
    EXPECT_NE(parse_reply(m.data(), n, MsgType::kEventList, &got, &why), 0) << n;
  auto bad = m;
  poke<uint32_t>(&bad, kHeaderSize + 6, 1000000);  // more events than bytes
  EXPECT_EQ(parse_reply(bad.data(), bad.size(), MsgType::kEventList, &got, &why), -EBADMSG);

  Reply rr;
  rr.for_type = MsgType::kRecordFlush;
  rr.message = "flushed";
  rr.record.active = true;
  rr.record.recording_on = false;
  rr.record.pages_published = 10;
  rr.record.segments_published = 2;
  rr.record.segments_failed = 1;
  rr.record.events_published = 1234;
  rr.record.events_lost = 5;
  rr.record.pages_lost = 1;
  rr.record.note = "disk full";
  rr.record.files = {"trace-1-000001.dat", "trace-1-000002.dat"};
  for (MsgType t : {MsgType::kRecordStart, MsgType::kRecordStop, MsgType::kRecordFlush,
                    MsgType::kRecordStatus, MsgType::kRecordSwitch}) {
    rr.for_type = t;
    m = encode_reply(rr);
    ASSERT_EQ(parse_reply(m.data(), m.size(), t, &got, &why), 0) << why;
    EXPECT_TRUE(got.record.active);
    EXPECT_FALSE(got.record.recording_on);
    EXPECT_EQ(got.record.pages_published, 10u);
    EXPECT_EQ(got.record.segments_published, 2u);
    EXPECT_EQ(got.record.segments_failed, 1u);
    EXPECT_EQ(got.record.events_published, 1234u);
    EXPECT_EQ(got.record.events_lost, 5u);
    EXPECT_EQ(got.record.pages_lost, 1u);
    EXPECT_EQ(got.record.note, "disk full");
    EXPECT_EQ(got.record.files, rr.record.files);
    for (size_t n = 0; n < m.size(); n++)
      EXPECT_NE(parse_reply(m.data(), n, t, &got, &why), 0) << n;
  }
  // A file name that is a path is refused, whatever the server says.
  for (const char* path : {"../etc/passwd", "a/b", ".", ".."}) {
    rr.record.files = {path};
    m = encode_reply(rr);
    EXPECT_EQ(parse_reply(m.data(), m.size(), MsgType::kRecordStop, &got, &why), -EBADMSG) << path;
  }
  rr.record.files = {};
  m = encode_reply(rr);
  m[kHeaderSize + 4 + 2 + rr.message.size()] = 2;  // active must be 0 or 1
  EXPECT_EQ(parse_reply(m.data(), m.size(), MsgType::kRecordStop, &got, &why), -EBADMSG);
}

class PrivateDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-dirtest-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + base_).c_str()); }
  std::string base_;
};

TEST_F(PrivateDir, CreatedWith0700AndReopened) {
  const std::string d = base_ + "/ctl";
  std::string err;
  int fd = open_private_dir(d, true, &err);
  ASSERT_GE(fd, 0) << err;
  close(fd);
  struct stat st {};
  ASSERT_EQ(stat(d.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  fd = open_private_dir(d, true, &err);
  EXPECT_GE(fd, 0) << err;
  close(fd);
  EXPECT_EQ(open_private_dir(base_ + "/missing", false, &err), -ENOENT);
}

TEST_F(PrivateDir, WrongModeOwnerOrSymlinkIsRefused) {
  const std::string d = base_ + "/ctl";
  ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
  ASSERT_EQ(chmod(d.c_str(), 0755), 0);
  std::string err;
  EXPECT_EQ(open_private_dir(d, true, &err), -EPERM);
  EXPECT_NE(err.find("0700"), std::string::npos) << err;
  ASSERT_EQ(chmod(d.c_str(), 0700), 0);
  ASSERT_EQ(chown(d.c_str(), 65534, 65534), 0);  // we are root in CI
  EXPECT_EQ(open_private_dir(d, true, &err), -EPERM);
  EXPECT_NE(err.find("owned by uid 65534"), std::string::npos) << err;
  const std::string l = base_ + "/link";
  ASSERT_EQ(mkdir((base_ + "/real").c_str(), 0700), 0);
  ASSERT_EQ(symlink((base_ + "/real").c_str(), l.c_str()), 0);
  EXPECT_LT(open_private_dir(l, true, &err), 0) << "a symlink was followed";
  const std::string f = base_ + "/file";
  close(open(f.c_str(), O_CREAT | O_WRONLY, 0600));
  EXPECT_LT(open_private_dir(f, true, &err), 0);
}

}  // namespace

// The fuzz seeds (tests/corpus/control, written by make_corpus.py) are valid
// messages of the current protocol version, so the fuzzer starts from
// messages that get past the header.
TEST(ControlCodec, CorpusSeedsAreValidMessages) {
  auto read = [](const char* name) {
    std::string p = std::string(RBTRACE_CONTROL_CORPUS_DIR) + "/" + name;
    std::vector<uint8_t> v;
    if (FILE* f = std::fopen(p.c_str(), "rb")) {
      int ch;
      while ((ch = std::fgetc(f)) != EOF) v.push_back(static_cast<uint8_t>(ch));
      std::fclose(f);
    }
    return v;
  };
  std::string why;
  for (const char* n : {"stat.bin", "snapshot_all.bin", "snapshot_cpu1.bin", "events.bin",
                        "events_all.bin", "event_list.bin", "event_list_all.bin",
                        "record_start.bin", "record_stop.bin", "record_flush.bin",
                        "record_status.bin", "record_off.bin"}) {
    const auto m = read(n);
    ASSERT_FALSE(m.empty()) << n;
    Request r;
    EXPECT_EQ(parse_request(m.data(), m.size(), &r, &why), 0) << n << ": " << why;
  }
  Reply got;
  auto m = read("reply_stat.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kStat, &got, &why), 0) << why;
  EXPECT_EQ(got.stat.no_slot_dropped, 4000u);
  ASSERT_EQ(got.stat.cpus.size(), 2u);
  m = read("reply_snapshot.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kSnapshot, &got, &why), 0) << why;
  ASSERT_EQ(got.snapshot.cpus.size(), 2u);
  EXPECT_EQ(got.snapshot.cpus[1].owner, 4321);
  EXPECT_EQ(got.snapshot.cpus[1].swap_result, -ETIMEDOUT);
  m = read("reply_event_list.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kEventList, &got, &why), 0) << why;
  ASSERT_EQ(got.events.size(), 2u);
  m = read("reply_record.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kRecordFlush, &got, &why), 0) << why;
  ASSERT_EQ(got.record.files.size(), 2u);
  EXPECT_EQ(got.record.events_published, 1234u);
  m = read("reply_error.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kSnapshot, &got, &why), 0) << why;
  EXPECT_EQ(got.status, -EINVAL);
}
