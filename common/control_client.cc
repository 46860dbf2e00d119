#include "common/control_client.h"

#include <capnp/message.h>

namespace axl::control {

Result<ControlReply> call(const std::string& socket,
                          const std::function<void(schema::ControlRequest::Builder)>& fill,
                          int timeout_ms) {
  auto s = wire::connect(socket);
  if (!s) return s.error();
  capnp::MallocMessageBuilder mb;
  fill(mb.initRoot<schema::ControlRequest>());
  if (auto st = wire::send(s->get(), mb); !st) return st.error();
  auto r = wire::recv_timeout(s->get(), timeout_ms);
  if (!r) return r.error();
  ControlReply reply(std::move(r).value());
  try {
    auto rr = reply.get();
    if (!rr.getOk()) return make_error(rr.getError());
  } catch (const kj::Exception& e) {
    return make_error(std::string("malformed reply: ") + e.getDescription().cStr());
  }
  return reply;
}

}  // namespace axl::control
