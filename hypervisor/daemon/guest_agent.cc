#include "hypervisor/daemon/guest_agent.h"

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace axl::hv {

namespace asio = boost::asio;
using json = nlohmann::json;

namespace qga {
namespace {
// Lines from the agent may start with the 0xFF it echoes after a sync.
std::string strip(const std::string& line) {
  size_t i = 0;
  while (i < line.size() && static_cast<unsigned char>(line[i]) == 0xFF) ++i;
  return line.substr(i);
}

Result<json> parse_object(const std::string& line, const char* what) {
  json j = json::parse(strip(line), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return make_error(Errc::kMalformed,
                      std::string(what) + " sent a line that is not a JSON object");
  return j;
}

// {"error": {"class": ..., "desc": ...}} as one printable line.
Error agent_error(const json& j, const char* what) {
  std::string desc = "no description";
  if (j["error"].is_object() && j["error"].contains("desc") && j["error"]["desc"].is_string())
    desc = j["error"]["desc"].get<std::string>();
  if (desc.size() > 200) desc = desc.substr(0, 200) + "...";
  for (char& c : desc)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return make_error(std::string(what) + ": " + desc);
}

// The "return" member of a reply, or the agent's error.
Result<json> returned(const std::string& line, const char* what) {
  auto j = parse_object(line, what);
  if (!j) return j.error();
  if (j->contains("error")) return agent_error(*j, what);
  if (!j->contains("return"))
    return make_error(Errc::kMalformed, std::string(what) + " sent a reply without \"return\"");
  return (*j)["return"];
}
}  // namespace

std::string sync_request(uint64_t id) {
  return "\xff" + json{{"execute", "guest-sync-delimited"}, {"arguments", {{"id", id}}}}.dump() +
         "\n";
}

std::string exec_request(const std::string& path, const std::vector<std::string>& args) {
  return json{{"execute", "guest-exec"},
              {"arguments", {{"path", path}, {"arg", args}, {"capture-output", true}}}}
             .dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

std::string exec_status_request(int64_t pid) {
  return json{{"execute", "guest-exec-status"}, {"arguments", {{"pid", pid}}}}.dump() + "\n";
}

Result<bool> parse_sync(const std::string& line, uint64_t id) {
  auto j = parse_object(line, "the guest agent");
  // A line left over from an earlier conversation is skipped, whatever it is.
  if (!j) return false;
  auto it = j->find("return");
  return it != j->end() && it->is_number_unsigned() && it->get<uint64_t>() == id;
}

Result<int64_t> parse_exec(const std::string& line) {
  auto r = returned(line, "guest-exec");
  if (!r) return r.error();
  if (!r->is_object() || !(*r)["pid"].is_number_integer())
    return make_error(Errc::kMalformed, "guest-exec: the agent's reply names no pid");
  return (*r)["pid"].get<int64_t>();
}

Result<std::optional<ExecResult>> parse_exec_status(const std::string& line) {
  auto r = returned(line, "guest-exec-status");
  if (!r) return r.error();
  if (!r->is_object() || !(*r)["exited"].is_boolean())
    return make_error(Errc::kMalformed, "guest-exec-status: the agent's reply has no \"exited\"");
  if (!(*r)["exited"].get<bool>()) return std::optional<ExecResult>();
  ExecResult e;
  const json& o = *r;
  auto int_field = [&](const char* k, int& out) -> Status {
    if (!o.contains(k)) return {};
    if (!o[k].is_number_integer() || o[k].get<int64_t>() < -1 || o[k].get<int64_t>() > 65535)
      return make_error(Errc::kMalformed,
                        std::string("guest-exec-status: \"") + k + "\" is not a small integer");
    out = o[k].get<int>();
    return {};
  };
  if (auto s = int_field("exitcode", e.exit_code); !s) return s.error();
  if (auto s = int_field("signal", e.signal); !s) return s.error();
  if (!o.contains("exitcode") && !o.contains("signal"))
    return make_error(Errc::kMalformed, "guest-exec-status: neither an exit code nor a signal");
  if (o.contains("signal") && !o.contains("exitcode")) e.exit_code = -1;
  for (auto [k, out] : {std::pair{"out-data", &e.out}, std::pair{"err-data", &e.err}}) {
    if (!o.contains(k)) continue;
    if (!o[k].is_string())
      return make_error(Errc::kMalformed,
                        std::string("guest-exec-status: \"") + k + "\" is not a string");
    auto d = base64_decode(o[k].get_ref<const std::string&>());
    if (!d)
      return make_error(Errc::kMalformed,
                        std::string("guest-exec-status: \"") + k + "\": " + d.error().message);
    *out = std::move(d).value();
  }
  for (const char* k : {"out-truncated", "err-truncated"})
    if (o.contains(k) && o[k].is_boolean() && o[k].get<bool>()) e.truncated = true;
  return std::optional<ExecResult>(std::move(e));
}

Result<bool> parse_qmp_return(const std::string& line) {
  auto j = parse_object(line, "QMP");
  if (!j) return j.error();
  if (j->contains("error")) return agent_error(*j, "QMP");
  return j->contains("return");
}

Result<std::string> base64_decode(const std::string& in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (in.size() % 4) return make_error(Errc::kMalformed, "base64 of a length not a multiple of 4");
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad || (v[k] = val(c)) < 0) return make_error(Errc::kMalformed, "not base64");
    }
    uint32_t n = uint32_t(v[0]) << 18 | uint32_t(v[1]) << 12 | uint32_t(v[2]) << 6 | uint32_t(v[3]);
    out.push_back(char(n >> 16));
    if (pad < 2) out.push_back(char(n >> 8 & 0xff));
    if (pad < 1) out.push_back(char(n & 0xff));
  }
  return out;
}
}  // namespace qga

