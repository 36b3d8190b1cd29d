// cmd_recover.cc - `rbtrace recover DIR`: the consumer's spool recovery
// (rbtrace::recover_spool): every session in DIR/spool whose process is
// gone becomes trace.dat files in DIR.
#include <cstdio>
#include <string>

#include "cli.h"
#include "rbtrace/consumer.h"

namespace rbtrace::cli {

int cmd_recover(const Args& a) {
  rbtrace::RecoverResult r;
  std::string err;
  const int rc = rbtrace::recover_spool(a.text("DIR"), &r, &err);
  for (const std::string& m : r.messages) std::printf("%s\n", m.c_str());
  for (const std::string& f : r.published) std::printf("recovered %s\n", f.c_str());
  // "N corrupt pages skipped (cpu 0: 2, cpu 3: 1)": pages that fail the
  // trace.dat reader's page check; the others of pages_rejected are holes
  // and torn pages (writes the crash cut).
  std::string per;
  for (size_t c = 0; c < r.corrupt_per_cpu.size(); c++)
    if (r.corrupt_per_cpu[c])
      per += (per.empty() ? " (" : ", ") + ("cpu " + std::to_string(c)) + ": " +
             std::to_string(r.corrupt_per_cpu[c]);
  if (!per.empty()) per += ")";
  std::printf("%llu dead session(s), %llu still recording; %llu trace(s) written: %llu pages, "
              "%llu events; %llu incomplete pages skipped; %llu corrupt pages skipped%s\n",
              static_cast<unsigned long long>(r.sessions), static_cast<unsigned long long>(r.sessions_live),
              static_cast<unsigned long long>(r.segments), static_cast<unsigned long long>(r.pages),
              static_cast<unsigned long long>(r.events),
              static_cast<unsigned long long>(r.pages_rejected - r.pages_corrupt),
              static_cast<unsigned long long>(r.pages_corrupt), per.c_str());
  if (rc) return a.fail(err);
  return 0;
}

}  // namespace rbtrace::cli
