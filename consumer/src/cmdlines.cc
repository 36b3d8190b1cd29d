// cmdlines.cc - the tid -> comm map of the drain thread (cmdlines.h).
#include "cmdlines.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>

#include "spool.h"

namespace rbtrace::detail {

namespace {

std::string thread_comm(int32_t tid) {
  std::string s;
  if (read_small_file("/proc/self/task/" + std::to_string(tid) + "/comm", 256, &s) != 0)
    return {};
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  for (char& c : s)
    if (c == '\n' || c == ' ') c = '_';
  return s;
}

}  // namespace

void Cmdlines::scan_if_due() {
  read_claimed();
  if (std::chrono::steady_clock::now() - last_scan_ > std::chrono::milliseconds(100))
    scan_threads();
}

void Cmdlines::read_claimed() {
  if (!rb) return;
  std::vector<RingBuffer::ThreadName> v;
  {
    std::unique_lock<std::mutex> g;
    if (ring_mu) g = std::unique_lock<std::mutex>(*ring_mu);
    if (ring_gone && *ring_gone) return;
    (void)rb->read_thread_names(&name_cursor_, &v);  // a lost one falls back to /proc
  }
  for (const RingBuffer::ThreadName& t : v) {
    std::string c(t.comm);
    for (char& ch : c)
      if (ch == '\n' || ch == ' ') ch = '_';
    if (!c.empty()) claimed_[t.tid] = std::move(c);
  }
}

void Cmdlines::scan_threads() {
  last_scan_ = std::chrono::steady_clock::now();
  DIR* d = opendir("/proc/self/task");
  if (!d) return;
  std::vector<int32_t> tids;
  while (dirent* e = readdir(d)) {
    const int32_t tid = std::atoi(e->d_name);
    if (tid > 0) tids.push_back(tid);
  }
  // Names change (threads name themselves after they start): re-read
  // every thread's, unless there are very many; then only new ones.
  const bool refresh = tids.size() <= 256;
  for (int32_t tid : tids) {
    if (!refresh && names_.count(tid)) continue;
    std::string c = thread_comm(tid);
    if (!c.empty()) names_[tid] = std::move(c);
  }
  closedir(d);
}

void Cmdlines::note(std::vector<int32_t>* tids) {
  bool read = false;
  for (int32_t t : *tids) {
    if (comms_.count(t)) continue;
    if (!read) {
      read_claimed();  // names of claims since the last look
      read = true;
    }
    std::string c = thread_comm(t);
    if (c.empty()) {
      if (auto it = claimed_.find(t); it != claimed_.end()) {
        c = it->second;
      } else {
        auto n = names_.find(t);
        c = n != names_.end() ? n->second : "<...>";
      }
    }
    comms_.emplace(t, c);
    if (fd >= 0) {
      const std::string line = std::to_string(t) + " " + c + "\n";
      (void)!write(fd, line.data(), line.size());
    }
  }
  tids->clear();
}

}  // namespace rbtrace::detail
