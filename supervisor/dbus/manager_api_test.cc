// ManagerApi against a private dbus-daemon, driven by the real busctl and by
// a plain sd-bus client.  The backend is a fake: this tests the D-Bus layer
// only (marshalling, errors, signals, object tree), not the supervisor.
#include "supervisor/dbus/manager_api.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/process.h"

namespace axl::dbus {
namespace {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "axl-dbus-test.XXXXXX").string();
    if (::mkdtemp(tmpl.data())) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Built field by field so new SpawnOptions members keep their defaults.
proc::SpawnOptions spawn_options(std::vector<std::string> argv, std::string log_path,
                                 std::vector<std::pair<int, int>> fds = {}) {
  proc::SpawnOptions o;
  o.argv = std::move(argv);
  o.log_path = std::move(log_path);
  o.fds = std::move(fds);
  return o;
}

// A dbus-daemon of our own on a socket in a temp dir; stopped by PID and
// its directory removed when this goes out of scope, pass or fail.
class PrivateBus {
 public:
  static Result<std::unique_ptr<PrivateBus>> start(const std::string& daemon) {
    std::unique_ptr<PrivateBus> b(new PrivateBus);
    if (b->dir_.path().empty()) return make_error("mkdtemp failed");
    const std::string conf = b->dir_.path() + "/bus.conf";
    std::ofstream(conf) << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus "
                           "Configuration 1.0//EN\"\n"
                           " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                           "<busconfig>\n"
                           "  <type>session</type>\n"
                           "  <listen>unix:path="
                        << b->dir_.path()
                        << "/bus</listen>\n"
                           "  <auth>EXTERNAL</auth>\n"
                           "  <policy context=\"default\">\n"
                           "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
                           "    <allow eavesdrop=\"true\"/>\n"
                           "    <allow own=\"*\"/>\n"
                           "  </policy>\n"
                           "</busconfig>\n";
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) return make_error("pipe failed");
    UniqueFd rd(p[0]), wr(p[1]);
    auto child = proc::spawn(spawn_options(
        {daemon, "--config-file=" + conf, "--nofork", "--nopidfile", "--print-address=3"},
        b->dir_.path() + "/daemon.log", {{wr.get(), 3}}));
    if (!child) return child.error();
    b->daemon_ = std::move(*child);
    wr.reset();
    // The address is printed once the socket listens.
    std::string line;
    char buf[256];
    pollfd pfd{rd.get(), POLLIN, 0};
    while (line.find('\n') == std::string::npos) {
      if (::poll(&pfd, 1, 10000) <= 0) return make_error("dbus-daemon printed no address");
      ssize_t n = ::read(rd.get(), buf, sizeof buf);
      if (n <= 0)
        return make_error("dbus-daemon exited: " + read_text(b->dir_.path() + "/daemon.log"));
      line.append(buf, size_t(n));
    }
    b->address_ = line.substr(0, line.find('\n'));
    return b;
  }
  ~PrivateBus() {
    if (daemon_.pid > 0) proc::stop(daemon_, 2000ms);
  }
  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  PrivateBus() = default;
  TempDir dir_;  // declared first: removed after the daemon stopped
  proc::Child daemon_;
  std::string address_;
};

struct Output {
  int status = -1;
  std::string text;  // stdout and stderr together
  bool ok() const { return status == 0; }
};

// Splits busctl's plain output ('a(su) 1 "a b" 7') into tokens, unquoting
// strings.
std::vector<std::string> tokens(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    if (isspace(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    std::string t;
    if (s[i] == '"') {
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        t += s[i];
      }
      ++i;
    } else {
      while (i < s.size() && !isspace(static_cast<unsigned char>(s[i]))) t += s[i++];
    }
    out.push_back(t);
  }
  return out;
}

