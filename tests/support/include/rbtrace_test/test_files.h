// test_files.h - file helpers shared by the tests: a scratch directory that
// removes itself (one level deep), and reading a whole file.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace rbtrace_test {

struct TempDir {
  TempDir() {
    char t[] = "/tmp/rbtrace-test-XXXXXX";
    path = mkdtemp(t) ? t : "";
  }
  ~TempDir() {
    if (path.empty()) return;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d)) {
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
          unlink((path + "/" + e->d_name).c_str());
      }
      closedir(d);
    }
    rmdir(path.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path;
};

// The file's bytes; empty if it cannot be opened.
inline std::string read_file(const std::string& p) {
  std::string s;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return s;
  char b[65536];
  size_t n;
  while ((n = std::fread(b, 1, sizeof b, f)) > 0) s.append(b, n);
  std::fclose(f);
  return s;
}

}  // namespace rbtrace_test
