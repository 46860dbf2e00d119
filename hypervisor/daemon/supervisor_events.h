// Events the hypervisor pushes to the supervisor (control.capnp requests on
// the supervisor's control socket), instead of being polled for them:
// - DriverQuarantined: a driver instance must be replaced because the
//   hypervisor quarantined one of its channels;
// - DriverServed: the first request an instance completed after its devices
//   moved to it (the end of the outage the supervisor records);
// - DomainStateChanged: a domain changed state, whoever caused it (`axl
//   create`, the guest powering off, D-Bus); the supervisor turns it into
//   the D-Bus signal of the same name;
// - PolicyCounted: the hypervisor's access-policy decisions so far, for the
//   supervisor's D-Bus counters (a newer count replaces a queued one).
//
// The hypervisor's loop never waits on the supervisor (docs/architecture.md,
// "Control plane"): events are queued and sent from the loop on one kept
// connection, one at a time and in the order they happened; each answer
// sends the next. One that cannot be delivered (the supervisor is
// restarting) is tried again a few times, 200 ms apart, and then logged;
// nothing is lost silently.  A quarantine report is tried until the
// supervisor answers (at most 1 s apart): its driver's channel stays
// quarantined until then, and the supervisor's monitor brings it back.
#pragma once
#include <deque>
#include <memory>
#include <string>

#include "common/asio.h"
#include "common/control_requests.h"

namespace axl::hv {

class SupervisorEvents {
 public:
  SupervisorEvents(boost::asio::io_context& io, const std::string& supervisor_socket);
  ~SupervisorEvents();  // what is still queued is dropped
  SupervisorEvents(const SupervisorEvents&) = delete;
  SupervisorEvents& operator=(const SupervisorEvents&) = delete;

  // Called on the loop; each returns at once. Quarantine reports about the
  // same instance while one is queued are merged (the first cause wins).
  void quarantined(const std::string& driver, int pid, const std::string& cause);
  void domain_state(const std::string& domain, const std::string& state);
  void served(const std::string& driver, int pid, uint64_t rebound_ns, uint64_t served_ns,
              uint64_t died_ns);
  void policy_counted(uint64_t allowed, uint64_t denied);

  bool idle() const { return queue_.empty(); }  // everything sent and answered

 private:
  struct Event {
    enum class Kind { kQuarantined, kDomainState, kServed, kPolicyCounted } kind;
    std::string name;  // driver or domain
    int pid = 0;       // kQuarantined, kServed
    std::string what;  // cause or state
    uint64_t rebound_ns = 0, served_ns = 0,
             died_ns = 0;  // kServed; kPolicyCounted: allowed, denied
  };
  void push(Event e);
  void send_head();
  void head_done(const Result<control::ControlReply>& r);

  control::SupervisorClient client_;
  std::deque<Event> queue_;
  int attempt_ = 0;
  bool in_flight_ = false;
  boost::asio::steady_timer retry_;
  std::shared_ptr<control::PendingCall> call_;
};

}  // namespace axl::hv
