// rbtrace/control.h - the control plane: a server embedded in the
// application (opt-in) and the client side the `rbtrace` CLI uses.
//
// Transport: a Unix stream socket <dir>/<pid>.sock, where <dir> is private
// to the user (mode 0700, owned by the effective uid, not a symlink), chosen
// by choose_dir: $RBTRACE_CONTROL_DIR, else $XDG_RUNTIME_DIR/rbtrace, else
// /run/user/<uid>/rbtrace when the login manager made /run/user/<uid> (ours,
// 0700), else /tmp/rbtrace-<uid>. The server refuses a directory with
// another owner, any group/other permission bit, or a symlink, and says how
// to fix it. Peers are checked with SO_PEERCRED: same effective uid, or
// root. The client finds a process's directory as that process chose it:
// from its uid and its environment in /proc (connect_to), so root reaches
// another user's process.
//
// Protocol (version 3, host byte order: both ends are on one machine;
// version 2 added StatReply::no_slot_dropped and SnapshotReplyCpu::owner;
// version 3 the recording requests, kEventList and `*` patterns):
//   header  u32 magic 'RBTC' | u16 version | u16 type | u32 length | u32 flags (0)
//   payload `length` bytes, at most kMaxRequestPayload for a request and
//           kMaxReplyPayload for a reply; every field is length-checked.
// One request and one reply per connection; the server serves many
// connections at once, each under a deadline and within caps per peer
// process and in all (ServerOptions), and the client bounds its connect and
// the whole exchange (connect_to, call). Requests:
//   kStat      (empty)                      -> CPUs and their counters
//   kSnapshot  i32 cpu (-1 all), u32 timeout_ms, + one fd (SCM_RIGHTS): an
//              empty regular file opened for writing by the client; the
//              server writes a trace.dat into it and never opens a path
//   kEvents    u8 enable, u8 pad, u16 n, n bytes of a pattern (below)
//   kEventList u16 n, n bytes of a pattern (n = 0: every event)
//   kRecordStart  RecordOptions (below), + one fd (SCM_RIGHTS): the output
//              directory, opened by the client with O_DIRECTORY|O_NOFOLLOW;
//              the server checks it (a directory of the server's euid, not
//              writable by group or others, on a real file system) and
//              records into it through the descriptor, never by a path
//   kRecordStop, kRecordFlush, kRecordStatus   (empty)
//   kRecordSwitch u8 on (1: RingBuffer::record_on, 0: record_off), u8 pad[3]
// RecordOptions: u64 segment_bytes, u32 segment_seconds, u32 pool_pages,
//   u32 period_us, u32 watermark_pages, u32 batch_pages, u32 file_mode,
//   u8 backend, u8 publish, u8 fsync, u8 direct_io, u16 n, n bytes prefix;
//   each within the bounds parse_request checks (kRecordLimits).
// A pattern: "system:name" where each part is letters, digits, '_' and
// '*' (any run of characters), or "*" alone (every event; so is "*:*").
// Reply (kReply): i32 status (0 or -errno), u16 n, n bytes message, then a
// body by request type (see StatReply, SnapshotReply, EventList,
// RecordReply).
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
inline constexpr uint16_t kVersion = 3;
inline constexpr uint32_t kHeaderSize = 16;
inline constexpr uint32_t kMaxRequestPayload = 512;
inline constexpr uint32_t kMaxReplyPayload = 1u << 20;
inline constexpr uint32_t kMaxEventName = 256;

enum class MsgType : uint16_t {
  kStat = 1,
  kSnapshot = 2,
  kEvents = 3,
  kEventList = 4,
  kRecordStart = 5,
  kRecordStop = 6,
  kRecordFlush = 7,
  kRecordStatus = 8,
  kRecordSwitch = 9,
  kReply = 0x100,
};

// How a recording started from the CLI is made (kRecordStart): the fields
// of ConsumerOptions (rbtrace/consumer.h) a client may choose; the server
// fills the rest. The defaults are ConsumerOptions' own.
struct RecordOptions {
  uint64_t segment_bytes = 64ULL << 20;  // rotate by size (0: never)
  uint32_t segment_seconds = 0;          // rotate by time (0: never)
  uint32_t pool_pages = 0;               // 0: the consumer's default
  uint32_t period_us = 10000;
  uint32_t watermark_pages = 0;
  uint32_t batch_pages = 64;
  uint32_t file_mode = 0600;             // 0600, 0640 or 0644
  uint8_t backend = 0;                   // rbtrace::IoBackendKind
  uint8_t publish = 0;                   // rbtrace::PublishKind
  bool fsync = true;
  bool direct_io = false;
  std::string prefix = "trace";          // 1..64 of [A-Za-z0-9_-], no leading '-'
};

