// mylib - a library that traces into whatever its host set up. Its API
// takes no rbtrace handle and it knows nothing of rings or consumers: the
// host decides whether and where its events go (examples/traced_library/
// host.cc).
#pragma once

#include <cstdint>
#include <string_view>

namespace mylib {

// Runs one "query": a slice "mylib.query" around a mylib:query event and a
// counter "mylib.rows". Returns the rows it "found".
uint64_t query(uint64_t id, std::string_view sql);

}  // namespace mylib
