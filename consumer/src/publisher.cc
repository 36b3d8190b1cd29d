// publisher.cc - the publish thread: segment -> trace.dat -> atomic publish
// (consumer_impl.h, Publisher). See docs/DESIGN.md, "Consumer", Atomic
// publish, Disk full.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "consumer_impl.h"
#include "rbtrace/event.h"
#include "rbtrace/tracedat.h"
#include "spool.h"

namespace rbtrace::detail {

void Publisher::remove_segment_files(Segment& s) {
  if (s.fd >= 0) close(s.fd);
  s.fd = -1;
  unlink(ctx.seg_path(s.seq, ".meta").c_str());
  unlink(ctx.seg_path(s.seq, ".dat").c_str());
  for (uint32_t c = 0; c < s.cpus.size(); c++) {
    if (s.cpus[c].fd < 0) continue;
    close(s.cpus[c].fd);
    s.cpus[c].fd = -1;
    unlink(ctx.seg_path(s.seq, (".cpu" + std::to_string(c)).c_str()).c_str());
  }
}

// The trace.dat of a segment: each CPU's region up to good_end, where it
// lies in the segment file before compaction.
TraceDatInput Publisher::trace_input(const Segment& s) const {
  TraceDatInput in;
  in.page_size = ctx.page_size;
  in.clock = ctx.clock_name;
  in.tsc2nsec = ctx.tsc2nsec;
  if (ctx.tsc2nsec) in.calibration = counter_calibration();
  in.events = s.events;
  in.cmdlines = s.cmdlines;
  in.pid = ctx.pid;
  in.process = ctx.process;
  // As many CPUs as the ring had made while the segment was open.
  in.cpus.resize(s.cpus.size());
  for (uint32_t c = 0; c < s.cpus.size(); c++) {
    in.cpus[c].fd = s.fd_of(c);
    in.cpus[c].offset = s.file_offset(c, 0);
    in.cpus[c].size = s.cpus[c].good_end;
    in.cpus[c].stats = s.stats[c];
  }
  return in;
}

// Publishing by copying: a new file with the trace (its pages copied from
// the segment file at in.cpus[c].offset), linked under the segment's
// public name (or name.1, name.2... if taken; s.public_name is updated).
// 0 or -errno.
int Publisher::write_and_link(Segment& s, const TraceDatInput& in, std::string* err) {
  const std::string& dir = ctx.opts.dir;
  AtomicFile f;  // abandoned unless published
  const std::string priv = dir + "/tmp/" + ctx.session + "-" + segment_file(s.seq, ".dat");
  int rc = f.open(dir, priv, ctx.publish_how, err, ctx.opts.file_mode);
  if (rc != 0) return rc;
  rc = write_trace_dat(f.fd(), in, err);
  if (rc != 0) return rc;
  std::string name = s.public_name;
  for (int k = 1; k < 100; k++) {
    rc = f.publish(dir + "/" + name, ctx.opts.fsync, err);
    if (rc != -EEXIST) break;
    name = s.public_name + "." + std::to_string(k);
    *err = "public name " + s.public_name + " exists";
  }
  if (rc == 0) s.public_name = name;
  return rc;
}

// Compacts the segment file in place (spool.h): records the plan in the
// sidecar, truncates, collapses the gaps. 0 when done; 1 when the file
// system cannot collapse (nothing moved; *done = 0); -errno otherwise,
// with *done the collapses that ran (the caller copies from there).
int Publisher::compact(Segment& s, const SegmentLayout::Plan& plan, size_t* done,
                       std::string* err) {
  *done = 0;
  SpoolMeta m = s.meta;
  m.final_sizes = plan.sizes;
  m.final_data_start = plan.final_offset.empty() ? 0 : plan.final_offset[0];
  std::string what;
  // Durable before anything moves (with `fsync`): after a power loss the
  // collapses may be on disk, and recover needs the plan to find the pages.
  if (int rc = ctx.write_meta(m, s.seq, &what, ctx.opts.fsync); rc != 0) {
    *err = what + ": " + std::strerror(-rc);
    return rc;
  }
  if (ftruncate(s.fd, static_cast<off_t>(plan.truncate_to)) != 0) {
    const int e = errno;
    *err = "truncate " + ctx.seg_path(s.seq, ".dat") + ": " + std::strerror(e);
    return -e;
  }
  for (const SegmentLayout::Collapse& c : plan.steps) {
    if (fallocate(s.fd, FALLOC_FL_COLLAPSE_RANGE, static_cast<off_t>(c.off),
                  static_cast<off_t>(c.len)) != 0) {
      const int e = errno;
      if (*done == 0 && (e == EOPNOTSUPP || e == EINVAL || e == ENOSYS)) return 1;
      *err = "compact " + ctx.seg_path(s.seq, ".dat") + " (collapse " + std::to_string(c.len) +
             " bytes at " + std::to_string(c.off) + "): " + std::strerror(e);
      return -e;
    }
    ++*done;
  }
  return 0;
}

// Publishing in place: the compacted segment file gets the header in front
// and is linked under the public name (name.1, ... if taken). 0 or -errno.
int Publisher::finish_in_place(Segment& s, TraceDatInput& in, const SegmentLayout::Plan& plan,
                               std::string* err) {
  for (uint32_t c = 0; c < in.cpus.size(); c++) in.cpus[c].offset = plan.final_offset[c];
  int rc = write_trace_dat_header(s.fd, in, err);
  if (rc != 0) return rc;
  const std::string from = ctx.seg_path(s.seq, ".dat");
  if (ctx.opts.fsync && fsync(s.fd) != 0) {
    const int e = errno;
    *err = "fsync " + from + ": " + std::strerror(e);
    return -e;
  }
  const std::string& dir = ctx.opts.dir;
  std::string name = s.public_name;
  for (int k = 1;; k++) {
    // link(2) never follows `from` (ours, in our spool) and never replaces
    // an existing name, a planted link included.
    if (::link(from.c_str(), (dir + "/" + name).c_str()) == 0) break;
    const int e = errno;
    if (e != EEXIST) {
      // EXDEV (the spool on another mount), EPERM, ENOSPC for the name...:
      // the compacted file is a complete trace; publish a copy of it.
      return write_and_link(s, in, err);
    }
    if (k >= 100) {
      *err = "link " + dir + "/" + name + ": " + std::strerror(e);
      return -e;
    }
    name = s.public_name + "." + std::to_string(k);
  }
  s.public_name = name;
  if (ctx.opts.fsync) {
    const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  return 0;
}

// The segment's trace: in place where the file system collapses ranges and
// the header fits its room, else by copying. 0 or -errno.
int Publisher::write_segment(Segment& s, std::string* err) {
  // The rest is written through the page cache (the header is not a page
  // multiple; copy_file_range reads it).
  if (s.per_cpu_files) {
    for (const CpuRun& r : s.cpus)
      if (r.fd >= 0) drop_o_direct(r.fd);
    return write_and_link(s, trace_input(s), err);
  }
  drop_o_direct(s.fd);
  TraceDatInput in = trace_input(s);
  const uint64_t ps = ctx.page_size;
  const uint64_t data_start = (trace_dat_header_size(in) + ps - 1) / ps * ps;
  std::vector<uint64_t> sizes(s.cpus.size());
  for (uint32_t c = 0; c < s.cpus.size(); c++) sizes[c] = s.cpus[c].good_end;
  SegmentLayout::Plan plan;
  size_t done = 0;
  if (compact_ok && s.layout.plan(sizes, data_start, &plan)) {
    const int rc = compact(s, plan, &done, err);
    if (rc == 0) {
      const int r2 = finish_in_place(s, in, plan, err);
      if (r2 == 0) {
        std::lock_guard<std::mutex> g(sh.mu);
        sh.st.segments_in_place++;
      }
      return r2;
    }
    if (rc == 1) {
      compact_ok = false;
      sh.add_note("the file system of " + ctx.opts.dir +
                  " cannot collapse ranges (fallocate): segments are published by copying");
    }
    // Else a collapse failed midway: copy from where the pages are now.
    for (uint32_t c = 0; c < in.cpus.size(); c++) in.cpus[c].offset = plan.offset_after(s.layout, c, done);
  }
  return write_and_link(s, in, err);
}

// A segment that could not be published: what it held is lost; a full
// disk blocks the drain thread for a back-off.
void Publisher::failed(const Segment& s, uint64_t pages, int rc, const std::string& err) {
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.segments_failed++;
    for (uint32_t c = 0; c < s.cpus.size(); c++) {
      sh.st.events_lost[c] += s.cpus[c].good_events;
      sh.st.pages_lost[c] += s.cpus[c].good_end / ctx.page_size;
    }
  }
  const bool full = rc == -ENOSPC || rc == -EFBIG || rc == -EDQUOT;
  if (full) {
    sh.pub_blocked_until.store(
        (SteadyClock::now() + backoff.next()).time_since_epoch().count(),
        std::memory_order_relaxed);
  }
  bool report = true;
  {
    // One message per episode of a full disk, like write failures.
    std::lock_guard<std::mutex> g(sh.mu);
    if (full) {
      report = !sh.episode_reported;
      sh.episode_reported = true;
    }
  }
  if (report)
    ctx.message("rbtrace consumer: could not publish segment " + std::to_string(s.seq) + " (" +
                std::to_string(pages) + " pages lost, counted): " + err +
                (full ? "; further segments are dropped and counted until space is available" : ""));
}

int Publisher::publish(Segment& s) {
  const uint64_t pages = s.good_pages();
  if (pages == 0) {
    remove_segment_files(s);
    return s.error ? -s.error : 0;
  }
  std::string err;
  const int rc = write_segment(s, &err);
  // Published: the spool of this segment is no longer needed (not
  // published: what it held is lost, counted in failed()). A crash before
  // this point leaves the spool, which recover turns into the same public
  // name (and, seeing it exists, only cleans up).
  remove_segment_files(s);
  if (rc != 0) {
    failed(s, pages, rc, err);
    return rc;
  }
  backoff.reset();
  std::lock_guard<std::mutex> g(sh.mu);
  sh.st.segments_published++;
  sh.st.pages_published += pages;
  for (uint32_t c = 0; c < s.cpus.size(); c++) sh.st.events_published[c] += s.cpus[c].good_events;
  sh.published.push_back(ctx.opts.dir + "/" + s.public_name);
  return s.error ? -s.error : 0;
}

void Publisher::run() {
  for (;;) {
    std::unique_ptr<Segment> s;
    {
      std::unique_lock<std::mutex> lk(sh.mu);
      sh.cv.wait(lk, [&] { return !sh.queue.empty() || sh.pub_stop; });
      if (sh.queue.empty()) return;
      s = std::move(sh.queue.front());
      sh.queue.pop_front();
    }
    int rc = 0;
    if (s->seq != 0) rc = publish(*s);
    const uint64_t cpu_ns = thread_cpu_ns();
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.publish_cpu_ns = cpu_ns;
    if (rc && !sh.flush_err) sh.flush_err = rc;
    if (rc == 0 && s->seq != 0 && !s->error) sh.episode_reported = false;
    if (s->flush_gen) {
      sh.flush_done = s->flush_gen;
      sh.flush_result = sh.flush_err;
      sh.flush_err = 0;
      sh.cv.notify_all();
    }
  }
}

}  // namespace rbtrace::detail
