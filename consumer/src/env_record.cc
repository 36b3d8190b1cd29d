// record_from_env: a recording of the process ring started by the
// environment (rbtrace/consumer.h; rbtrace::autostart calls it before main).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "rbtrace/consumer.h"
#include "rbtrace/tracer.h"

namespace rbtrace {

namespace {

// The recording record_from_env started: never destroyed (its stop runs at
// exit; a thread still writing then writes into the process ring, which
// stays). Set once, under the `started` flag.
Consumer* g_env_consumer = nullptr;
pid_t g_env_pid = 0;
std::atomic<bool> g_env_started{false};

void stop_env_recording() {
  // A forked child inherits the pointer but not the consumer's threads:
  // only the process that started the recording stops it.
  if (g_env_consumer == nullptr || getpid() != g_env_pid) return;
  const int rc = g_env_consumer->stop();
  if (rc != 0)
    std::fprintf(stderr, "rbtrace: RBTRACE_RECORD: stopping the recording: %s\n",
                 rc == -ETIMEDOUT ? "timed out (the spool is left for `rbtrace recover`)"
                                  : "the last segment failed (see the message above)");
}

}  // namespace

int consumer_options_from_env(ConsumerOptions* opts, std::string* why) {
  ConsumerOptions o = *opts;
  uint64_t v = 0;
  if (const char* s = std::getenv("RBTRACE_RECORD")) o.dir = s;
  if (const char* s = std::getenv("RBTRACE_SEGMENT_MB")) {
    if (!detail::parse_env_number(s, 0, 1u << 20, 10, &v))
      return detail::bad_env(why, "RBTRACE_SEGMENT_MB", s, "a segment size in MiB, 0 (never rotate)..1048576");
    o.segment_bytes = v << 20;
  }
  if (const char* s = std::getenv("RBTRACE_SEGMENT_SECONDS")) {
    if (!detail::parse_env_number(s, 0, UINT32_MAX, 10, &v))
      return detail::bad_env(why, "RBTRACE_SEGMENT_SECONDS", s, "seconds, 0 (never rotate by time) or more");
    o.segment_seconds = static_cast<uint32_t>(v);
  }
  if (const char* s = std::getenv("RBTRACE_FILE_MODE")) {
    if (!detail::parse_env_number(s, 0, 0777, 8, &v) || (v & 0400) == 0)
      return detail::bad_env(why, "RBTRACE_FILE_MODE", s, "an octal mode the owner can read, e.g. 0600, 0640");
    o.file_mode = static_cast<unsigned>(v);
  }
  // Checked by Consumer::create, with the options it checks.
  if (const char* s = std::getenv("RBTRACE_PREFIX")) o.prefix = s;
  *opts = o;
  return 0;
}

int record_from_env(std::string* why) {
  const char* dir = std::getenv("RBTRACE_RECORD");
  if (dir == nullptr || *dir == '\0') return 0;
  // acq_rel: one caller wins; it alone sets g_env_consumer (read by the
  // atexit handler, registered by that same caller after the store).
  if (g_env_started.exchange(true, std::memory_order_acq_rel)) {
    if (why) *why = "a recording started by RBTRACE_RECORD is running already";
    return -EALREADY;
  }
  auto fail = [](int rc) {
    // Nothing started: a later call may try again. release: pairs with
    // the acquire of that call's exchange.
    g_env_started.store(false, std::memory_order_release);
    return rc;
  };
  ConsumerOptions copts;
  if (int rc = consumer_options_from_env(&copts, why); rc != 0) return fail(rc);
  Error err;
  // A recording's defaults, not a flight recorder's: the newest event is
  // dropped (and counted) when the ring is full rather than the oldest
  // page overwritten, and 256 pages per CPU (1 MiB at 4 KiB) give the
  // drain thread's 10 ms period room. RBTRACE_MODE / RBTRACE_PAGES override.
  Options defaults;
  defaults.mode = Mode::kProducerConsumer;
  defaults.pages_per_cpu = 256;
  RingBuffer* rb = tracer::init_from_env(defaults, &err);
  if (rb == nullptr) {
    if (why) *why = "the process ring: " + err.message;
    return fail(-err.code);
  }
  std::unique_ptr<Consumer> c = Consumer::create(*rb, copts, &err);
  if (!c) {
    if (why) *why = "recording to " + copts.dir + ": " + err.message;
    return fail(-err.code);
  }
  g_env_pid = getpid();
  g_env_consumer = c.release();
  std::atexit(stop_env_recording);
  return 1;
}

}  // namespace rbtrace
