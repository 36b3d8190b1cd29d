// io_backend.cc - io_uring (liburing) and pwritev backends; see io_backend.h.
#include "io_backend.h"

#include <liburing.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace rbtrace::detail {

namespace {

// ---------------------------------------------------------------------------
// io_uring
// ---------------------------------------------------------------------------
class UringBackend final : public IoBackend {
 public:
  explicit UringBackend(const IoBackendOptions& o)
      : async_(o.async),
        max_run_(std::clamp<uint32_t>(o.max_run ? o.max_run : IOV_MAX, 1, IOV_MAX)) {}
  ~UringBackend() override {
    if (ready_) io_uring_queue_exit(&ring_);
  }

  int init(const IoBackendOptions& o) {
    uint32_t entries = 8;
    while (entries < o.depth && entries < 4096) entries <<= 1;
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    int rc = io_uring_queue_init_params(entries, &ring_, &p);
    if (rc < 0) return rc;
    ready_ = true;
    if (!(p.features & IORING_FEAT_NODROP)) {
      // Without NODROP a full CQ loses completions, and with them pages of
      // the pool. The caller bounds writes in flight to the SQ size and the
      // CQ is twice that, but be strict: refuse such old kernels.
      return -ENOTSUP;
    }
    return 0;
  }

  IoKind kind() const override { return IoKind::kIoUring; }
  void disable_fixed() override { index_.clear(); }

  uint32_t register_buffers(const std::vector<void*>& bufs, uint32_t len,
                            std::string* why) override {
    if (bufs.empty()) return 0;
    std::vector<iovec> iov(bufs.size());
    for (size_t i = 0; i < bufs.size(); i++) iov[i] = {bufs[i], len};
    int rc = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
    if (rc < 0) {
      if (why)
        *why = std::string("io_uring_register_buffers(") + std::to_string(bufs.size()) +
               " buffers): " + std::strerror(-rc) + "; using non-fixed writes";
      return 0;
    }
    buf_len_ = len;
    index_.reserve(bufs.size());
    for (size_t i = 0; i < bufs.size(); i++)
      index_.emplace_back(reinterpret_cast<uintptr_t>(bufs[i]), static_cast<uint32_t>(i));
    std::sort(index_.begin(), index_.end());
    return static_cast<uint32_t>(bufs.size());
  }

  void prep_write(int fd, const void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    // The run being built (pages of one file at consecutive offsets) is
    // held; a page that does not extend it ends it.
    if (!pending_.empty()) {
      const Page& last = pending_.back();
      if (fd != last.fd || off != last.off + last.len || pending_.size() >= max_run_) emit_run();
    }
    pending_.push_back({fd, buf, len, off, tag});
    in_flight_++;
  }

  int submit() override {
    emit_run();
    for (;;) {
      int rc = io_uring_submit(&ring_);
      if (rc >= 0) return 0;
      if (rc == -EINTR) continue;
      return rc;  // the entries stay queued; a later submit retries them
    }
  }

