// libFuzzer target: the control protocol parser (rbtrace/control.h). Every
// input is parsed as a request and as a reply of each type; a parse that
// succeeds must re-encode to a message that parses to the same thing, and
// nothing may read outside the input (ASan) or crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "rbtrace/control.h"

using namespace rbtrace::control;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string why;
  Request req;
  if (parse_request(data, size, &req, &why) == 0) {
    const auto again = encode_request(req);
    Request req2;
    if (parse_request(again.data(), again.size(), &req2, &why) != 0 || req2.type != req.type ||
        req2.cpu != req.cpu || req2.timeout_ms != req.timeout_ms || req2.enable != req.enable ||
        req2.event != req.event || req2.on != req.on ||
        encode_request(req2) != again)
      std::abort();
  }
  uint16_t type;
  uint32_t len;
  (void)parse_header(data, size, kMaxRequestPayload, &type, &len, &why);
  for (MsgType t : {MsgType::kStat, MsgType::kSnapshot, MsgType::kEvents, MsgType::kEventList,
                    MsgType::kRecordStart, MsgType::kRecordStop, MsgType::kRecordFlush,
                    MsgType::kRecordStatus, MsgType::kRecordSwitch}) {
    Reply rep;
    if (parse_reply(data, size, t, &rep, &why) == 0) {
      const auto again = encode_reply(rep);
      Reply rep2;
      if (parse_reply(again.data(), again.size(), t, &rep2, &why) != 0 ||
          rep2.status != rep.status || rep2.stat.cpus.size() != rep.stat.cpus.size() ||
          rep2.snapshot.cpus.size() != rep.snapshot.cpus.size() ||
          encode_reply(rep2) != again)
        std::abort();
    }
  }
  return 0;
}
