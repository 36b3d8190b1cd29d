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
  std::printf("%llu dead session(s), %llu still recording; %llu trace(s) written: %llu pages, "
              "%llu events; %llu incomplete pages skipped\n",
              static_cast<unsigned long long>(r.sessions), static_cast<unsigned long long>(r.sessions_live),
              static_cast<unsigned long long>(r.segments), static_cast<unsigned long long>(r.pages),
              static_cast<unsigned long long>(r.events), static_cast<unsigned long long>(r.pages_rejected));
  if (rc) return a.fail(err);
  return 0;
}

}  // namespace rbtrace::cli