  size_t reap(std::vector<IoCompletion>* out, int64_t wait_ns) override {
    size_t n = 0;
    for (const IoCompletion& c : failed_) {
      out->push_back(c);
      n++;
    }
    in_flight_ -= static_cast<uint32_t>(failed_.size());
    failed_.clear();
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) break;
      n += deliver(io_uring_cqe_get_data64(cqe), cqe->res, out);
      io_uring_cqe_seen(&ring_, cqe);
    }
    if (n == 0 && wait_ns > 0 && in_flight_ > pending_.size()) {
      __kernel_timespec ts;
      ts.tv_sec = wait_ns / 1000000000;
      ts.tv_nsec = wait_ns % 1000000000;
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe_timeout(&ring_, &cqe, &ts) == 0 && cqe != nullptr) {
        n += deliver(io_uring_cqe_get_data64(cqe), cqe->res, out);
        io_uring_cqe_seen(&ring_, cqe);
        return n + reap(out, 0);
      }
    }
    return n;
  }

  uint32_t in_flight() const override { return in_flight_; }
  uint64_t fixed_writes() const override { return fixed_; }
  uint64_t requests() const override { return requests_; }

 private:
  // A completion: one page (tag), or a group of pages written by one
  // WRITEV (user_data = kGroupBit | group slot). Returns pages delivered.
  static constexpr uint64_t kGroupBit = 1ULL << 63;
  struct Page {
    int fd;
    const void* buf;
    uint32_t len;
    uint64_t off;
    uint64_t tag;
  };
  struct Group {
    std::vector<iovec> iov;
    std::vector<Page> pages;
  };

  size_t deliver(uint64_t data, int64_t res, std::vector<IoCompletion>* out) {
    if (!(data & kGroupBit)) {
      out->push_back({data, res});
      in_flight_--;
      return 1;
    }
    const size_t slot = static_cast<size_t>(data & ~kGroupBit);
    Group& g = *groups_[slot];
    // Pages fully covered by res are complete; a page cut short reports
    // the bytes it got (the caller finishes or fails it), the pages after
    // it 0; with an error every page gets the error.
    int64_t left = res;
    for (const Page& p : g.pages) {
      int64_t r;
      if (res < 0) r = res;
      else if (left >= p.len) r = p.len;
      else r = left > 0 ? left : 0;
      if (left > 0) left -= std::min<int64_t>(left, p.len);
      out->push_back({p.tag, r});
      in_flight_--;
    }
    const size_t n = g.pages.size();
    g.iov.clear();
    g.pages.clear();
    free_groups_.push_back(slot);
    return n;
  }

  // A free SQE, pushing the SQ to the kernel when it is full; nullptr when
  // even that fails (*err: why).
  io_uring_sqe* get_sqe(int* err) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      int rc = io_uring_submit(&ring_);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        *err = rc;
        return nullptr;
      }
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  // One SQE for one page: WRITE_FIXED when the page is registered.
  void prep_one(const Page& p) {
    int err = -EIO;
    io_uring_sqe* sqe = get_sqe(&err);
    if (sqe == nullptr) {
      failed_.push_back({p.tag, err});
      return;
    }
    const int idx = find_fixed(p.buf, p.len);
    if (idx >= 0) {
      io_uring_prep_write_fixed(sqe, p.fd, p.buf, p.len, p.off, idx);
      fixed_++;
    } else {
      io_uring_prep_write(sqe, p.fd, p.buf, p.len, p.off);
    }
    if (async_) sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data64(sqe, p.tag);
    requests_++;
  }

  // The run held becomes one request: one WRITEV (non-fixed: a fixed-buffer
  // write names one buffer), or for a lone page one write, WRITE_FIXED when
  // registered.
  void emit_run() {
    if (pending_.empty()) return;
    if (pending_.size() == 1) {
      prep_one(pending_[0]);
      pending_.clear();
      return;
    }
    size_t slot;
    if (!free_groups_.empty()) {
      slot = free_groups_.back();
      free_groups_.pop_back();
    } else {
      slot = groups_.size();
      groups_.push_back(std::make_unique<Group>());
    }
    Group& g = *groups_[slot];
    g.pages.swap(pending_);  // pending_ takes the group's (empty) vector
    for (const Page& p : g.pages) g.iov.push_back({const_cast<void*>(p.buf), p.len});
    int err = -EIO;
    io_uring_sqe* sqe = get_sqe(&err);
    if (sqe == nullptr) {
      for (const Page& p : g.pages) failed_.push_back({p.tag, err});
      g.iov.clear();
      g.pages.clear();
      free_groups_.push_back(slot);
      return;
    }
    io_uring_prep_writev(sqe, g.pages[0].fd, g.iov.data(), static_cast<unsigned>(g.iov.size()),
                         g.pages[0].off);
    if (async_) sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data64(sqe, kGroupBit | slot);
    requests_++;
  }

  int find_fixed(const void* buf, uint32_t len) const {
    if (index_.empty()) return -1;
    const uintptr_t a = reinterpret_cast<uintptr_t>(buf);
    auto it = std::upper_bound(index_.begin(), index_.end(),
                               std::make_pair(a, UINT32_MAX));
    if (it == index_.begin()) return -1;
    --it;
    if (a - it->first + len > buf_len_) return -1;
    return static_cast<int>(it->second);
  }

  io_uring ring_{};
  const bool async_;
  const uint32_t max_run_;
  std::vector<Page> pending_;  // the run being built
  std::vector<std::unique_ptr<Group>> groups_;  // stable addresses: iovecs in flight
  std::vector<size_t> free_groups_;
  bool ready_ = false;
  uint32_t in_flight_ = 0;
  uint32_t buf_len_ = 0;
  uint64_t fixed_ = 0;
  uint64_t requests_ = 0;
  std::vector<std::pair<uintptr_t, uint32_t>> index_;  // (address, buffer index)
  std::vector<IoCompletion> failed_;
};

