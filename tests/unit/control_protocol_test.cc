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
  for (const char* n : {"stat.bin", "snapshot_all.bin", "snapshot_cpu1.bin", "events.bin"}) {
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
  m = read("reply_error.bin");
  ASSERT_EQ(parse_reply(m.data(), m.size(), MsgType::kSnapshot, &got, &why), 0) << why;
  EXPECT_EQ(got.status, -EINVAL);
}
