// bench_io.h - what the consumer and snapshot benchmarks of rbtrace-bench
// share: the directories they write to, the sizes they use, and the smoke
// switch, all from the environment (read once):
//
//   RBTRACE_BENCH_TMPFS        tmpfs directory (default /dev/shm)
//   RBTRACE_BENCH_DISK         directory on a disk file system (default
//                              /var/tmp); also where BM_Snapshot_TakeDump
//                              writes its trace.dat
//   RBTRACE_BENCH_CONSUMER_MIB ring size of BM_Consumer_Drain (default 48,
//                              4 with RBTRACE_BENCH_SMOKE=1)
//   RBTRACE_BENCH_SMOKE=1      tiny sizes, for a smoke run that only checks
//                              that every benchmark runs (CI): a 4 MiB ring,
//                              BM_Snapshot_TakeDump/1 only
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

namespace rbtrace::bench {

struct IoConfig {
  bool smoke = false;
  std::string tmpfs = "/dev/shm";
  std::string disk = "/var/tmp";
  uint64_t consumer_mib = 48;
};

// The configuration from the environment (read on the first call).
const IoConfig& io_config();

// One private directory under a base directory (RBTRACE_BENCH_TMPFS or
// _DISK), removed with everything in it on destruction. ok() is false when
// the base cannot be used (missing, not writable, less than `need_bytes`
// free), with a sentence in why() that names the variable to set (and
// `room_hint`, when given, as another way out of a lack of space).
class ScratchDir {
 public:
  ScratchDir(const char* env_name, const std::string& base, uint64_t need_bytes,
             const char* room_hint = nullptr);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  const std::string& why() const { return why_; }
  // "<fs type> <base>", e.g. "ext4 /var/tmp": for the benchmark's label.
  const std::string& label() const { return label_; }

 private:
  std::string path_, why_, label_;
};

// The file system type of `path` ("tmpfs", "ext4", ...; "fs 0x..." when
// unknown; "?" when statfs fails).
std::string fs_type(const std::string& path);

// Adds the directories and sizes to the JSON context (main.cc, before the
// run).
void add_io_context();

}  // namespace rbtrace::bench