// The bounds parse_request enforces on RecordOptions (the CLI checks its
// options against the same numbers).
struct RecordLimits {
  static constexpr uint64_t kMinSegmentBytes = 1ULL << 20;  // or 0
  static constexpr uint64_t kMaxSegmentBytes = 1ULL << 40;
  static constexpr uint32_t kMaxSegmentSeconds = 7 * 86400;
  static constexpr uint32_t kMaxPoolPages = 4096;
  static constexpr uint32_t kMinPeriodUs = 100;
  static constexpr uint32_t kMaxPeriodUs = 10000000;
  static constexpr uint32_t kMaxWatermarkPages = 1u << 20;
  static constexpr uint32_t kMaxBatchPages = 4096;
  static constexpr uint32_t kMaxPrefix = 64;
};

struct Request {
  MsgType type = MsgType::kStat;
  int32_t cpu = -1;           // kSnapshot
  uint32_t timeout_ms = 500;  // kSnapshot: per-CPU swap timeout
  bool enable = true;         // kEvents
  std::string event;          // kEvents, kEventList: a pattern ("" for kEventList: all)
  RecordOptions record;       // kRecordStart
  bool on = true;             // kRecordSwitch
};

// True when `pattern` is a valid event pattern (see the protocol above).
bool valid_event_pattern(const std::string& pattern);
// True when event `system`:`name` matches the valid `pattern`.
bool event_matches(const std::string& pattern, const char* system, const char* name);

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

// One event of kEventList's reply: u8 enabled, u8 pad, u16 n, n bytes
// "system:name". The body: u32 count, u8 truncated, u8 pad[3], the events.
struct EventState {
  std::string name;  // "system:name"
  bool enabled = false;
};

// The body of every kRecord* reply: the recording's state after the
// request. u8 active, u8 recording_on, u16 pad, u32 nfiles, u64 x 6 (the
// counters below), u16 n + n bytes note, then nfiles x (u16 n + n bytes).
struct RecordReply {
  bool active = false;        // a recording started by the control server runs
  bool recording_on = true;   // RingBuffer::record_is_on()
  uint64_t pages_published = 0;
  uint64_t segments_published = 0;
  uint64_t segments_failed = 0;
  uint64_t events_published = 0;  // all CPUs
  uint64_t events_lost = 0;       // read, then lost by the consumer (all CPUs)
  uint64_t pages_lost = 0;
  std::string note;               // the consumer's last message, if any
  // Names (in the output directory) of the files this request published
  // (kRecordFlush, kRecordStop) or of all the recording's files
  // (kRecordStatus), oldest first, at most kMaxRecordFiles.
  std::vector<std::string> files;
};
inline constexpr uint32_t kMaxRecordFiles = 4096;
inline constexpr uint32_t kMaxFileName = 255;

