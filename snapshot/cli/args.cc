// args.cc - the one argument parser of the `rbtrace` subcommands (cli.h).
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "cli.h"

namespace rbtrace::cli {

namespace {

const Param* lookup(const Param* params, size_t n, std::string_view name) {
  for (size_t i = 0; i < n && params[i].name; i++)
    if (name == params[i].name) return &params[i];
  return nullptr;
}

}  // namespace

bool parse_number(const char* s, long lo, long hi, long* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int Args::parse(int argc, char** argv) {
  const size_t max_operands = std::size(command_.operands);
  size_t operands = 0;
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: %s\n%s\n", command_.usage, command_.summary);
      return 0;
    }
    if (!a.empty() && a[0] == '-') {
      const Param* p = lookup(command_.options, std::size(command_.options), a);
      if (!p) return usage_error("unknown option '" + std::string(a) + "'");
      const char* value = "";
      if (!p->is_flag) {
        if (i + 1 >= argc || !*argv[i + 1]) {
          const char* what = p->is_number() ? " needs a number" : " needs a value";
          return usage_error(std::string(a) + what);
        }
        value = argv[++i];
      }
      if (int rc = take(*p, value); rc >= 0) return rc;
      continue;
    }
    if (operands > 0 && command_.operands[operands - 1].repeats) {
      if (int rc = take(command_.operands[operands - 1], argv[i]); rc >= 0) return rc;
      continue;
    }
    if (operands == max_operands || !command_.operands[operands].name)
      return usage_error("unexpected argument '" + std::string(a) + "'");
    if (int rc = take(command_.operands[operands++], argv[i]); rc >= 0) return rc;
  }
  if (operands < max_operands && command_.operands[operands].name &&
      !command_.operands[operands].optional)
    return usage_error(std::string("no ") + command_.operands[operands].name);
  return -1;
}

int Args::take(const Param& p, const char* value) {
  long n = 0;
  if (p.is_number() && !parse_number(value, p.lo, p.hi, &n))
    return usage_error("bad " + std::string(p.name) + " '" + value + "' (" + std::to_string(p.lo) +
                       ".." + std::to_string(p.hi) + ")");
  given_.push_back({p.name, value, n});
  return -1;
}

const Args::Given* Args::find(std::string_view name) const {
  const Given* g = nullptr;
  for (const Given& x : given_)
    if (x.name == name) g = &x;  // the last one given
  return g;
}

const char* Args::text(std::string_view name) const {
  const Given* g = find(name);
  return g ? g->text : nullptr;
}

long Args::number(std::string_view name, long dflt) const {
  const Given* g = find(name);
  return g ? g->number : dflt;
}

std::vector<std::string> Args::texts(std::string_view name) const {
  std::vector<std::string> v;
  for (const Given& x : given_)
    if (x.name == name) v.emplace_back(x.text);
  return v;
}

int Args::fail(const std::string& what) const {
  std::fprintf(stderr, "rbtrace %s: %s\n", command_.name, what.c_str());
  return kExitFail;
}

int Args::usage_error(const std::string& what) const {
  std::fprintf(stderr, "rbtrace %s: %s\nusage: %s\n", command_.name, what.c_str(), command_.usage);
  return kExitUsage;
}

}  // namespace rbtrace::cli
