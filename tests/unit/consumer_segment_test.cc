// consumer/src/segment.h: a segment's bookkeeping without any I/O.
// Completions arrive out of order; per CPU only the longest prefix
// [0, good_end) written completely counts, nothing after a failure counts,
// and what does not count is accounted as lost (docs/DESIGN.md, "Consumer",
// Segments).
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "segment.h"

using rbtrace::detail::CpuRun;
using rbtrace::detail::Segment;

namespace {

constexpr uint32_t kPage = 4096;

// Submits `n` pages on `cpu`, page k holding events[k]; returns the offsets.
std::vector<uint64_t> submit(Segment& s, uint32_t cpu, const std::vector<uint64_t>& events) {
  std::vector<uint64_t> offs;
  for (uint64_t e : events) offs.push_back(s.submit(cpu, e));
  return offs;
}

TEST(ConsumerSegment, SubmitGivesConsecutiveOffsetsPerCpu) {
  Segment s(7, 2, kPage);
  EXPECT_EQ(s.seq, 7u);
  EXPECT_EQ(s.submit(0, 1), 0u);
  EXPECT_EQ(s.submit(1, 2), 0u);
  EXPECT_EQ(s.submit(0, 3), kPage);
  EXPECT_EQ(s.submit(0, 4), 2u * kPage);
  EXPECT_EQ(s.bytes, 4u * kPage);
  EXPECT_EQ(s.in_flight, 4u);
  EXPECT_EQ(s.cpus[0].pages, 3u);
  EXPECT_EQ(s.cpus[0].events, 8u);
  EXPECT_EQ(s.cpus[1].pages, 1u);
  EXPECT_EQ(s.cpus[0].next_off, 3u * kPage);
}

TEST(ConsumerSegment, InOrderCompletionsExtendGoodEnd) {
  Segment s(1, 1, kPage);
  auto off = submit(s, 0, {5, 6, 7});
  for (size_t k = 0; k < off.size(); k++) {
    s.completed(0, off[k], 5 + k, true);
    EXPECT_EQ(s.cpus[0].good_end, (k + 1) * kPage);
  }
  EXPECT_EQ(s.cpus[0].good_events, 18u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_TRUE(s.cpus[0].done.empty());
  EXPECT_EQ(s.good_pages(), 3u);
  EXPECT_EQ(s.cpus[0].lost_events(), 0u);
  EXPECT_EQ(s.cpus[0].lost_pages(kPage), 0u);
}

TEST(ConsumerSegment, OutOfOrderCompletionsWaitForTheGap) {
  Segment s(1, 1, kPage);
  auto off = submit(s, 0, {10, 20, 30, 40});
  // 3, 1 complete first: nothing is a prefix yet.
  s.completed(0, off[3], 40, true);
  s.completed(0, off[1], 20, true);
  EXPECT_EQ(s.cpus[0].good_end, 0u);
  EXPECT_EQ(s.cpus[0].good_events, 0u);
  EXPECT_EQ(s.cpus[0].done.size(), 2u);
  // 0 completes: the prefix takes 0 and 1, stops at the gap at 2.
  s.completed(0, off[0], 10, true);
  EXPECT_EQ(s.cpus[0].good_end, 2u * kPage);
  EXPECT_EQ(s.cpus[0].good_events, 30u);
  EXPECT_EQ(s.cpus[0].done.size(), 1u);
  // 2 completes: the prefix takes 2 and the waiting 3.
  s.completed(0, off[2], 30, true);
  EXPECT_EQ(s.cpus[0].good_end, 4u * kPage);
  EXPECT_EQ(s.cpus[0].good_events, 100u);
  EXPECT_TRUE(s.cpus[0].done.empty());
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.stats_text(0), "segment events: 100\nsegment lost events: 0\n");
}

TEST(ConsumerSegment, ReverseOrderCompletions) {
  Segment s(1, 1, kPage);
  std::vector<uint64_t> ev;
  for (uint64_t k = 0; k < 16; k++) ev.push_back(k + 1);
  auto off = submit(s, 0, ev);
  for (size_t k = off.size(); k-- > 1;) s.completed(0, off[k], ev[k], true);
  EXPECT_EQ(s.cpus[0].good_end, 0u);
  s.completed(0, off[0], ev[0], true);
  EXPECT_EQ(s.cpus[0].good_end, 16u * kPage);
  EXPECT_EQ(s.cpus[0].good_events, 136u);
}

TEST(ConsumerSegment, FailureInTheMiddleFreezesGoodEnd) {
  Segment s(1, 2, kPage);
  auto off = submit(s, 0, {1, 2, 3, 4, 5});
  submit(s, 1, {9});
  s.completed(0, off[0], 1, true);
  s.completed(0, off[3], 4, true);  // beyond the gap: waiting
  // Page 1 fails: good_end stays at page 1, the waiting page 3 is dropped.
  s.completed(0, off[1], 2, false);
  s.fail(0, 28 /* ENOSPC */);
  EXPECT_TRUE(s.cpus[0].broken);
  EXPECT_TRUE(s.cpus[0].done.empty());
  EXPECT_EQ(s.error, 28);
  // Later completions, even the one that would close the gap, do not count.
  s.completed(0, off[2], 3, true);
  s.completed(0, off[4], 5, true);
  EXPECT_EQ(s.cpus[0].good_end, 1u * kPage);
  EXPECT_EQ(s.cpus[0].good_events, 1u);
  EXPECT_EQ(s.in_flight, 1u);  // CPU 1's page
  // The other CPU is not affected.
  s.completed(1, 0, 9, true);
  EXPECT_FALSE(s.cpus[1].broken);
  EXPECT_EQ(s.cpus[1].good_end, kPage);
  // A second failure keeps the first error.
  s.fail(1, 27 /* EFBIG */);
  EXPECT_EQ(s.error, 28);
  EXPECT_EQ(s.in_flight, 0u);
}

TEST(ConsumerSegment, FailureAheadOfAPageInFlight) {
  // Page 2 fails while page 1 is still in flight: when page 1 then
  // completes, it does not count either (nothing after good_end counts
  // once a write failed, even the page that would extend the prefix).
  Segment s(1, 1, kPage);
  auto off = submit(s, 0, {1, 2, 3});
  s.completed(0, off[0], 1, true);
  s.completed(0, off[2], 3, false);
  s.fail(0, 28);
  s.completed(0, off[1], 2, true);
  EXPECT_EQ(s.cpus[0].good_end, kPage);
  EXPECT_EQ(s.cpus[0].good_events, 1u);
  EXPECT_EQ(s.cpus[0].lost_pages(kPage), 2u);
  EXPECT_EQ(s.cpus[0].lost_events(), 5u);
}

TEST(ConsumerSegment, LossAccounting) {
  Segment s(1, 2, kPage);
  auto off = submit(s, 0, {10, 20, 30, 40});
  auto off1 = submit(s, 1, {7, 8});
  s.completed(0, off[0], 10, true);
  s.completed(0, off[2], 30, true);
  s.completed(0, off[1], 20, false);
  s.fail(0, 5);
  s.completed(0, off[3], 40, true);
  s.completed(1, off1[1], 8, true);
  s.completed(1, off1[0], 7, true);
  // CPU 0: only page 0 counts; 3 pages and 90 events are lost.
  EXPECT_EQ(s.cpus[0].lost_pages(kPage), 3u);
  EXPECT_EQ(s.cpus[0].lost_events(), 90u);
  EXPECT_EQ(s.stats_text(0), "segment events: 10\nsegment lost events: 90\n");
  // CPU 1: everything.
  EXPECT_EQ(s.cpus[1].lost_pages(kPage), 0u);
  EXPECT_EQ(s.cpus[1].lost_events(), 0u);
  EXPECT_EQ(s.stats_text(1), "segment events: 15\nsegment lost events: 0\n");
  EXPECT_EQ(s.good_pages(), 3u);
  // Submitted = kept + lost, per CPU.
  for (const CpuRun& r : s.cpus) {
    EXPECT_EQ(r.pages, r.good_end / kPage + r.lost_pages(kPage));
    EXPECT_EQ(r.events, r.good_events + r.lost_events());
  }
}

TEST(ConsumerSegment, FailureBeforeAnyPage) {
  // A spool file that could not be created: the CPU is broken with nothing
  // submitted; nothing is lost by the segment itself (the page is counted
  // by the drain thread).
  Segment s(3, 1, kPage);
  s.fail(0, 13);
  EXPECT_EQ(s.error, 13);
  EXPECT_EQ(s.cpus[0].lost_pages(kPage), 0u);
  EXPECT_EQ(s.good_pages(), 0u);
}

TEST(ConsumerSegment, FlushMarker) {
  Segment m;
  EXPECT_EQ(m.seq, 0u);
  EXPECT_TRUE(m.cpus.empty());
  EXPECT_EQ(m.good_pages(), 0u);
}

}  // namespace

