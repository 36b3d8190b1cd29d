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
  explicit UringBackend(bool vectored) : vectored_(vectored) {}
  ~UringBackend() override {
    if (ready_) io_uring_queue_exit(&ring_);
  }

  int init(uint32_t depth) {
    uint32_t entries = 8;
    while (entries < depth && entries < 4096) entries <<= 1;
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
    if (vectored_) {
      // Held until submit(), which joins consecutive pages of one file.
      pending_.push_back({fd, buf, len, off, tag});
      in_flight_++;
      return;
    }
    prep_one(fd, buf, len, off, tag);
    in_flight_++;
  }

  // One SQE for one page: WRITE_FIXED when the page is registered.
  void prep_one(int fd, const void* buf, uint32_t len, uint64_t off, uint64_t tag) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      // The SQ is full: push it to the kernel and take a fresh entry.
      int rc = io_uring_submit(&ring_);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        // Cannot submit at all: complete this write with the error.
        failed_.push_back({tag, rc});
        return;
      }
      sqe = io_uring_get_sqe(&ring_);
    }
    const int idx = find_fixed(buf, len);
    if (idx >= 0) {
      io_uring_prep_write_fixed(sqe, fd, buf, len, off, idx);
      fixed_++;
    } else {
      io_uring_prep_write(sqe, fd, buf, len, off);
    }
    io_uring_sqe_set_data64(sqe, tag);
  }

  int submit() override {
    if (vectored_) flush_pending();
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
    if (n == 0 && wait_ns > 0 && in_flight_ > 0) {
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
    // the bytes it got (the caller finishes or fails it); with an error
    // every page gets the error.
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

  // Vectored mode: consecutive pages of one file become one WRITEV
  // (non-fixed: fixed buffers are single-buffer writes); a lone page is a
  // WRITE_FIXED as usual.
  void flush_pending() {
    size_t i = 0;
    while (i < pending_.size()) {
      size_t j = i + 1;
      while (j < pending_.size() && j - i < kMaxRun && pending_[j].fd == pending_[i].fd &&
             pending_[j].off == pending_[j - 1].off + pending_[j - 1].len)
        j++;
      if (j - i == 1) {
        const Page& p = pending_[i];
        prep_one(p.fd, p.buf, p.len, p.off, p.tag);
      } else {
        size_t slot;
        if (!free_groups_.empty()) {
          slot = free_groups_.back();
          free_groups_.pop_back();
        } else {
          slot = groups_.size();
          groups_.push_back(std::make_unique<Group>());
        }
        Group& g = *groups_[slot];
        for (size_t k = i; k < j; k++) {
          g.pages.push_back(pending_[k]);
          g.iov.push_back({const_cast<void*>(pending_[k].buf), pending_[k].len});
        }
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        while (sqe == nullptr) {
          int rc = io_uring_submit(&ring_);
          if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) break;
          sqe = io_uring_get_sqe(&ring_);
        }
        if (sqe == nullptr) {
          for (const Page& p : g.pages) failed_.push_back({p.tag, -EIO});
          g.iov.clear();
          g.pages.clear();
          free_groups_.push_back(slot);
        } else {
          io_uring_prep_writev(sqe, g.pages[0].fd, g.iov.data(), static_cast<unsigned>(g.iov.size()),
                               g.pages[0].off);
          io_uring_sqe_set_data64(sqe, kGroupBit | slot);
        }
      }
      i = j;
    }
    pending_.clear();
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

  static constexpr size_t kMaxRun = 64;  // pages per WRITEV
  io_uring ring_{};
  bool vectored_ = false;
  std::vector<Page> pending_;
  std::vector<std::unique_ptr<Group>> groups_;  // stable addresses: iovecs in flight
  std::vector<size_t> free_groups_;
  bool ready_ = false;
  uint32_t in_flight_ = 0;
  uint32_t buf_len_ = 0;
  uint64_t fixed_ = 0;
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
};

}  // namespace

std::unique_ptr<IoBackend> make_io_backend(IoKind want, uint32_t depth, bool vectored,
                                           std::string* why) {
  if (want == IoKind::kIoUring) {
    auto u = std::make_unique<UringBackend>(vectored);
    int rc = u->init(depth);
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