// ---------------------------------------------------------------------------
// pwritev
// ---------------------------------------------------------------------------
class PwritevBackend final : public IoBackend {
 public:
  IoKind kind() const override { return IoKind::kPwritev; }
  uint32_t register_buffers(const std::vector<void*>&, uint32_t, std::string*) override {
    return 0;
  }
  void prep_write(int fd, const void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    queue_.push_back({fd, buf, len, off, tag});
  }

  int submit() override {
    size_t i = 0;
    while (i < queue_.size()) {
      // A run: same file, consecutive offsets, at most IOV_MAX pages.
      size_t j = i + 1;
      while (j < queue_.size() && j - i < IOV_MAX && queue_[j].fd == queue_[i].fd &&
             queue_[j].off == queue_[j - 1].off + queue_[j - 1].len)
        j++;
      write_run(i, j);
      i = j;
    }
    queue_.clear();
    return 0;
  }

  size_t reap(std::vector<IoCompletion>* out, int64_t) override {
    size_t n = done_.size();
    out->insert(out->end(), done_.begin(), done_.end());
    done_.clear();
    return n;
  }
  uint32_t in_flight() const override {
    return static_cast<uint32_t>(queue_.size() + done_.size());
  }
  uint64_t requests() const override { return requests_; }

 private:
  struct Req {
    int fd;
    const void* buf;
    uint32_t len;
    uint64_t off;
    uint64_t tag;
  };

  void write_run(size_t i, size_t j) {
    size_t cur = i;       // first page not yet complete
    uint32_t within = 0;  // bytes of it already written
    while (cur < j) {
      iovec iov[IOV_MAX];
      int n = 0;
      for (size_t k = cur; k < j; k++, n++) {
        const uint32_t skip = k == cur ? within : 0;
        iov[n].iov_base = const_cast<char*>(static_cast<const char*>(queue_[k].buf) + skip);
        iov[n].iov_len = queue_[k].len - skip;
      }
      ssize_t r = pwritev(queue_[cur].fd, iov, n, static_cast<off_t>(queue_[cur].off + within));
      requests_++;
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        const int64_t err = r < 0 ? -errno : -EIO;
        for (size_t k = cur; k < j; k++) done_.push_back({queue_[k].tag, err});
        return;
      }
      uint64_t left = static_cast<uint64_t>(r);
      while (cur < j && left > 0) {
        const uint32_t need = queue_[cur].len - within;
        if (left >= need) {
          left -= need;
          done_.push_back({queue_[cur].tag, queue_[cur].len});
          cur++;
          within = 0;
        } else {
          within += static_cast<uint32_t>(left);
          left = 0;
        }
      }
    }
  }

  std::vector<Req> queue_;
  std::vector<IoCompletion> done_;
  uint64_t requests_ = 0;
};

}  // namespace

std::unique_ptr<IoBackend> make_io_backend(IoKind want, const IoBackendOptions& opts,
                                           std::string* why) {
  if (want == IoKind::kIoUring) {
    auto u = std::make_unique<UringBackend>(opts);
    int rc = u->init(opts);
    if (rc == 0) return u;
    if (why) {
      *why = std::string("io_uring unavailable (io_uring_queue_init: ") + std::strerror(-rc);
      if (rc == -EPERM) *why += "; see /proc/sys/kernel/io_uring_disabled";
      *why += "); using pwritev";
    }
  }
  return std::make_unique<PwritevBackend>();
}

}  // namespace rbtrace::detail