class FakeBackend : public ManagerBackend {
 public:
  // The test thread edits state while the loop thread reads it.
  std::mutex mu;
  std::vector<DomainRow> domains{{"web", 1, "running"}};
  std::vector<DriverRow> drivers{
      {"net-0", "net", "running", "", 4242, 0, 17, 1.5},
      {"blk0", "blk", "restarting", "crashed (SIGSEGV)", 777, 3, 0, 0},
  };
  std::vector<OutageRow> outage_rows{{"blk0", "crashed (SIGSEGV)", 120, 45000, 1700000000}};
  std::vector<std::string> calls;
  policy::Subject last_caller;

  // While `hold` is set, domain calls are kept unanswered in `held` (on the
  // loop thread) until the test answers them.
  bool hold = false;
  std::vector<std::function<void()>> held;

  void list_domains(Done<std::vector<DomainRow>> done) override {
    std::lock_guard l(mu);
    if (hold) {
      held.push_back([this, done] { done(domains); });
      return;
    }
    done(domains);
  }
  void create_domain(const policy::Subject& caller, const std::string& config_path,
                     const std::string& vtpm_state, Done<std::string> done) override {
    std::lock_guard l(mu);
    last_caller = caller;
    calls.push_back("create " + config_path + (vtpm_state.empty() ? "" : " " + vtpm_state));
    if (config_path.find("bad") != std::string::npos)
      return done(make_error("config " + config_path + ": no [domain] table"));
    done(std::string("guest1"));
  }
  void destroy_domain(const policy::Subject& caller, const std::string& name,
                      std::function<void(Status)> done) override {
    std::lock_guard l(mu);
    last_caller = caller;
    calls.push_back("destroy " + name);
    if (name != "web") return done(make_error("no domain named '" + name + "'"));
    done(Status());
  }
  std::vector<DriverRow> list_drivers() override {
    std::lock_guard l(mu);
    return drivers;
  }
  Status kill_driver(const policy::Subject& caller, const std::string& name,
                     const std::string& signal) override {
    std::lock_guard l(mu);
    last_caller = caller;
    calls.push_back("kill " + name + " " + signal);
    if (name == "guarded") return make_error("denied by policy: uid 0 may not kill driver guarded");
    for (auto& d : drivers)
      if (d.name == name) return {};
    return make_error("no driver named '" + name + "'");
  }
  Status restart_driver(const policy::Subject& caller, const std::string& name) override {
    std::lock_guard l(mu);
    last_caller = caller;
    calls.push_back("restart " + name);
    return {};
  }
  std::vector<OutageRow> outages(const std::string& driver) override {
    std::lock_guard l(mu);
    std::vector<OutageRow> out;
    for (auto& o : outage_rows)
      if (driver.empty() || o.driver == driver) out.push_back(o);
    return out;
  }
};

