// snapshot/cli/cli_common.h - exit codes and error helpers shared by the
// rbtrace subcommands (rbtrace.cc, cmd_control.cc).
#pragma once

#include <cstdio>
#include <string>

namespace rbtrace::cli {

inline constexpr int kExitFail = 1;
inline constexpr int kExitUsage = 2;

// "rbtrace CMD: WHAT" on stderr; returns kExitFail.
inline int fail(const char* cmd, const std::string& what) {
  std::fprintf(stderr, "rbtrace %s: %s\n", cmd, what.c_str());
  return kExitFail;
}
// The same plus the usage line; returns kExitUsage.
inline int usage_error(const char* cmd, const std::string& what, const char* usage) {
  std::fprintf(stderr, "rbtrace %s: %s\nusage: %s\n", cmd, what.c_str(), usage);
  return kExitUsage;
}

}  // namespace rbtrace::cli
