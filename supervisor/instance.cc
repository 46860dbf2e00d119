#include "supervisor/instance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace axl::supervisor {

namespace asio = boost::asio;

bool RestartBudget::allows(Clock::time_point now) {
  while (!recent_.empty() && now - recent_.front() > window_) recent_.pop_front();
  return recent_.size() < max_;
}

uint32_t RestartBudget::backoff_ms(uint32_t base_ms) const {
  uint32_t delay = base_ms;
  for (size_t i = 1; i < recent_.size() && delay && delay < 60000; ++i) delay *= 2;
  return std::min<uint32_t>(delay, 60000);
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

Instance::Instance(asio::io_context& io, proc::Child child, UniqueFd health,
                   std::unique_ptr<cgroup::Group> group)
    : io_(io), child_(std::move(child)), health_(std::move(health)), group_(std::move(group)) {}

Instance::~Instance() { unwatch(); }

void Instance::watch_exit(std::function<void()> on_exit) {
  if (exit_watch_) exit_watch_->cancel();
  exit_watch_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(child_.pidfd.get()));
  // A handler already due when the watch was dropped (unwatch, or the
  // instance gone) must not run: it belongs to a role the instance left.
  exit_watch_->async_wait(asio::posix::stream_descriptor::wait_read,
                          [gen = std::weak_ptr<uint64_t>(gen_), g = *gen_,
                           on_exit = std::move(on_exit)](const boost::system::error_code& ec) {
                            auto live = gen.lock();
                            if (!ec && live && *live == g) on_exit();
                          });
}

void Instance::monitor(std::chrono::milliseconds interval, uint32_t misses, FailFn on_fail) {
  on_fail_ = std::move(on_fail);
  monitor_ = std::make_unique<HealthMonitor>(
      io_, std::move(health_), interval, misses,
      [this](const std::string& cause, uint64_t last_pong_ns) { fail(cause, last_pong_ns); },
      [this] {
        // cgroup v1 does not notify a refused fork; look on every beat.
        if (group_ && group_->breach() == cgroup::Breach::kPids)
          fail("resource limit: pids", monotonic_ns());
      },
      [pid = child_.pid] { return read_sched(pid); });
  watch_group();
}

// The kernel OOM-kills an instance over its memory limit by itself (the
// pidfd then reports it); a pids limit only refuses forks, so that breach
// is a failure the supervisor acts on.
void Instance::watch_group() {
  group_watch_.reset();
  if (!group_ || group_->event_fd() < 0) return;
  group_watch_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(group_->event_fd()));
  group_watch_->async_wait(
      asio::posix::stream_descriptor::wait_read,
      [this, gen = std::weak_ptr<uint64_t>(gen_), g = *gen_](const boost::system::error_code& ec) {
        auto live = gen.lock();
        if (ec || !live || *live != g || !group_) return;
        group_->ack_events();
        if (group_->breach() == cgroup::Breach::kPids)
          fail("resource limit: pids", monotonic_ns());
        else
          watch_group();
      });
}

void Instance::fail(const std::string& cause, uint64_t fail_ns) {
  auto f = std::move(on_fail_);
  on_fail_ = nullptr;
  if (monitor_) monitor_->stop();
  if (group_watch_) group_watch_->cancel();
  if (f) f(cause, fail_ns);
}

void Instance::unwatch() {
  ++*gen_;
  if (exit_watch_) exit_watch_->cancel();
  exit_watch_.reset();
  if (group_watch_) group_watch_->cancel();
  group_watch_.reset();
  if (monitor_) monitor_->stop();
  on_fail_ = nullptr;
}

Status Instance::signal(int sig) {
  if (child_.pid <= 0) return make_error("no process to signal");
  if (::syscall(SYS_pidfd_send_signal, child_.pidfd.get(), sig, nullptr, 0) != 0)
    return make_error("cannot send " + std::string(sigabbrev_np(sig) ? sigabbrev_np(sig) : "?") +
                      " to pid " + std::to_string(child_.pid) + ": " + std::strerror(errno));
  return {};
}

Status Instance::journal(Journal* j, InstanceRecord r, bool write) {
  journal_ = j;
  r.pid = child_.pid;
  r.start = proc::start_time(child_.pid);
  r.holder_pid = child_.ns_holder.pid();
  r.holder_start = r.holder_pid > 0 ? proc::start_time(r.holder_pid) : 0;
  r.cgroup = group_ ? group_->name() : "";
  record_ = std::move(r);
  if (!j || !write) return {};
  return j->record(record_, health_fd());
}

void Instance::set_role(const std::string& role) {
  record_.role = role;
  if (journal_) journal_->update(record_);
}

int Instance::reap(Reaper& reaper, std::string* cause) {
  if (journal_) journal_->forget(record_.key());
  journal_ = nullptr;
  unwatch();
  auto st = proc::wait_for(child_, std::chrono::milliseconds(0));
  child_.pid = -1;
  monitor_.reset();
  health_.reset();
  if (cause && cause->empty()) *cause = breach_cause(group_.get());
  reaper.reap(std::move(child_.ns_holder));
  reaper.retire(std::move(group_));
  return st ? *st : -1;
}

int Instance::stop(std::chrono::milliseconds grace) {
  unwatch();
  monitor_.reset();
  health_.reset();
  int status = -1;
  if (child_.pid > 0) status = proc::stop(child_, grace);
  if (journal_) journal_->forget(record_.key());
  journal_ = nullptr;
  child_.pid = -1;
  group_.reset();
  return status;
}

Result<std::unique_ptr<Instance>> adopt_instance(asio::io_context& io, Journal& journal,
                                                 cgroup::Manager* cgroups, Reaper& reaper,
                                                 const InstanceRecord& r) {
  std::unique_ptr<cgroup::Group> group;
  if (!r.cgroup.empty() && cgroups) {
    auto g = cgroups->adopt(r.cgroup);
    if (g) group = std::move(g).value();
  }
  auto child = proc::adopt(r.pid, r.start, r.holder_pid, r.holder_start);
  UniqueFd health = journal.store().take(r.key());
  std::string why;
  if (!child) {
    why = child.error().message;
  } else if (!health) {
    why = "its health channel was not kept (no fd store)";
  } else if (group) {
    auto in = group->pids();
    if (std::find(in.begin(), in.end(), r.pid) == in.end())
      why = "it is not in its cgroup " + r.cgroup;
  }
  if (why.empty()) {
    ::fcntl(health.get(), F_SETFL, ::fcntl(health.get(), F_GETFL) | O_NONBLOCK);
    auto inst = std::make_unique<Instance>(io, std::move(child).value(), std::move(health),
                                           std::move(group));
    (void)inst->journal(&journal, r, /*write=*/false);
    return inst;
  }
  // Not adoptable: nothing of it may stay.
  if (child) (void)proc::stop(*child, std::chrono::milliseconds(0));
  if (r.holder_pid > 0)
    (void)proc::kill_pinned(r.holder_pid, r.holder_start, std::chrono::milliseconds(0));
  journal.forget(r.key());
  reaper.retire(std::move(group));
  return make_error(why);
}

std::string Supervised::end_active(Reaper& reaper, int* status) {
  std::string cause = std::move(pending_cause);
  pending_cause.clear();
  *status = active ? active->reap(reaper, &cause) : -1;
  active.reset();
  return cause;
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
