// bench_io.cc - directories and sizes of the consumer and snapshot
// benchmarks (see bench_io.h).
#include "bench_io.h"

#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

namespace rbtrace::bench {

namespace {

IoConfig read_config() {
  IoConfig c;
  const char* smoke = std::getenv("RBTRACE_BENCH_SMOKE");
  c.smoke = smoke && *smoke && std::strcmp(smoke, "0") != 0;
  if (c.smoke) c.consumer_mib = 4;
  if (const char* e = std::getenv("RBTRACE_BENCH_TMPFS"); e && *e) c.tmpfs = e;
  if (const char* e = std::getenv("RBTRACE_BENCH_DISK"); e && *e) c.disk = e;
  if (const char* e = std::getenv("RBTRACE_BENCH_CONSUMER_MIB"); e && *e) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(e, &end, 10);
    if (end && *end == 0 && v >= 1 && v <= 4096) {
      c.consumer_mib = v;
    } else {
      std::fprintf(stderr,
                   "rbtrace-bench: RBTRACE_BENCH_CONSUMER_MIB=%s is not a size in MiB "
                   "(1..4096); using %" PRIu64 "\n",
                   e, c.consumer_mib);
    }
  }
  return c;
}

}  // namespace

const IoConfig& io_config() {
  static const IoConfig c = read_config();
  return c;
}

std::string fs_type(const std::string& path) {
  struct statfs s {};
  if (statfs(path.c_str(), &s) != 0) return "?";
  const auto t = static_cast<unsigned long>(s.f_type);
  struct Known {
    unsigned long magic;
    const char* name;
  };
  static constexpr Known kKnown[] = {
      {TMPFS_MAGIC, "tmpfs"},          {EXT4_SUPER_MAGIC, "ext4"},
      {XFS_SUPER_MAGIC, "xfs"},        {BTRFS_SUPER_MAGIC, "btrfs"},
      {OVERLAYFS_SUPER_MAGIC, "overlay"}, {NFS_SUPER_MAGIC, "nfs"},
      {RAMFS_MAGIC, "ramfs"},          {0x65735546UL, "fuse"},
      {0x01021997UL, "9p"},            {0x2fc12fc1UL, "zfs"},
  };
  for (const Known& k : kKnown) {
    if (k.magic == t) return k.name;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "fs 0x%lx", t);
  return buf;
}

ScratchDir::ScratchDir(const char* env_name, const std::string& base, uint64_t need_bytes,
                       const char* room_hint) {
  label_ = fs_type(base) + " " + base;
  struct statvfs v {};
  if (statvfs(base.c_str(), &v) != 0) {
    why_ = std::string(env_name) + "=" + base + ": " + std::strerror(errno) + "; set " +
           env_name + " to a usable directory";
    return;
  }
  const uint64_t avail = static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
  if (avail < need_bytes) {
    char buf[160];
    std::snprintf(buf, sizeof buf, ": %.0f MiB free, the benchmark needs %.0f MiB",
                  static_cast<double>(avail) / 1048576.0,
                  static_cast<double>(need_bytes) / 1048576.0);
    why_ = std::string(env_name) + "=" + base + buf + "; set " + env_name +
           " to a directory with room" + (room_hint ? std::string(" ") + room_hint : "");
    return;
  }
  std::string templ = base + "/rbtrace-bench-XXXXXX";
  std::vector<char> t(templ.begin(), templ.end());
  t.push_back(0);
  if (!mkdtemp(t.data())) {
    why_ = std::string(env_name) + "=" + base + ": cannot create a directory there (" +
           std::strerror(errno) + "); set " + env_name + " to a writable directory";
    return;
  }
  path_ = t.data();
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) std::fprintf(stderr, "rbtrace-bench: cannot remove %s: %s\n", path_.c_str(), ec.message().c_str());
}

void add_io_context() {
  const IoConfig& c = io_config();
  benchmark::AddCustomContext("bench_tmpfs_dir", c.tmpfs + " (" + fs_type(c.tmpfs) + ")");
  benchmark::AddCustomContext("bench_disk_dir", c.disk + " (" + fs_type(c.disk) + ")");
  benchmark::AddCustomContext("bench_consumer_ring_mib", std::to_string(c.consumer_mib));
  benchmark::AddCustomContext("bench_smoke", c.smoke ? "1" : "0");
}

}  // namespace rbtrace::bench
