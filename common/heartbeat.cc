#include "common/heartbeat.h"

#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"

namespace axl {

HeartbeatResponder::HeartbeatResponder(
    boost::asio::io_context& io, UniqueFd fd, std::function<void()> on_lost,
    std::function<void(const std::string&, const FaultTrigger&)> on_fault,
    std::function<bool()> healthy)
    : fd_(std::move(fd)),
      watch_(io, ::dup(fd_.get())),
      on_lost_(std::move(on_lost)),
      on_fault_(std::move(on_fault)),
      healthy_(std::move(healthy)) {
  arm();
}

void HeartbeatResponder::arm() {
  watch_.async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [this](const boost::system::error_code& ec) {
        if (ec) return;
        for (;;) {
          auto m = wire::recv(fd_.get(), MSG_DONTWAIT);
          if (!m) {
            if (m.error().code == Errc::kWouldBlock) break;
            AXL_WARN("supervisor health channel lost: %s", m.error().message.c_str());
            if (on_lost_) on_lost_();
            return;
          }
          try {
            auto hb = m->root<schema::Heartbeat>();
            if (hb.isFault()) {
              if (on_fault_) {
                auto t = hb.getTrigger();
                on_fault_(hb.getFault(), {t.getAfter(), t.getProbability(), t.getSeed()});
              }
              continue;
            }
            if (!hb.isPing()) continue;
            if (healthy_ && !healthy_()) continue;  // withheld: stuck
            capnp::MallocMessageBuilder mb;
            mb.initRoot<schema::Heartbeat>().setPong(hb.getPing());
            if (wire::send(fd_.get(), mb)) ++answered_;
          } catch (const kj::Exception&) {
            AXL_WARN("malformed heartbeat; ignored");
          }
        }
        arm();
      });
}

}  // namespace axl