struct BusUnref {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct SlotUnref {
  void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
struct MessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};

class ManagerApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string daemon = proc::find_on_path("dbus-daemon");
    busctl_ = proc::find_on_path("busctl");
    if (daemon.empty()) GTEST_SKIP() << "dbus-daemon is not on PATH (install the dbus package)";
    if (busctl_.empty()) GTEST_SKIP() << "busctl is not on PATH (install the systemd package)";
    auto bus = PrivateBus::start(daemon);
    ASSERT_TRUE(bus) << bus.error().message;
    bus_ = std::move(*bus);
    auto api = ManagerApi::start(io_, bus_->address(), backend_);
    ASSERT_TRUE(api) << api.error().message;
    api_ = std::move(*api);
    loop_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (loop_.joinable()) {
      // ManagerApi lives on the loop thread; it goes there too.
      on_loop([this] { api_.reset(); });
      work_.reset();
      io_.stop();
      loop_.join();
    }
  }

  // Runs `f` on the loop thread and waits for it.
  void on_loop(std::function<void()> f) {
    std::promise<void> done;
    boost::asio::post(io_, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  Output busctl(std::vector<std::string> args) {
    const std::string out = bus_->dir() + "/busctl-" + std::to_string(busctl_runs_++) + ".out";
    std::vector<std::string> argv = {busctl_, "--address=" + bus_->address(), "--timeout=10"};
    argv.insert(argv.end(), args.begin(), args.end());
    Output o;
    auto child = proc::spawn(spawn_options(argv, out));
    if (!child) {
      o.text = child.error().message;
      return o;
    }
    auto st = proc::wait_for(*child, 20000ms);
    o.status = st ? *st : proc::stop(*child, 100ms);
    o.text = read_text(out);
    return o;
  }

  Output call(const std::string& method, std::vector<std::string> args = {}) {
    std::vector<std::string> argv = {"call", kServiceName, kManagerPath, kManagerInterface, method};
    argv.insert(argv.end(), args.begin(), args.end());
    return busctl(argv);
  }

  // A second, ordinary client on the private bus, owned by the test thread.
  std::unique_ptr<sd_bus, BusUnref> client() {
    sd_bus* b = nullptr;
    EXPECT_GE(sd_bus_new(&b), 0);
    std::unique_ptr<sd_bus, BusUnref> bus(b);
    EXPECT_GE(sd_bus_set_address(b, bus_->address().c_str()), 0);
    EXPECT_GE(sd_bus_set_bus_client(b, 1), 0);
    EXPECT_GE(sd_bus_start(b), 0);
    return bus;
  }

  FakeBackend backend_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      boost::asio::make_work_guard(io_)};
  std::unique_ptr<PrivateBus> bus_;
  std::unique_ptr<ManagerApi> api_;
  std::thread loop_;
  std::string busctl_;
  int busctl_runs_ = 0;
};

TEST_F(ManagerApiTest, ListDriversThroughBusctl) {
  auto o = call("ListDrivers");
  ASSERT_TRUE(o.ok()) << o.text;
  auto t = tokens(o.text);
  // a(ssisus) 2 then six fields per driver.
  ASSERT_EQ(t.size(), 2u + 2 * 6) << o.text;
  EXPECT_EQ(t[0], "a(ssisus)");
  EXPECT_EQ(t[1], "2");
  EXPECT_EQ(std::vector<std::string>(t.begin() + 2, t.begin() + 8),
            (std::vector<std::string>{"net-0", "net", "4242", "running", "0", ""}));
  EXPECT_EQ(
      std::vector<std::string>(t.begin() + 8, t.end()),
      (std::vector<std::string>{"blk0", "blk", "777", "restarting", "3", "crashed (SIGSEGV)"}));
}

TEST_F(ManagerApiTest, DomainsAndOutages) {
  auto o = call("ListDomains");
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"a(sus)", "1", "web", "1", "running"}));

  o = call("ListOutages", {"s", ""});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"a(sstt)", "1", "blk0", "crashed (SIGSEGV)",
                                                      "120", "45000"}));
  o = call("ListOutages", {"s", "net-0"});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"a(sstt)", "0"}));

  o = call("CreateDomain", {"s", "/etc/axolotl/guest1.toml"});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"s", "guest1"}));
  // The same with the choice for a name whose vTPM state remains.
  o = call("CreateDomainWithVtpmState", {"ss", "/etc/axolotl/guest1.toml", "keep"});
  ASSERT_TRUE(o.ok()) << o.text;
  o = call("CreateDomainWithVtpmState", {"ss", "/etc/axolotl/guest1.toml", "maybe"});
  EXPECT_FALSE(o.ok());
  EXPECT_NE(o.text.find("vtpm_state must be keep or new, not 'maybe'"), std::string::npos)
      << o.text;
  o = call("DestroyDomain", {"s", "web"});
  EXPECT_TRUE(o.ok()) << o.text;
  o = call("RestartDriver", {"s", "blk0"});
  EXPECT_TRUE(o.ok()) << o.text;
  o = call("KillDriver", {"ss", "net-0", "STOP"});
  EXPECT_TRUE(o.ok()) << o.text;
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.calls,
            (std::vector<std::string>{"create /etc/axolotl/guest1.toml",
                                      "create /etc/axolotl/guest1.toml keep", "destroy web",
                                      "restart blk0", "kill net-0 STOP"}));
}