struct Reply {
  MsgType for_type = MsgType::kStat;  // what the body is (the client knows)
  int32_t status = 0;
  std::string message;
  StatReply stat;          // kStat
  SnapshotReply snapshot;  // kSnapshot
  uint32_t events_changed = 0;  // kEvents
  std::vector<EventState> events;  // kEventList
  bool events_truncated = false;   // kEventList: more than the reply holds
  RecordReply record;              // kRecord*
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

// Where a control directory comes from (choose_dir).
enum class DirSource : uint8_t {
  kControlDirEnv,  // $RBTRACE_CONTROL_DIR
  kRuntimeDirEnv,  // $XDG_RUNTIME_DIR/rbtrace
  kRunUser,        // <run_user>/<uid>/rbtrace (XDG_RUNTIME_DIR unset)
  kTmp,            // <tmp>/rbtrace-<uid>
};

struct DirChoice {
  std::string dir;
  DirSource source = DirSource::kTmp;
};

// Where the defaults live (tests pass directories of their own).
struct DirBases {
  std::string run_user = "/run/user";
  std::string tmp = "/tmp";
};

// The one rule that places a control directory, used by the server (for
// itself) and by the client (for the process it addresses), so the two
// cannot disagree. `control_dir` and `runtime_dir` are the values of
// RBTRACE_CONTROL_DIR and XDG_RUNTIME_DIR (empty: unset), `uid` the
// process's effective uid:
//   control_dir                      when set, else
//   runtime_dir + "/rbtrace"         when set, else
//   <run_user>/<uid>/rbtrace         when <run_user>/<uid> is a directory
//                                    (not a symlink) owned by `uid` with
//                                    mode 0700: systemd-logind's runtime
//                                    directory, which another user cannot
//                                    make before us, else
//   <tmp>/rbtrace-<uid>              (which another user can: then it is
//                                    refused, and the error says so).
DirChoice choose_dir(const std::string& control_dir, const std::string& runtime_dir, uid_t uid,
                     const DirBases& bases = DirBases());
// The control directory for this process: choose_dir with our environment
// and effective uid.
std::string default_dir();
// Checks (and with `create`, first creates with mode 0700) `dir`: a real
// directory, not a symlink, owned by the effective uid, no group/other
// bits. Returns an open O_PATH descriptor of the checked directory (use it,
// not the path, from then on), or -errno with *err: EPERM when refused,
// naming the directory, what is wrong with it (its owner, its mode, or
// that it is a symbolic link and whose) and how to fix it.
int open_private_dir(const std::string& dir, bool create, std::string* err);

struct ServerOptions {
  std::string dir;  // empty: default_dir()
  // The deadline of one connection: from its accept to its whole request
  // read, and again from its reply being ready to the reply sent. A
  // connection that misses it is closed (answered -ETIMEDOUT when it was
  // still sending) and counted in timed_out. One deadline per request, not
  // per read: a client trickling a byte at a time gets no longer.
  std::chrono::milliseconds io_timeout{2000};
  // Connections open at once, in all (at least 1) and per peer process (its
  // pid from SO_PEERCRED; at least 1). One beyond either is answered
  // -EBUSY and closed at accept, and counted in over_cap.
  uint32_t max_connections = 64;
  uint32_t max_per_peer = 4;
  // Whether clients may start a recording (kRecordStart: an
  // rbtrace::Consumer on the snapshot's live ring). An application that
  // runs a Consumer of its own on that ring sets false (one Consumer per
  // ring): then record start is refused with -EPERM and says why; the
  // other record requests (on/off, status) still work.
  bool allow_recording = true;
  // A recording's ConsumerOptions::stop_timeout_ms (record stop, and the
  // Server's destruction, which stops a recording still running).
  std::chrono::milliseconds record_stop_timeout{20000};
};

// Counters of a running server (for tests and `stat`).
struct ServerCounters {
  uint64_t served = 0;     // requests answered with status 0
  uint64_t refused = 0;    // peers with another uid
  uint64_t malformed = 0;  // bad, oversized or truncated messages
  uint64_t failed = 0;     // well-formed requests that failed
  uint64_t timed_out = 0;  // connections closed at their deadline (request or reply)
  uint64_t over_cap = 0;   // connections refused at accept: over max_per_peer or max_connections
};

// The server: one thread serving every open connection at once (a poll
// loop; each request read and each reply written in pieces, as they come,
// under its deadline). Complete requests are executed one at a time, in
// the server thread: a snapshot holds the others while it runs, a slow
// client never does.
//
// One server per socket path: a second start() for <dir>/<pid>.sock, in
// this process or in another live one (another pid namespace sharing the
// directory), fails with EADDRINUSE. A socket nobody listens on (left by a
// dead process with our pid) is replaced.
class Server {
 public:
  // Starts serving `snap` on <dir>/<pid>.sock. Null with *err on failure
  // (the directory is not private, a server already serves the path, bind
  // fails, ...). Any thread.
  static std::unique_ptr<Server> start(Snapshot& snap, const ServerOptions& opts,
                                       Error* err = nullptr);
  ~Server();  // stops the thread, removes the socket and its lock file
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

// <dir>/<pid>.sock (dir empty: default_dir()), for messages.
std::string socket_path(pid_t pid, const std::string& dir);
// Connects to process `pid`'s server, waiting at most `timeout` for room in
// its queue. A connected socket, or -errno with *err naming the process,
// the socket and, for -ETIMEDOUT, the timeout; *path (when given) is the
// socket it connected to (or failed to).
//
// `dir` given (or, when it is empty, $RBTRACE_CONTROL_DIR set in our own
// environment): that directory, which must be owned by our effective uid,
// or (when we are root) by the process's.
// Else the process's directory as it chose it: its effective uid from
// /proc/<pid>/status, and choose_dir with its RBTRACE_CONTROL_DIR and
// XDG_RUNTIME_DIR from /proc/<pid>/environ (the environment it was started
// with; readable by its user and root), else with none; with our own
// environment too when it is our uid (what the client did before); then
// <tmp>/rbtrace-<uid> after <run_user>/<uid>/rbtrace (a server started
// before the runtime directory appeared). Each is opened without following
// a symlink and must be owned by the process's uid with no group/other
// bits: root never goes through a directory another user made. When it is
// not ours, the server behind the socket must run as that uid
// (SO_PEERCRED). Another non-root user's process is refused at once (its
// server would refuse us). No /proc/<pid>: default_dir(), as before.
int connect_to(pid_t pid, const std::string& dir, std::string* err,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(2000),
               std::string* path = nullptr);
// Sends `req` (with `pass_fd` attached when >= 0) and reads the reply, all
// within `timeout` (one deadline for the whole exchange, not per read).
// 0 (then reply->status is the server's answer) or -errno with *err
// (-ETIMEDOUT: the deadline passed).
int call(int sock, const Request& req, int pass_fd, Reply* reply, std::string* err,
         std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
// Processes of this user with a control socket in `dir` whose process is
// alive (stale sockets are skipped).
std::vector<pid_t> list_processes(const std::string& dir);

}  // namespace control
}  // namespace rbtrace
