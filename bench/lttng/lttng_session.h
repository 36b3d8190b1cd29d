// lttng_session.h - the LTTng session of the peer benchmark, driven with the
// lttng command-line tool: started before the run, destroyed after it.
#pragma once

#include <string>

namespace rbtrace::bench {

// Creates a snapshot (flight-recorder) session with one per-CPU, per-UID
// channel in overwrite mode with the rbtrace writer rings' geometry (8
// sub-buffers of 4 KiB), enables rbtrace_bench:rec16 in it and starts it,
// starting lttng-sessiond --daemonize first if none answers (and stopping
// that daemon again at the end). Nothing is written to disk: like the
// rbtrace overwrite rings, the buffers just wrap.
//
// Set RBTRACE_BENCH_LTTNG_SESSION=0 to manage the session yourself (the
// benchmark then only checks that the tracepoint is enabled).
class LttngSession {
 public:
  LttngSession() = default;
  ~LttngSession() { stop(); }
  LttngSession(const LttngSession&) = delete;
  LttngSession& operator=(const LttngSession&) = delete;

  // Starts the session when the benchmark filter selects BM_Peer_LttngUst.
  // Never fails the run: on a problem it prints why and BM_Peer_LttngUst
  // reports it (SkipWithError).
  void start_if_selected();
  void stop();
  // One line for the JSON context: "active ...", "not selected", or why not.
  const std::string& status() const { return status_; }

 private:
  std::string name_;
  std::string status_ = "not started";
  bool created_ = false;
  int sessiond_pid_ = 0;  // the daemon this harness started, if any
};

// Why BM_Peer_LttngUst cannot run, or empty when the tracepoint is enabled.
std::string lttng_unavailable_reason();

}  // namespace rbtrace::bench