// A domain call the backend answers later (the hypervisor is still creating
// a domain) holds up nothing: other calls are answered meanwhile, and the
// held one gets its answer when the backend gives it.
TEST_F(ManagerApiTest, ADomainCallAnsweredLaterHoldsUpNothing) {
  {
    std::lock_guard l(backend_.mu);
    backend_.hold = true;
  }
  auto pending = std::async(std::launch::async, [this] { return call("ListDomains"); });
  // Held: ListDrivers still answers (busctl's own timeout is 10 s).
  for (int i = 0; i < 200; ++i) {
    std::lock_guard l(backend_.mu);
    if (!backend_.held.empty()) break;
    std::this_thread::sleep_for(10ms);
  }
  auto o = call("ListDrivers");
  EXPECT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(pending.wait_for(0ms), std::future_status::timeout)
      << "answered before the backend did";
  on_loop([this] {
    std::vector<std::function<void()>> answers;
    {
      std::lock_guard l(backend_.mu);
      backend_.domains.push_back({"db", 2, "attaching"});
      answers.swap(backend_.held);
      backend_.hold = false;
    }
    ASSERT_EQ(answers.size(), 1u);
    answers[0]();
  });
  o = pending.get();
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"a(sus)", "2", "web", "1", "running", "db",
                                                      "2", "attaching"}));
}

TEST_F(ManagerApiTest, BackendErrorsReachTheCaller) {
  auto o = call("KillDriver", {"ss", "nosuch", "KILL"});
  EXPECT_FALSE(o.ok());
  EXPECT_NE(o.text.find("no driver named 'nosuch'"), std::string::npos) << o.text;

  o = call("CreateDomain", {"s", "/tmp/bad.toml"});
  EXPECT_FALSE(o.ok());
  EXPECT_NE(o.text.find("no [domain] table"), std::string::npos) << o.text;

  // Rejected at the API boundary; the backend never sees it.
  o = call("KillDriver", {"ss", "net-0", "HUP"});
  EXPECT_FALSE(o.ok());
  EXPECT_NE(o.text.find("unknown signal 'HUP'"), std::string::npos) << o.text;
  {
    std::lock_guard l(backend_.mu);
    EXPECT_EQ(backend_.calls,
              (std::vector<std::string>{"kill nosuch KILL", "create /tmp/bad.toml"}));
  }

  // busctl prints only the message; check the error name with sd-bus.
  auto c = client();
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(c.get(), kServiceName, kManagerPath, kManagerInterface,
                             "DestroyDomain", &err, &reply, "s", "nope");
  std::unique_ptr<sd_bus_message, MessageUnref> keep(reply);
  EXPECT_LT(r, 0);
  EXPECT_STREQ(err.name, kErrorFailed);
  EXPECT_STREQ(err.message, "no domain named 'nope'");
  sd_bus_error_free(&err);
  r = sd_bus_call_method(c.get(), kServiceName, kManagerPath, kManagerInterface, "KillDriver", &err,
                         nullptr, "ss", "net-0", "TERM");
  EXPECT_LT(r, 0);
  EXPECT_STREQ(err.name, SD_BUS_ERROR_INVALID_ARGS);
  sd_bus_error_free(&err);
}