namespace {

using rbtrace::detail::SegmentLayout;

// The compaction plan (spool.h): applied to a model of the file (a map
// offset -> page id), each stage's size and positions are what the plan
// says, and at the end the pages follow data_start back to back, CPU after
// CPU.
TEST(SegmentLayout, ThePlanCompactsToBackToBackRegionsAndEveryStageIsKnownBySize) {
  const SegmentLayout l{8 * kPage, 100 * kPage};
  // CPU 1 kept nothing; CPU 3 (the last) kept 2 pages.
  const std::vector<uint64_t> sizes = {3 * kPage, 0, 5 * kPage, 2 * kPage};
  const uint64_t data_start = 2 * kPage;
  SegmentLayout::Plan p;
  ASSERT_TRUE(l.plan(sizes, data_start, &p));
  EXPECT_EQ(p.truncate_to, l.base(3) + 2 * kPage);
  // Gaps: after CPU 2, after CPU 0 (CPU 1's region is in it), before CPU 0.
  ASSERT_EQ(p.steps.size(), 3u);
  for (size_t k = 1; k < p.steps.size(); k++) EXPECT_LT(p.steps[k].off, p.steps[k - 1].off);
  // The model: page (cpu, i) at base(cpu) + i * kPage.
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> file;
  for (uint32_t c = 0; c < sizes.size(); c++)
    for (uint64_t i = 0; i < sizes[c] / kPage; i++) file[l.base(c) + i * kPage] = {c, i};
  uint64_t size = p.truncate_to;
  for (size_t done = 0;; done++) {
    EXPECT_EQ(p.size_after(done), size);
    EXPECT_EQ(p.stage_of_size(size), static_cast<long>(done));
    for (const auto& [off, id] : file)
      EXPECT_EQ(p.offset_after(l, id.first, done) + id.second * kPage, off)
          << "stage " << done << " cpu " << id.first << " page " << id.second;
    if (done == p.steps.size()) break;
    // Collapse: nothing kept inside the gap; everything above moves down.
    const SegmentLayout::Collapse g = p.steps[done];
    EXPECT_EQ(g.off % kPage, 0u);
    EXPECT_EQ(g.len % kPage, 0u);
    EXPECT_LT(g.off + g.len, size) << "a collapse never reaches the end of the file";
    std::map<uint64_t, std::pair<uint32_t, uint64_t>> next;
    for (const auto& [off, id] : file) {
      EXPECT_FALSE(off >= g.off && off < g.off + g.len) << "page in a gap at " << off;
      next[off >= g.off + g.len ? off - g.len : off] = id;
    }
    file = next;
    size -= g.len;
  }
  uint64_t at = data_start;
  for (uint32_t c = 0; c < sizes.size(); c++) {
    EXPECT_EQ(p.final_offset[c], at);
    at += sizes[c];
  }
  EXPECT_EQ(size, at);
  // A size no stage has: not compacted yet (or damaged).
  EXPECT_EQ(p.stage_of_size(p.truncate_to + kPage), -1);
  EXPECT_EQ(p.stage_of_size(data_start), -1);
}

TEST(SegmentLayout, PlansThatDoNotFitAreRefused) {
  const SegmentLayout l{4 * kPage, 10 * kPage};
  SegmentLayout::Plan p;
  EXPECT_FALSE(l.plan({kPage}, 5 * kPage, &p)) << "a header larger than its room";
  EXPECT_FALSE(l.plan({kPage}, 0, &p));
  EXPECT_FALSE(l.plan({11 * kPage}, kPage, &p)) << "more than a region";
  EXPECT_FALSE(l.plan({0, 0}, kPage, &p)) << "nothing kept";
  ASSERT_TRUE(l.plan({0, kPage}, 4 * kPage, &p));  // the header fills its room
  ASSERT_EQ(p.steps.size(), 1u);                     // only CPU 0's region
  EXPECT_EQ(p.steps[0].off, 4 * kPage);
  EXPECT_EQ(p.steps[0].len, 10 * kPage);
}

}  // namespace

