#include "supervisor/instance.h"

#include <sys/wait.h>

namespace axl::supervisor {

namespace asio = boost::asio;

bool RestartBudget::allows(Clock::time_point now) {
  while (!recent_.empty() && now - recent_.front() > window_) recent_.pop_front();
  return recent_.size() < max_;
}

std::string breach_cause(const cgroup::Group* g) {
  if (!g) return "";
  switch (g->breach()) {
    case cgroup::Breach::kMemory:
      return "resource limit: memory (OOM kill)";
    case cgroup::Breach::kPids:
      return "resource limit: pids";
    case cgroup::Breach::kNone:
      return "";
  }
  return "";
}

Reaper::~Reaper() {
  *alive_ = false;
  finish();
}

void Reaper::finish() {
  timer_.cancel();
  retiring_.clear();  // each Group's destructor finishes its removal
}

void Reaper::reap(proc::NsHolder h) {
  pid_t pid = -1;
  UniqueFd fd = h.kill_and_release(&pid);
  if (!fd) return;
  auto w = std::make_shared<asio::posix::stream_descriptor>(io_, fd.release());
  w->async_wait(asio::posix::stream_descriptor::wait_read,
                [w, pid](const boost::system::error_code&) { ::waitpid(pid, nullptr, WNOHANG); });
}

void Reaper::retire(std::unique_ptr<cgroup::Group> g) {
  if (!g) return;
  retiring_.push_back(Retiring{std::move(g), 0});
  // After the handler in progress (a restart, say) has run.
  if (retiring_.size() == 1)
    asio::post(io_, [this, alive = std::weak_ptr<bool>(alive_)] {
      if (auto a = alive.lock(); a && *a) step();
    });
}

void Reaper::step() {
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    if (it->group->remove_step() || ++it->steps > 200)
      it = retiring_.erase(it);
    else
      ++it;
  }
  if (retiring_.empty()) return;
  timer_.expires_after(std::chrono::milliseconds(5));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) step();
  });
}

}  // namespace axl::supervisor