TEST_F(ManagerApiTest, TheCallerReachesThePolicyAndADenialIsAccessDenied) {
  auto c = client();
  const char* own = nullptr;
  ASSERT_GE(sd_bus_get_unique_name(c.get(), &own), 0);
  sd_bus_error err = SD_BUS_ERROR_NULL;
  int r = sd_bus_call_method(c.get(), kServiceName, kManagerPath, kManagerInterface, "KillDriver",
                             &err, nullptr, "ss", "guarded", "KILL");
  EXPECT_LT(r, 0);
  EXPECT_STREQ(err.name, SD_BUS_ERROR_ACCESS_DENIED);
  EXPECT_STREQ(err.message, "denied by policy: uid 0 may not kill driver guarded");
  sd_bus_error_free(&err);
  std::lock_guard l(backend_.mu);
  const policy::Subject& who = backend_.last_caller;
  EXPECT_EQ(who.kind, policy::Kind::kOperator);
  EXPECT_EQ(who.uid, int(::geteuid()));
  EXPECT_EQ(who.via, "dbus");
  ASSERT_FALSE(who.gids.empty());
  EXPECT_EQ(who.gids[0], int(::getegid()));
  EXPECT_NE(std::find(who.dbus_names.begin(), who.dbus_names.end(), std::string(own)),
            who.dbus_names.end());
}

TEST_F(ManagerApiTest, DriverObjectProperties) {
  // "net-0" holds a '-', which an object path cannot: it is escaped.
  const std::string net = std::string(kDriverPathPrefix) + "/net_2d0";
  auto o = busctl({"get-property", kServiceName, net, kDriverInterface, "Name", "Kind", "Pid",
                   "State", "Restarts", "LastFailure", "UptimeSec", "HeartbeatLagMs"});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text),
            (std::vector<std::string>{"s", "net-0", "s", "net", "i", "4242", "s", "running", "u",
                                      "0", "s", "", "t", "17", "d", "1.5"}));

  // Read at call time, not cached.
  {
    std::lock_guard l(backend_.mu);
    backend_.drivers[1].state = "running";
  }
  o = busctl({"get-property", kServiceName, std::string(kDriverPathPrefix) + "/blk0",
              kDriverInterface, "State"});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_EQ(tokens(o.text), (std::vector<std::string>{"s", "running"}));

  o = busctl({"get-property", kServiceName, std::string(kDriverPathPrefix) + "/gone",
              kDriverInterface, "State"});
  EXPECT_FALSE(o.ok()) << o.text;

  o = busctl({"tree", kServiceName});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_NE(o.text.find("/org/axolotl/Driver/net_2d0"), std::string::npos) << o.text;
  EXPECT_NE(o.text.find("/org/axolotl/Driver/blk0"), std::string::npos) << o.text;
  EXPECT_NE(o.text.find("/org/axolotl/Manager1"), std::string::npos) << o.text;
}

TEST_F(ManagerApiTest, Introspection) {
  auto o = busctl({"introspect", kServiceName, kManagerPath});
  ASSERT_TRUE(o.ok()) << o.text;
  for (const char* want :
       {"org.axolotl.Manager1", ".ListDomains", ".CreateDomain", ".CreateDomainWithVtpmState",
        ".DestroyDomain", ".ListDrivers", ".KillDriver", ".RestartDriver", ".ListOutages",
        ".DriverFailed", ".DriverRestarted", ".DomainStateChanged", "a(ssisus)", "a(sstt)"})
    EXPECT_NE(o.text.find(want), std::string::npos) << want << " missing from\n" << o.text;

  o = busctl({"introspect", kServiceName, std::string(kDriverPathPrefix) + "/blk0"});
  ASSERT_TRUE(o.ok()) << o.text;
  for (const char* want :
       {"org.axolotl.Driver1", ".HeartbeatLagMs", ".LastFailure", ".Pid", "emits-change", "const"})
    EXPECT_NE(o.text.find(want), std::string::npos) << want << " missing from\n" << o.text;

  // The raw XML carries the argument names.
  o = busctl(
      {"call", kServiceName, kManagerPath, "org.freedesktop.DBus.Introspectable", "Introspect"});
  ASSERT_TRUE(o.ok()) << o.text;
  EXPECT_NE(o.text.find("name=\\\"outage_us\\\""), std::string::npos) << o.text;
}

// Collects signals the client's match delivers.
struct Seen {
  std::vector<std::string> members;
  std::string last_args;
};

