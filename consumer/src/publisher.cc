// publisher.cc - the publish thread: segment -> trace.dat -> atomic publish
// (consumer_impl.h, Publisher). See docs/DESIGN.md, "Consumer", Atomic
// publish, Disk full.
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "consumer_impl.h"
#include "rbtrace/event.h"
#include "rbtrace/tracedat.h"
#include "spool.h"

namespace rbtrace::detail {

void Publisher::remove_segment_files(const Segment& s) {
  unlink(ctx.seg_path(s.seq, ".meta").c_str());
  for (uint32_t c = 0; c < s.cpus.size(); c++) {
    if (s.cpus[c].fd >= 0) {
      close(s.cpus[c].fd);
      unlink(ctx.seg_path(s.seq, (".cpu" + std::to_string(c)).c_str()).c_str());
    }
  }
}

// The trace.dat of a segment: its CPU files up to good_end.
TraceDatInput Publisher::trace_input(const Segment& s) const {
  TraceDatInput in;
  in.page_size = ctx.page_size;
  in.clock = ctx.clock_name;
  in.tsc2nsec = ctx.tsc2nsec;
  if (ctx.tsc2nsec) in.calibration = counter_calibration();
  in.events = s.events;
  in.cmdlines = s.cmdlines;
  // As many CPUs as the ring had made while the segment was open.
  in.cpus.resize(s.cpus.size());
  for (uint32_t c = 0; c < s.cpus.size(); c++) {
    in.cpus[c].fd = s.cpus[c].fd;
    in.cpus[c].offset = 0;
    in.cpus[c].size = s.cpus[c].good_end;
    in.cpus[c].stats = s.stats[c];
  }
  return in;
}

// Writes the trace and links it under the segment's public name (or
// name.1, name.2... if taken; s.public_name is updated). 0 or -errno.
int Publisher::write_and_link(Segment& s, std::string* err) {
  const std::string& dir = ctx.opts.dir;
  AtomicFile f;  // abandoned unless published
  const std::string priv = dir + "/tmp/" + ctx.session + "-" + segment_file(s.seq, ".dat");
  int rc = f.open(dir, priv, ctx.publish_how, err, ctx.opts.file_mode);
  if (rc != 0) return rc;
  rc = write_trace_dat(f.fd(), trace_input(s), err);
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
  const int rc = write_and_link(s, &err);
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
