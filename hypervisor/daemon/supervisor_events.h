// Events the hypervisor pushes to the supervisor (control.capnp requests on
// the supervisor's control socket), instead of being polled for them:
// - DriverQuarantined: a driver instance must be replaced because the
//   hypervisor quarantined one of its channels;
// - DomainStateChanged: a domain started, shut off or was destroyed, whoever
//   caused it (`axl create`, the guest powering off, D-Bus); the supervisor
//   turns it into the D-Bus signal of the same name.
//
// The hypervisor's loop never waits on the supervisor (docs/architecture.md,
// "Control plane").  Events go to a queue served by one worker thread, in the
// order they happened, so the hypervisor's loop never waits; one that cannot
// be delivered is retried a few times and then logged.  Nothing is lost
// silently.
#pragma once
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace axl::hv {

class SupervisorEvents {
 public:
  explicit SupervisorEvents(std::string supervisor_socket);
  ~SupervisorEvents();  // drops what is still queued and joins the worker
  SupervisorEvents(const SupervisorEvents&) = delete;
  SupervisorEvents& operator=(const SupervisorEvents&) = delete;

  // Each never blocks beyond taking a lock.  Quarantine reports about the
  // same instance while one is queued are merged (the first cause wins).
  void quarantined(const std::string& driver, int pid, const std::string& cause);
  void domain_state(const std::string& domain, const std::string& state);
  void served(const std::string& driver, int pid, uint64_t rebound_ns, uint64_t served_ns);

 private:
  struct Event {
    enum class Kind { kQuarantined, kDomainState, kServed } kind;
    std::string name;                        // driver or domain
    int pid = 0;                             // kQuarantined
    std::string what;                        // cause or state
    uint64_t rebound_ns = 0, served_ns = 0;  // kServed
  };
  void push(Event e);
  void run();
  bool deliver(const Event& e, std::string* error);

  std::string socket_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace axl::hv