int on_signal(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* seen = static_cast<Seen*>(userdata);
  seen->members.push_back(sd_bus_message_get_member(m));
  if (std::string_view(sd_bus_message_get_member(m)) == "DriverRestarted") {
    const char* name = nullptr;
    uint32_t restarts = 0;
    uint64_t outage = 0;
    if (sd_bus_message_read(m, "sut", &name, &restarts, &outage) >= 0)
      seen->last_args =
          std::string(name) + " " + std::to_string(restarts) + " " + std::to_string(outage);
  }
  return 0;
}

// Processes the client connection until `done` or ten seconds pass.
bool pump_until(sd_bus* bus, const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    int r = sd_bus_process(bus, nullptr);
    if (r < 0) return false;
    if (r == 0) sd_bus_wait(bus, 100000);
  }
  return true;
}

TEST_F(ManagerApiTest, SignalsReachSubscribers) {
  auto c = client();
  Seen seen;
  sd_bus_slot* raw = nullptr;
  ASSERT_GE(sd_bus_match_signal(c.get(), &raw, kServiceName, kManagerPath, kManagerInterface,
                                nullptr, on_signal, &seen),
            0);
  std::unique_ptr<sd_bus_slot, SlotUnref> slot(raw);
  on_loop([this] {
    api_->emit_driver_failed("blk0", "restart budget exhausted");
    api_->emit_driver_restarted("net-0", 2, 31337);
    api_->emit_domain_state_changed("web", "paused");
  });
  ASSERT_TRUE(pump_until(c.get(), [&] { return seen.members.size() >= 3; }));
  EXPECT_EQ(seen.members,
            (std::vector<std::string>{"DriverFailed", "DriverRestarted", "DomainStateChanged"}));
  EXPECT_EQ(seen.last_args, "net-0 2 31337");
}

TEST_F(ManagerApiTest, BusctlMonitorSeesSignal) {
  // The real client again: busctl monitor prints the signal it saw.
  const std::string out = bus_->dir() + "/monitor.out";
  auto mon = proc::spawn(spawn_options({busctl_, "--address=" + bus_->address(), "monitor",
                                        "--match=type='signal',member='DriverFailed'"},
                                       out));
  ASSERT_TRUE(mon) << mon.error().message;
  // Until the monitor is attached, signals are lost; emit until one shows.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    on_loop([this] { api_->emit_driver_failed("blk0", "hang"); });
    std::this_thread::sleep_for(100ms);
    seen = read_text(out).find("Member=DriverFailed") != std::string::npos;
  }
  proc::stop(*mon, 1000ms);
  EXPECT_TRUE(seen) << read_text(out);
}