JsonLineSession::JsonLineSession(asio::io_context& io, std::string socket, std::string peer)
    : sock_(io),
      deadline_(io),
      pause_(io),
      buf_(qga::kMaxLine),
      socket_(std::move(socket)),
      peer_(std::move(peer)) {}

void JsonLineSession::start(std::chrono::milliseconds deadline, Done done) {
  auto self = shared_from_this();
  deadline_.expires_after(deadline);
  deadline_.async_wait([self](const boost::system::error_code& ec) {
    if (ec || self->closed_) return;
    self->timed_out_ = true;
    boost::system::error_code ignored;
    self->sock_.close(ignored);
    self->pause_.cancel();
  });
  sock_.async_connect(asio::local::stream_protocol::endpoint(socket_),
                      [self, done = std::move(done)](const boost::system::error_code& ec) mutable {
                        if (self->closed_) return;
                        if (ec)
                          return self->fail(
                              done, make_error(Errc::kIo, "cannot connect to " + self->peer_ +
                                                              ": " + ec.message()));
                        done({});
                      });
}

void JsonLineSession::fail(Done& done, Error e) {
  if (timed_out_) e = make_error(Errc::kTimeout, peer_ + " did not answer in time");
  close();
  done(std::move(e));
}

void JsonLineSession::close() {
  closed_ = true;
  boost::system::error_code ignored;
  sock_.close(ignored);
  deadline_.cancel();
  pause_.cancel();
}

void JsonLineSession::after(std::chrono::milliseconds delay, std::function<void()> f, Done done) {
  auto self = shared_from_this();
  pause_.expires_after(delay);
  pause_.async_wait([self, f = std::move(f),
                     done = std::move(done)](const boost::system::error_code& ec) mutable {
    if (self->closed_) return;
    // The deadline cancelled the pause: the step waiting on it fails
    // with the timeout (else it would wait forever, and every later
    // request to the agent behind it).
    if (ec || self->timed_out_)
      return self->fail(done, make_error(Errc::kTimeout, self->peer_ + " did not answer in time"));
    f();
  });
}

void JsonLineSession::step(const std::string& line, Accept accept, Done done) {
  auto self = shared_from_this();
  if (line.empty()) return read_line(std::move(accept), std::move(done));
  auto data = std::make_shared<std::string>(line);
  asio::async_write(sock_, asio::buffer(*data),
                    [self, data, accept = std::move(accept), done = std::move(done)](
                        const boost::system::error_code& ec, size_t) mutable {
                      if (self->closed_) return;
                      if (ec)
                        return self->fail(done, make_error(Errc::kIo, "writing to " + self->peer_ +
                                                                          ": " + ec.message()));
                      self->read_line(std::move(accept), std::move(done));
                    });
}

void JsonLineSession::read_line(Accept accept, Done done) {
  auto self = shared_from_this();
  asio::async_read_until(
      sock_, buf_, '\n',
      [self, accept = std::move(accept), done = std::move(done)](
          const boost::system::error_code& ec, size_t n) mutable {
        if (self->closed_) return;
        if (ec == asio::error::not_found)
          return self->fail(
              done, make_error(Errc::kMalformed, self->peer_ + " sent a line over " +
                                                     std::to_string(qga::kMaxLine >> 20) + " MiB"));
        if (ec == asio::error::eof)
          return self->fail(done, make_error(Errc::kClosed, self->peer_ + " closed the channel"));
        if (ec)
          return self->fail(
              done, make_error(Errc::kIo, "reading from " + self->peer_ + ": " + ec.message()));
        std::string line(asio::buffers_begin(self->buf_.data()),
                         asio::buffers_begin(self->buf_.data()) + std::ptrdiff_t(n) - 1);
        self->buf_.consume(n);
        auto r = accept(line);
        if (!r) return self->fail(done, r.error());
        if (*r) return done({});
        self->read_line(std::move(accept), std::move(done));
      });
}