namespace {

using rbtrace::detail::take_finished_in_order;

// Segments go to the publish thread in the order they were opened: one
// whose writes completed first waits for its predecessor (io_uring
// completes out of order; RotationBySize saw segment 4 published before 3).
TEST(ConsumerSegment, FinishedSegmentsAreHandedOverInOrder) {
  std::vector<std::unique_ptr<Segment>> closing;
  for (uint64_t seq = 1; seq <= 3; seq++) {
    closing.push_back(std::make_unique<Segment>(seq, 1, kPage));
    closing.back()->submit(0, 1);
  }
  closing[1]->completed(0, 0, 1, true);  // segment 2 done first
  EXPECT_TRUE(take_finished_in_order(&closing).empty());
  EXPECT_EQ(closing.size(), 3u);
  closing[0]->completed(0, 0, 1, true);  // then segment 1
  auto out = take_finished_in_order(&closing);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]->seq, 1u);
  EXPECT_EQ(out[1]->seq, 2u);
  ASSERT_EQ(closing.size(), 1u);
  EXPECT_EQ(closing[0]->seq, 3u);
  closing[0]->completed(0, 0, 1, true);
  out = take_finished_in_order(&closing);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->seq, 3u);
  EXPECT_TRUE(closing.empty());
}

}  // namespace