TEST_F(ManagerApiTest, PropertyAndObjectChangesAreAnnounced) {
  auto c = client();
  std::vector<std::string> events;
  // "PropertiesChanged PATH Name,Name" or "InterfacesAdded|Removed PATH".
  auto record = [](sd_bus_message* m, void* userdata, sd_bus_error*) -> int {
    std::string e = sd_bus_message_get_member(m);
    if (e == "PropertiesChanged") {
      e += std::string(" ") + sd_bus_message_get_path(m) + " ";
      const char* name = nullptr;
      sd_bus_message_skip(m, "s");
      sd_bus_message_enter_container(m, 'a', "{sv}");
      while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
        sd_bus_message_read(m, "s", &name);
        sd_bus_message_skip(m, "v");
        sd_bus_message_exit_container(m);
        e += std::string(name) + ",";
      }
    } else {
      const char* path = nullptr;  // the object manager's signals name the object
      sd_bus_message_read(m, "o", &path);
      e += std::string(" ") + (path ? path : "?");
    }
    static_cast<std::vector<std::string>*>(userdata)->push_back(e);
    return 0;
  };
  sd_bus_slot *a = nullptr, *b = nullptr;
  ASSERT_GE(
      sd_bus_match_signal(c.get(), &a, kServiceName, nullptr, "org.freedesktop.DBus.Properties",
                          "PropertiesChanged", record, &events),
      0);
  ASSERT_GE(sd_bus_match_signal(c.get(), &b, kServiceName, nullptr,
                                "org.freedesktop.DBus.ObjectManager", nullptr, record, &events),
            0);
  std::unique_ptr<sd_bus_slot, SlotUnref> keep_a(a), keep_b(b);
  {
    std::lock_guard l(backend_.mu);
    backend_.drivers[0].heartbeat_lag_ms = 99;  // never announced
    backend_.drivers[1].state = "running";
    backend_.drivers[1].pid = 778;
    backend_.drivers.push_back({"vtpm0", "vtpm", "starting", "", 900, 0, 0, 0});
  }
  on_loop([this] { api_->drivers_changed(); });
  ASSERT_TRUE(pump_until(c.get(), [&] { return events.size() >= 2; }));
  std::sort(events.begin(), events.end());
  // HeartbeatLagMs changed too but is never announced.
  EXPECT_EQ(events,
            (std::vector<std::string>{"InterfacesAdded /org/axolotl/Driver/vtpm0",
                                      "PropertiesChanged /org/axolotl/Driver/blk0 Pid,State,"}));
  events.clear();
  {
    std::lock_guard l(backend_.mu);
    backend_.drivers.pop_back();
  }
  on_loop([this] { api_->drivers_changed(); });
  ASSERT_TRUE(pump_until(c.get(), [&] { return !events.empty(); }));
  EXPECT_EQ(events, (std::vector<std::string>{"InterfacesRemoved /org/axolotl/Driver/vtpm0"}));
}

TEST_F(ManagerApiTest, ConcurrentCallers) {
  // Several clients at once: each call is answered, none waits on another.
  constexpr int kCallers = 12;
  std::vector<proc::Child> kids;
  for (int i = 0; i < kCallers; ++i) {
    auto c =
        proc::spawn(spawn_options({busctl_, "--address=" + bus_->address(), "--timeout=10", "call",
                                   kServiceName, kManagerPath, kManagerInterface, "ListDrivers"},
                                  bus_->dir() + "/caller-" + std::to_string(i) + ".out"));
    ASSERT_TRUE(c) << c.error().message;
    kids.push_back(std::move(*c));
  }
  for (int i = 0; i < kCallers; ++i) {
    auto st = proc::wait_for(kids[i], 20000ms);
    ASSERT_TRUE(st) << "caller " << i << " hung";
    EXPECT_EQ(*st, 0) << read_text(bus_->dir() + "/caller-" + std::to_string(i) + ".out");
  }
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

TEST_F(ManagerApiTest, BusDaemonGoingAwayIsSurvived) {
  bus_.reset();  // stops dbus-daemon
  on_loop([this] {
    api_->emit_driver_failed("blk0", "after the bus went away");
    api_->drivers_changed();
  });
  // The loop must neither stop answering nor spin on the dead socket.
  const double before = cpu_seconds();
  std::this_thread::sleep_for(300ms);
  on_loop([this] { api_->emit_domain_state_changed("web", "running"); });
  std::this_thread::sleep_for(200ms);
  EXPECT_LT(cpu_seconds() - before, 0.25);
}

TEST_F(ManagerApiTest, SecondOwnerIsRefused) {
  boost::asio::io_context other_io;
  FakeBackend other;
  auto api = ManagerApi::start(other_io, bus_->address(), other);
  ASSERT_FALSE(api);
  EXPECT_NE(api.error().message.find("already owned"), std::string::npos) << api.error().message;
}

TEST(ManagerApiStart, BadAddressIsAnError) {
  boost::asio::io_context io;
  FakeBackend backend;
  auto api = ManagerApi::start(io, "unix:path=/nonexistent/axl/bus", backend);
  ASSERT_FALSE(api);
  EXPECT_NE(api.error().message.find("/nonexistent/axl/bus"), std::string::npos)
      << api.error().message;
}

}  // namespace
}  // namespace axl::dbus
