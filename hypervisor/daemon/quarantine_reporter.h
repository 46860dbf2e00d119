// Tells the supervisor that a driver instance must be replaced because the
// hypervisor quarantined one of its channels (control.capnp
// DriverQuarantined on the supervisor's control socket).
//
// The hypervisor never waits on the supervisor: the supervisor itself calls
// the hypervisor synchronously (service times), so a blocking call from the
// hypervisor's loop could stall both.  Reports go to a queue served by one
// worker thread; a report that cannot be delivered is retried a few times
// and then logged.  Nothing is lost silently.
#pragma once
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace axl::hv {

class QuarantineReporter {
 public:
  explicit QuarantineReporter(std::string supervisor_socket);
  ~QuarantineReporter();  // drops what is still queued and joins the worker
  QuarantineReporter(const QuarantineReporter&) = delete;
  QuarantineReporter& operator=(const QuarantineReporter&) = delete;

  // Never blocks beyond taking a lock.  Reports about the same instance
  // while one is queued are merged (the first cause wins).
  void report(const std::string& driver, int pid, const std::string& cause);

 private:
  struct Report {
    std::string driver;
    int pid;
    std::string cause;
  };
  void run();

  std::string socket_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Report> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace axl::hv
