// ring_tracedat.h - a trace.dat made from a RingBuffer's pages, for tests
// that read back what they emitted (link rbtrace::tracedat).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "rbtrace/ring_buffer.h"
#include "rbtrace/tracedat.h"

namespace rbtrace_test {

// What every such file has: the ring's page size and clock (TSC2NSEC with
// the counter's calibration when the clock is the counter) and the
// registered event formats, this process as the traced one. Cmdlines,
// more formats and the CPUs are the caller's.
inline rbtrace::TraceDatInput tracedat_input_for(rbtrace::RingBuffer& rb) {
  rbtrace::TraceDatInput in;
  in.page_size = rb.page_size();
  in.clock = rb.clock().trace_clock_name();
  in.tsc2nsec = rb.clock().kind() == rbtrace::ClockKind::kCounter;
  if (in.tsc2nsec) in.calibration = rbtrace::counter_calibration();
  in.events = rbtrace::registered_event_formats();
  // The process, as the consumer and the snapshot name it: every test file
  // carries the PROCMAPS option trace-cmd and babeltrace2 must take.
  in.pid = static_cast<int32_t>(getpid());
  in.process = "rbtrace-test";
  return in;
}

// Every page of every CPU of `rb` (read_page, partial pages too; on_page
// sees each, with its CPU) into an unlinked file per CPU under `dir`, then
// `dir`/trace.dat from `in` (tracedat_input_for and the caller's additions)
// with each CPU's stats. Returns the path; a test failure on an error.
inline std::string ring_to_tracedat(
    rbtrace::RingBuffer& rb, const std::string& dir, rbtrace::TraceDatInput in,
    const std::function<void(uint32_t, const rbtrace::DataPage*)>& on_page = {}) {
  std::vector<int> fds;
  const uint32_t page_size = rb.page_size();
  for (uint32_t c = 0; c < rb.ncpus(); c++) {
    const std::string p = dir + "/cpu" + std::to_string(c) + ".pages";
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << p;
    ::unlink(p.c_str());
    fds.push_back(fd);
    rbtrace::DataPage* page = rb.alloc_read_page();
    uint64_t size = 0;
    while (rb.read_page(&page, c, false) > 0) {
      if (on_page) on_page(c, page);
      EXPECT_EQ(::write(fd, page, page_size), static_cast<ssize_t>(page_size));
      size += page_size;
    }
    rb.free_read_page(page);
    in.cpus.push_back({fd, 0, size, rbtrace::cpu_stats_text(rb.stats(c))});
  }
  const std::string file = dir + "/trace.dat";
  const int ofd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::string err;
  EXPECT_EQ(rbtrace::write_trace_dat(ofd, in, &err), 0) << err;
  ::close(ofd);
  for (int fd : fds) ::close(fd);
  return file;
}

}  // namespace rbtrace_test
