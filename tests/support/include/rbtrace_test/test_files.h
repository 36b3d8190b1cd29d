// test_files.h - file helpers shared by the tests: a scratch directory that
// removes itself (one level deep), reading a whole file, and running a
// program with its output captured.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

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

// Runs argv (argv[0] a path) with stdout and stderr captured through files
// in `dir` (removed after); status = exit code, or 128 + signal.
struct Proc {
  int status = -1;
  std::string out, err;
};
inline Proc run(const std::string& dir, const std::vector<std::string>& argv) {
  Proc r;
  const std::string o = dir + "/stdout", e = dir + "/stderr";
  const pid_t pid = fork();
  if (pid == 0) {
    const int fo = ::open(o.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int fe = ::open(e.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fo, 1);
    dup2(fe, 2);
    std::vector<char*> a;
    for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(o);
  r.err = read_file(e);
  unlink(o.c_str());
  unlink(e.c_str());
  return r;
}

// Runs a shell command line (sh -c, through popen: quoting, `cd DIR &&`,
// `env -u`), stdout and stderr together in `out`; status = exit code, or
// -1 when it did not exit.
inline Proc run_shell(const std::string& cmd) {
  Proc r;
  std::FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace rbtrace_test
