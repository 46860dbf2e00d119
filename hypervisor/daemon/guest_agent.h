// The hypervisor's two JSON channels into a running domain: QEMU's guest
// agent (qemu-guest-agent in the guest, over a virtio-serial port) for
// `axl exec`, and QMP for `axl shutdown`'s ACPI power button
// (docs/architecture.md, "Guest agent").
//
// Both speak one JSON object per line.  What comes back is untrusted: the
// agent is a program of the guest's, and may answer anything, slowly, or not
// at all.  Every reply is bounded (kMaxLine), every field type-checked, and
// every exchange has a deadline; nothing here blocks the loop.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/result.h"

namespace axl::hv {

// What a command run by the guest agent left.
struct ExecResult {
  int exit_code = -1;  // -1 when it ended by a signal
  int signal = 0;
  std::string out, err;
  bool truncated = false;  // the agent cut its output short (16 MiB per stream)
};

namespace qga {
// The longest line either peer may send (the agent's base64 of 2 x 16 MiB).
constexpr size_t kMaxLine = 48u << 20;

// The requests, one line each (with the trailing newline).  A sync request
// is preceded by 0xFF, which resets the agent's parser whatever it had read.
std::string sync_request(uint64_t id);
std::string exec_request(const std::string& path, const std::vector<std::string>& args);
std::string exec_status_request(int64_t pid);

// The replies.  Every error is one line naming what was wrong; an agent's
// own error ({"error": {"desc": ...}}) comes back as its description.
// parse_sync: true for the answer to `id`, false for a stale line to skip.
Result<bool> parse_sync(const std::string& line, uint64_t id);
Result<int64_t> parse_exec(const std::string& line);
// nullopt while the command still runs.
Result<std::optional<ExecResult>> parse_exec_status(const std::string& line);
// QMP: true for {"return": ...}, false for an event or the greeting, an
// error for {"error": ...} or a line that is not JSON.
Result<bool> parse_qmp_return(const std::string& line);

Result<std::string> base64_decode(const std::string& in);
}  // namespace qga

// One JSON-lines conversation at a time over a Unix socket, with a deadline
// for the whole of it.  Each step sends a line (or none) and reads lines until
// `accept` says the step is done; a step's error ends the conversation.
class JsonLineSession : public std::enable_shared_from_this<JsonLineSession> {
 public:
  using Accept = std::function<Result<bool>(const std::string& line)>;
  using Done = std::function<void(Status)>;

  JsonLineSession(boost::asio::io_context& io, std::string socket, std::string peer);
  // Connects; `done` runs on the loop with the outcome.
  void start(std::chrono::milliseconds deadline, Done done);
  // Sends `line` (if not empty), then reads lines until accept() is true.
  void step(const std::string& line, Accept accept, Done done);
  // Ends the conversation now: the step in flight is answered kClosed.
  void close();
  // Runs `f` on the loop after `delay`; if the deadline passes first,
  // `done` is answered with the timeout instead (nothing, if the session
  // was closed).
  void after(std::chrono::milliseconds delay, std::function<void()> f, Done done);

 private:
  void read_line(Accept accept, Done done);
  void fail(Done& done, Error e);

  boost::asio::local::stream_protocol::socket sock_;
  boost::asio::steady_timer deadline_, pause_;
  boost::asio::streambuf buf_;
  std::string socket_, peer_;
  bool closed_ = false, timed_out_ = false;
};

// A domain's guest agent: runs commands one after the other.
class GuestAgent {
 public:
  GuestAgent(boost::asio::io_context& io, std::string socket)
      : io_(io), socket_(std::move(socket)) {}
  ~GuestAgent();
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  // Runs `path args...` in the guest and answers once it exited, or with an
  // error past `timeout` (the command may still run in the guest then).
  void exec(std::string path, std::vector<std::string> args, std::chrono::milliseconds timeout,
            std::function<void(Result<ExecResult>)> done);

 private:
  struct Op {
    std::string path;
    std::vector<std::string> args;
    std::chrono::milliseconds timeout;
    std::function<void(Result<ExecResult>)> done;
  };
  void next();
  void finish(Result<ExecResult> r);
  void poll(int64_t pid, std::chrono::milliseconds interval);

  boost::asio::io_context& io_;
  std::string socket_;
  std::deque<Op> queue_;
  std::shared_ptr<JsonLineSession> session_;  // the op at queue_.front()'s
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  uint64_t next_sync_ = 1;
};

// Presses the ACPI power button of the QEMU whose QMP socket is `socket`.
void qmp_powerdown(boost::asio::io_context& io, const std::string& socket,
                   std::function<void(Status)> done);

}  // namespace axl::hv
