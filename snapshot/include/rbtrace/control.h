// rbtrace/control.h - the control plane: a server embedded in the
// application (opt-in) and the client side the `rbtrace` CLI uses.
//
// Transport: a Unix stream socket <dir>/<pid>.sock, where <dir> is private
// to the user (mode 0700, owned by the effective uid, not a symlink):
// $RBTRACE_CONTROL_DIR, else $XDG_RUNTIME_DIR/rbtrace, else
// /tmp/rbtrace-<uid>. The server refuses a directory with another owner or
// any group/other permission bit. Peers are checked with SO_PEERCRED: same
// effective uid, or root.
//
// Protocol (version 2, host byte order: both ends are on one machine;
// version 2 added StatReply::no_slot_dropped and SnapshotReplyCpu::owner):
//   header  u32 magic 'RBTC' | u16 version | u16 type | u32 length | u32 flags (0)
//   payload `length` bytes, at most kMaxRequestPayload for a request and
//           kMaxReplyPayload for a reply; every field is length-checked.
// One request and one reply per connection. Requests:
//   kStat      (empty)                      -> CPUs and their counters
//   kSnapshot  i32 cpu (-1 all), u32 timeout_ms, + one fd (SCM_RIGHTS): an
//              empty regular file opened for writing by the client; the
//              server writes a trace.dat into it and never opens a path
//   kEvents    u8 enable, u8 pad, u16 n, n bytes "system:name" or "system:*"
// Reply (kReply): i32 status (0 or -errno), u16 n, n bytes message, then a
// body by request type (see StatReply, SnapshotReply).
// Malformed, oversized and truncated messages are answered with -EBADMSG /
// -EMSGSIZE / -EPROTO (when a reply can still be sent) and the connection
// is closed; nothing else happens.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/ring_buffer.h"

namespace rbtrace {

class Snapshot;

namespace control {

inline constexpr uint32_t kMagic = 0x43544252;  // "RBTC" in little-endian bytes
inline constexpr uint16_t kVersion = 2;
inline constexpr uint32_t kHeaderSize = 16;
inline constexpr uint32_t kMaxRequestPayload = 512;
inline constexpr uint32_t kMaxReplyPayload = 1u << 20;
inline constexpr uint32_t kMaxEventName = 256;

enum class MsgType : uint16_t {
  kStat = 1,
  kSnapshot = 2,
  kEvents = 3,
  kReply = 0x100,
};

struct Request {
  MsgType type = MsgType::kStat;
  int32_t cpu = -1;           // kSnapshot
  uint32_t timeout_ms = 500;  // kSnapshot: per-CPU swap timeout
  bool enable = true;         // kEvents
  std::string event;          // kEvents: "system:name" or "system:*"
};

struct StatCpu {
  int32_t owner = 0;  // tid, 0 none, -1 claimed
  CpuStats live;      // the live buffer's current generation
  CpuStats total;     // since the tracer started (all generations)
};

struct StatReply {
  uint32_t page_size = 0;
  uint32_t pages_per_cpu = 0;
  uint32_t mode = 0;  // rbtrace::Mode
  uint64_t snapshots = 0;
  uint64_t no_slot_dropped = 0;  // events refused for want of a CPU slot (whole ring)
  std::vector<StatCpu> cpus;
};

struct SnapshotReplyCpu {
  uint32_t cpu = 0;
  int32_t swap_result = 0;
  uint32_t pages = 0;
  int32_t owner = 0;  // the CPU's owner tid when the snapshot ended (0 none)
  uint64_t bytes = 0;
  uint64_t swap_ns = 0;
};

struct SnapshotReply {
  uint64_t total_ns = 0;
  std::vector<SnapshotReplyCpu> cpus;
};

struct Reply {
  MsgType for_type = MsgType::kStat;  // what the body is (the client knows)
  int32_t status = 0;
  std::string message;
  StatReply stat;          // kStat
  SnapshotReply snapshot;  // kSnapshot
  uint32_t events_changed = 0;  // kEvents
};

// ---- the message codec (pure functions; fuzzed) ----------------------------

// Parses one complete request message (header + payload). 0, or -EPROTO (bad
// magic or type), -EPROTONOSUPPORT (version), -EMSGSIZE (length over the
// limit), -EBADMSG (truncated, trailing bytes, or a bad field); `why` says
// which. Never reads outside [buf, buf+len).
int parse_request(const void* buf, size_t len, Request* out, std::string* why);
// Parses just the 16-byte header: fills *type and *length. Same errors.
int parse_header(const void* buf, size_t len, uint32_t max_payload, uint16_t* type,
                 uint32_t* length, std::string* why);
std::vector<uint8_t> encode_request(const Request& r);
// Parses a reply message to a request of type `for_type`. Same errors.
int parse_reply(const void* buf, size_t len, MsgType for_type, Reply* out, std::string* why);
std::vector<uint8_t> encode_reply(const Reply& r);

// ---- directory and sockets ---------------------------------------------------

// The control directory for this user (see the top of this file).
std::string default_dir();
// Checks (and with `create`, first creates with mode 0700) `dir`: a real
// directory, owned by the effective uid, no group/other bits. Returns an
// open O_DIRECTORY|O_PATH descriptor of the checked directory (use it, not
// the path, from then on), or -errno with *err.
int open_private_dir(const std::string& dir, bool create, std::string* err);

struct ServerOptions {
  std::string dir;  // empty: default_dir()
  std::chrono::milliseconds io_timeout{2000};
};

// Counters of a running server (for tests and `stat`).
struct ServerCounters {
  uint64_t served = 0;     // requests answered with status 0
  uint64_t refused = 0;    // peers with another uid
  uint64_t malformed = 0;  // bad, oversized or truncated messages
  uint64_t failed = 0;     // well-formed requests that failed
};

// The server: one thread, one connection at a time.
class Server {
 public:
  // Starts serving `snap` on <dir>/<pid>.sock. Null with *err on failure
  // (the directory is not private, bind fails, ...). Any thread.
  static std::unique_ptr<Server> start(Snapshot& snap, const ServerOptions& opts,
                                       Error* err = nullptr);
  ~Server();  // stops the thread, removes the socket
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  const std::string& socket_path() const { return path_; }
  ServerCounters counters() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// ---- client ------------------------------------------------------------------

// Connects to process `pid`'s server in `dir` (empty: default_dir()). A
// connected socket, or -errno with *err.
int connect_to(pid_t pid, const std::string& dir, std::string* err);
// Sends `req` (with `pass_fd` attached when >= 0) and reads the reply.
// 0 (then reply->status is the server's answer) or -errno with *err.
int call(int sock, const Request& req, int pass_fd, Reply* reply, std::string* err,
         std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
// Processes of this user with a control socket in `dir` whose process is
// alive (stale sockets are skipped).
std::vector<pid_t> list_processes(const std::string& dir);

}  // namespace control
}  // namespace rbtrace
