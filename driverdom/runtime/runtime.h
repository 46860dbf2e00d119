// The driver-domain runtime: one Boost.Asio loop serving the hypervisor's
// control socket (common/schema/driver.capnp) for one Driver.
//
// Lifecycle: kStarting (not yet said hello) -> kServing (answering attach /
// detach) -> kStopped (hypervisor hung up, a signal, or a fatal socket error).
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <memory>
#include <set>

#include "common/unique_fd.h"
#include "driverdom/runtime/control.h"
#include "driverdom/runtime/driver.h"
#include "driverdom/runtime/fault_hooks.h"
#include "driverdom/runtime/fd_watch.h"
#include "driverdom/runtime/options.h"

namespace axl::driverdom {

class Runtime {
 public:
  enum class State { kStarting, kServing, kStopped };

  // `driver` must outlive the runtime; `io` must outlive both.
  Runtime(boost::asio::io_context& io, Options opts, UniqueFd control, Driver& driver);

  // A parked spare's hypervisor connection, given once it is started
  // (before run()).
  void set_control(UniqueFd control) { control_ = std::move(control); }
  // Says hello, then serves until stopped.  Returns the process exit code:
  // 0 when the hypervisor closed the socket or a SIGTERM/SIGINT came.
  int run();
  State state() const { return state_; }
  // Fault injection (may stay null): how attaches are answered.
  void set_attach_fault(const AttachFault* a) { attach_fault_ = a; }

 private:
  bool on_control_readable();
  void handle(AttachSpec spec, std::vector<UniqueFd> fds);
  void handle(DetachCmd cmd);
  void reject(const Rejection& r);
  void stop(int exit_code);

  boost::asio::io_context& io_;
  Options opts_;
  UniqueFd control_;
  Driver& driver_;
  State state_ = State::kStarting;
  int exit_code_ = 0;
  std::set<uint32_t> devices_;
  std::unique_ptr<FdWatch> control_watch_;
  const AttachFault* attach_fault_ = nullptr;
  std::vector<std::unique_ptr<boost::asio::steady_timer>> late_answers_;
  boost::asio::signal_set signals_;
};

}  // namespace axl::driverdom
