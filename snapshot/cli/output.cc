// output.cc - write_output (cli.h): the CLI's -o files (export, snapshot)
// through the AtomicFile the consumer publishes with, so that they share one
// policy: a file is named only once complete, and an existing name is never
// replaced. $RBTRACE_PUBLISH=tmpfile|private chooses the path, as for the
// consumer.
#include <string>

#include "cli.h"
#include "rbtrace/atomic_file.h"

namespace rbtrace::cli {

int write_output(const Args& args, const std::string& out, bool durable,
                 const std::function<int(int fd)>& fill) {
  std::string err;
  if (AtomicFile::refuse_existing(out, &err) != 0) return args.fail(err);
  AtomicFile f;  // abandoned (nothing left behind) unless published
  // 0666 less the umask, as any file a user's command creates (cp, trace-cmd
  // record -o): the CLI runs as the user who names the file.
  if (f.open_for(out, atomic_how_from_env(AtomicHow::kAuto), &err, 0666) != 0)
    return args.fail(err);
  if (const int rc = fill(f.fd())) return rc;
  if (f.publish(out, durable, &err) != 0) return args.fail(err);
  return 0;
}

}  // namespace rbtrace::cli