GuestAgent::~GuestAgent() {
  *alive_ = false;
  if (session_) session_->close();
  auto q = std::move(queue_);
  for (auto& op : q) op.done(make_error(Errc::kClosed, "the domain went away"));
}

void GuestAgent::exec(std::string path, std::vector<std::string> args,
                      std::chrono::milliseconds timeout,
                      std::function<void(Result<ExecResult>)> done) {
  queue_.push_back(Op{std::move(path), std::move(args), timeout, std::move(done)});
  if (queue_.size() == 1) next();
}

void GuestAgent::finish(Result<ExecResult> r) {
  if (session_) session_->close();
  session_.reset();
  Op op = std::move(queue_.front());
  queue_.pop_front();
  // Answer from the loop, so a caller's completion never re-enters exec().
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive, done = std::move(op.done), r = std::move(r)]() mutable {
    done(std::move(r));
    if (!alive.expired() && !queue_.empty() && !session_) next();
  });
}

void GuestAgent::next() {
  const Op& op = queue_.front();
  session_ = std::make_shared<JsonLineSession>(io_, socket_, "the guest agent");
  auto s = session_;
  const uint64_t id = next_sync_++;
  std::weak_ptr<bool> alive = alive_;
  auto guard = [this, alive](auto f) {
    return [this, alive, f](const Status& st) mutable {
      if (alive.expired()) return;
      if (!st) return finish(st.error());
      f();
    };
  };
  s->start(op.timeout, guard([this, s, id, guard] {
             // The agent answers nothing until it runs in the guest: the
             // sync waits for it, up to the deadline.
             s->step(
                 qga::sync_request(id),
                 [id](const std::string& l) { return qga::parse_sync(l, id); },
                 guard([this, s, guard] {
                   const Op& op = queue_.front();
                   auto pid = std::make_shared<int64_t>(-1);
                   s->step(
                       qga::exec_request(op.path, op.args),
                       [pid](const std::string& l) -> Result<bool> {
                         auto p = qga::parse_exec(l);
                         if (!p) return p.error();
                         *pid = *p;
                         return true;
                       },
                       guard([this, pid] { poll(*pid, std::chrono::milliseconds(20)); }));
                 }));
           }));
}

void GuestAgent::poll(int64_t pid, std::chrono::milliseconds interval) {
  auto s = session_;
  auto result = std::make_shared<std::optional<ExecResult>>();
  std::weak_ptr<bool> alive = alive_;
  s->step(
      qga::exec_status_request(pid),
      [result](const std::string& l) -> Result<bool> {
        auto r = qga::parse_exec_status(l);
        if (!r) return r.error();
        *result = std::move(r).value();
        return true;
      },
      [this, alive, s, pid, interval, result](const Status& st) {
        if (alive.expired()) return;
        if (!st) return finish(st.error());
        if (*result) return finish(std::move(**result));
        s->after(
            interval,
            [this, alive, pid, interval] {
              if (!alive.expired())
                poll(pid, std::min(interval * 2, std::chrono::milliseconds(200)));
            },
            [this, alive](const Status& st) {
              if (!alive.expired()) finish(st.error());
            });
      });
}

void qmp_powerdown(asio::io_context& io, const std::string& socket,
                   std::function<void(Status)> done) {
  auto s = std::make_shared<JsonLineSession>(io, socket, "QEMU's QMP");
  auto d = std::make_shared<std::function<void(Status)>>(std::move(done));
  auto fail_or = [s, d](auto f) {
    return [s, d, f](const Status& st) {
      if (!st) return (*d)(st);
      f();
    };
  };
  s->start(std::chrono::milliseconds(5000), fail_or([s, d, fail_or] {
             // The greeting first ({"QMP": ...}), then capabilities negotiation.
             s->step(
                 "",
                 [](const std::string& l) -> Result<bool> {
                   auto r = qga::parse_qmp_return(l);
                   if (!r) return r.error();
                   return true;
                 },
                 fail_or([s, d, fail_or] {
                   s->step("{\"execute\":\"qmp_capabilities\"}\n", qga::parse_qmp_return,
                           fail_or([s, d] {
                             s->step("{\"execute\":\"system_powerdown\"}\n", qga::parse_qmp_return,
                                     [s, d](const Status& st) {
                                       s->close();
                                       (*d)(st);
                                     });
                           }));
                 }));
           }));
}

}  // namespace axl::hv
