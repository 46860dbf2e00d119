// DomainEngine's lifecycle over fakes: a fake QEMU (a script first on PATH
// that stays up, or exits at once when told to), a fake supervisor (the
// vTPM start and stop functions, answered when the test says so) and a
// driver registry with no drivers. Checks that a slow vTPM delays only its
// own domain, that every transition is announced, and that a failed or
// cancelled create leaves nothing behind. Real QEMU and drivers are the
// integration tests' (tests/integration/slow_create.sh and others).
#include "hypervisor/daemon/domain_engine.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "common/fs.h"
#include "common/run_until.h"

namespace axl::hv {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class DomainEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-domain-engine-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/bin");
    fs::create_directories(dir_ + "/guest");
    fs::create_directories(dir_ + "/state");
    // The fake QEMU: up until SIGTERM (then exit 0, as QEMU does), or gone
    // at once with a last word when the domain's name says so.
    const std::string qemu = dir_ + "/bin/qemu-system-x86_64";
    std::ofstream(qemu) << "#!/bin/sh\n"
                           "case \"$*\" in *-name\\ broken*) echo 'qemu: bad option' >&2; exit 1;; "
                           "esac\n"
                           "exec python3 -c 'import os, signal, sys, time\n"
                           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                           // Into its log (qemu.log): it runs in a pid namespace of its
                           // own, where its pid says nothing.
                           "print(\"ready\", flush=True)\n"
                           "time.sleep(60)'\n";
    ::chmod(qemu.c_str(), 0755);
    // QEMU runs as a uid of its own (Domain::qemu_uid): the fake must be
    // reachable by it.
    ::chmod(dir_.c_str(), 0755);
    ::chmod((dir_ + "/bin").c_str(), 0755);
    std::ofstream(dir_ + "/guest/vmlinuz") << "kernel";
    std::ofstream(dir_ + "/guest/initrd.img") << "initrd";
    old_path_ = getenv("PATH") ? getenv("PATH") : "";
    ::setenv("PATH", (dir_ + "/bin:" + old_path_).c_str(), 1);

    VtpmControl vtpm;
    vtpm.start = [this](const std::string& domain, bool, uint32_t,
                        std::function<void(Status)> done) -> std::shared_ptr<control::PendingCall> {
      vtpm_starts_.push_back(domain);
      // What the supervisor binds for a vTPM: its control socket, which the
      // engine connects for QEMU.
      const std::string ctrl = dir_ + "/state/dom/" + domain + "/vtpm.ctrl";
      auto l = wire_stream_listen(ctrl);
      if (l >= 0) vtpm_sockets_.emplace_back(l);
      held_vtpm_.emplace_back(domain, std::move(done));
      return std::make_shared<Cancel>(this, domain);
    };
    vtpm.stop = [this](const std::string& domain) { vtpm_stops_.push_back(domain); };
    engine_ = std::make_unique<DomainEngine>(io_, dir_ + "/state", dir_ + "/guest", drivers_,
                                             DriverSupervision{}, vtpm);
    engine_->on_state_change([this](const std::string& name, const std::string& state) {
      states_[name].push_back(state);
    });
  }
  void TearDown() override {
    engine_.reset();  // stops every fake QEMU, by pid
    ::setenv("PATH", old_path_.c_str(), 1);
    (void)remove_tree(dir_);
  }

  // A held vTPM start the engine cancelled is dropped.
  struct Cancel : control::PendingCall {
    Cancel(DomainEngineTest* t, std::string d) : t(t), domain(std::move(d)) {}
    void cancel() override {
      std::erase_if(t->held_vtpm_, [&](const auto& h) { return h.first == domain; });
      t->vtpm_cancels_.push_back(domain);
    }
    DomainEngineTest* t;
    std::string domain;
  };

  std::string guest(const std::string& name, bool vtpm, const std::string& on_crash = "") {
    return "name = \"" + name + "\"\naccel = \"tcg\"\n" +
           (on_crash.empty() ? "" : "on_crash = \"" + on_crash + "\"\n") +
           (vtpm ? "[vtpm]\nenabled = true\n" : "");
  }

  // Creates a running domain (its vTPM answered at once).
  int running(const std::string& toml, const std::string& name, bool vtpm) {
    auto got = create(toml);
    if (vtpm) answer_vtpm(name, {});
    if (!run_until([&] { return got->has_value(); }) || !got->value().ok()) {
      ADD_FAILURE() << name << " did not start";
      return -1;
    }
    return engine_->find(name)->qemu.pid;
  }

  // create() with its answer kept.
  std::shared_ptr<std::optional<Result<std::string>>> create(const std::string& toml) {
    auto got = std::make_shared<std::optional<Result<std::string>>>();
    engine_->create(toml, dir_, [got](Result<const Domain*> d) {
      if (d)
        got->emplace(std::string((*d)->cfg.name));
      else
        got->emplace(d.error());
    });
    return got;
  }

  void answer_vtpm(const std::string& domain, Status s) {
    for (auto it = held_vtpm_.begin(); it != held_vtpm_.end(); ++it)
      if (it->first == domain) {
        auto done = std::move(it->second);
        held_vtpm_.erase(it);
        return done(std::move(s));
      }
    ADD_FAILURE() << "no vTPM start held for " << domain;
  }

  template <typename F>
  bool run_until(F cond, std::chrono::milliseconds limit = 5000ms) {
    return test_support::run_until(io_, cond, limit);
  }

  const char* state_of(const std::string& name) {
    const Domain* d = engine_->find(name);
    return d ? to_string(d->state) : "gone";
  }

  std::string dir_, old_path_;
  boost::asio::io_context io_;
  DriverRegistry drivers_{io_};
  std::unique_ptr<DomainEngine> engine_;
  std::vector<std::pair<std::string, std::function<void(Status)>>> held_vtpm_;
  std::vector<std::string> vtpm_starts_, vtpm_stops_, vtpm_cancels_;
  std::vector<UniqueFd> vtpm_sockets_;
  static int wire_stream_listen(const std::string& path) {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ::unlink(path.c_str());
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 4) != 0) {
      if (s >= 0) ::close(s);
      return -1;
    }
    return s;
  }
  std::map<std::string, std::vector<std::string>> states_;
};

TEST_F(DomainEngineTest, ASlowVtpmDelaysOnlyItsOwnDomain) {
  auto slow = create(guest("slow", true));
  EXPECT_FALSE(slow->has_value());
  EXPECT_STREQ(state_of("slow"), "vtpm-starting");
  EXPECT_EQ(vtpm_starts_, (std::vector<std::string>{"slow"}));
  // Another domain is created and runs meanwhile.
  auto fast = create(guest("fast", false));
  ASSERT_TRUE(run_until([&] { return fast->has_value(); }));
  ASSERT_TRUE(fast->value().ok()) << fast->value().error().message;
  EXPECT_STREQ(state_of("fast"), "running");
  EXPECT_STREQ(state_of("slow"), "vtpm-starting");
  EXPECT_EQ(engine_->list().size(), 2u);
  // The vTPM listens: the slow one goes on and runs.
  answer_vtpm("slow", {});
  ASSERT_TRUE(run_until([&] { return slow->has_value(); }));
  ASSERT_TRUE(slow->value().ok()) << slow->value().error().message;
  EXPECT_EQ(states_["slow"], (std::vector<std::string>{"preparing", "vtpm-starting", "attaching",
                                                       "starting", "running"}));
  EXPECT_EQ(states_["fast"],
            (std::vector<std::string>{"preparing", "attaching", "starting", "running"}));
}

TEST_F(DomainEngineTest, AFailedVtpmFailsTheCreateAndLeavesNothing) {
  auto got = create(guest("dom", true));
  answer_vtpm("dom", make_error("provisioning failed"));
  ASSERT_TRUE(got->has_value());
  ASSERT_FALSE(got->value().ok());
  EXPECT_EQ(got->value().error().message, "vTPM: provisioning failed");
  EXPECT_STREQ(state_of("dom"), "gone");
  EXPECT_FALSE(fs::exists(dir_ + "/state/dom/dom"));
  EXPECT_EQ(states_["dom"].back(), "failed");
  EXPECT_TRUE(vtpm_stops_.empty());  // it never ran
}

TEST_F(DomainEngineTest, ADestroyWhileTheVtpmStartsCancelsTheCreate) {
  auto got = create(guest("dom", true));
  std::optional<Status> destroyed;
  engine_->destroy("dom", [&](const Status& s) { destroyed = s; });
  ASSERT_TRUE(run_until([&] { return destroyed.has_value(); }));
  EXPECT_TRUE(destroyed->ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(got->value().error().message, "domain 'dom' was destroyed while vtpm-starting");
  EXPECT_EQ(vtpm_cancels_, (std::vector<std::string>{"dom"}));
  // The supervisor may start it yet: it is told to stop it.
  EXPECT_EQ(vtpm_stops_, (std::vector<std::string>{"dom"}));
  EXPECT_STREQ(state_of("dom"), "gone");
  EXPECT_EQ(states_["dom"].back(), "destroyed");
  EXPECT_FALSE(fs::exists(dir_ + "/state/dom/dom"));
}

TEST_F(DomainEngineTest, AQemuThatExitsAtOnceFailsTheCreateWithItsLastWord) {
  auto got = create(guest("broken", false));
  ASSERT_TRUE(run_until([&] { return got->has_value(); }));
  ASSERT_FALSE(got->value().ok());
  EXPECT_EQ(got->value().error().message, "QEMU failed to start (exited 1): qemu: bad option");
  EXPECT_STREQ(state_of("broken"), "gone");
  EXPECT_EQ(states_["broken"].back(), "failed");
}

TEST_F(DomainEngineTest, AGuestThatStopsByItselfIsShutOffAndADestroyRemovesIt) {
  auto got = create(guest("dom", true));
  answer_vtpm("dom", {});
  ASSERT_TRUE(run_until([&] { return got->has_value(); }));
  ASSERT_TRUE(got->value().ok()) << got->value().error().message;
  const Domain* d = engine_->find("dom");
  ASSERT_NE(d, nullptr);
  // Once its SIGTERM handler is in place (a loaded host starts python slowly).
  ASSERT_TRUE(run_until([&] {
    auto log = config::read_file(d->dir + "/qemu.log");
    return log && log->find("ready\n") != std::string::npos;
  }));
  ASSERT_EQ(::kill(d->qemu.pid, SIGTERM), 0);  // the guest powers off
  ASSERT_TRUE(run_until([&] { return std::string(state_of("dom")) == "shutoff"; }));
  EXPECT_EQ(states_["dom"].back(), "shutoff");
  EXPECT_EQ(vtpm_stops_, (std::vector<std::string>{"dom"}));  // its vTPM goes with it
  std::optional<Status> destroyed;
  engine_->destroy("dom", [&](const Status& s) { destroyed = s; });
  ASSERT_TRUE(run_until([&] { return destroyed.has_value(); }));
  EXPECT_TRUE(destroyed->ok());
  EXPECT_EQ(states_["dom"].back(), "destroyed");
  EXPECT_STREQ(state_of("dom"), "gone");
}

// A QEMU that is killed (not a guest powering off) is a crash; by default
// the domain is then destroyed.
TEST_F(DomainEngineTest, ACrashDestroysTheDomainByDefault) {
  const int qemu = running(guest("dom", false), "dom", false);
  ASSERT_GT(qemu, 0);
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  ASSERT_TRUE(run_until([&] { return std::string(state_of("dom")) == "gone"; }));
  EXPECT_EQ(states_["dom"], (std::vector<std::string>{"preparing", "attaching", "starting",
                                                      "running", "crashed", "destroyed"}));
  EXPECT_FALSE(fs::exists(dir_ + "/state/dom/dom"));
}

TEST_F(DomainEngineTest, APreservedCrashKeepsItsVtpmUntilDestroyed) {
  const int qemu = running(guest("dom", true, "preserve"), "dom", true);
  ASSERT_GT(qemu, 0);
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  ASSERT_TRUE(run_until([&] { return std::string(state_of("dom")) == "crashed"; }));
  EXPECT_EQ(engine_->find("dom")->crash_cause, "QEMU killed by " + std::string(strsignal(SIGKILL)));
  EXPECT_TRUE(vtpm_stops_.empty());
  EXPECT_TRUE(fs::exists(dir_ + "/state/dom/dom"));
  std::optional<Status> destroyed;
  engine_->destroy("dom", [&](const Status& s) { destroyed = s; });
  ASSERT_TRUE(run_until([&] { return destroyed.has_value(); }));
  EXPECT_TRUE(destroyed->ok());
  EXPECT_EQ(vtpm_stops_, (std::vector<std::string>{"dom"}));
  EXPECT_STREQ(state_of("dom"), "gone");
}

// on_crash = "restart": released and created again from its config, vTPM
// included; a QEMU that keeps crashing is preserved after five restarts.
TEST_F(DomainEngineTest, ARestartedCrashBootsAgainUntilItCrashesTooOften) {
  int qemu = running(guest("dom", true, "restart"), "dom", true);
  ASSERT_GT(qemu, 0);
  for (int i = 1; i <= 5; ++i) {
    ASSERT_EQ(::kill(qemu, SIGKILL), 0);
    ASSERT_TRUE(run_until([&] { return !held_vtpm_.empty(); })) << i;
    EXPECT_EQ(vtpm_stops_.size(), size_t(i));  // the old one stopped, a new one asked for
    answer_vtpm("dom", {});
    ASSERT_TRUE(run_until([&] {
      const Domain* d = engine_->find("dom");
      return d && d->state == DomainState::kRunning && d->qemu.pid != qemu;
    })) << i;
    qemu = engine_->find("dom")->qemu.pid;
  }
  EXPECT_EQ(vtpm_starts_.size(), 6u);
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  ASSERT_TRUE(run_until([&] { return std::string(state_of("dom")) == "crashed"; }));
  io_.restart();
  io_.run_for(400ms);                        // a restart would have asked for the vTPM by now
  EXPECT_STREQ(state_of("dom"), "crashed");  // preserved, not restarted a sixth time
  EXPECT_EQ(vtpm_starts_.size(), 6u);
}

TEST_F(DomainEngineTest, BadRequestsAreRefusedWithoutAnyState) {
  auto got = create("name = \"x\"\naccel = \"warp\"\n");
  ASSERT_TRUE(got->has_value());
  EXPECT_FALSE(got->value().ok());
  got = create(guest("dup", false));
  ASSERT_TRUE(run_until([&] { return got->has_value(); }));
  auto again = create(guest("dup", false));
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ(again->value().error().message, "domain 'dup' already exists");
  got = create("name = \"nic\"\n[[nic]]\ndriver = \"net-0\"\nmac = \"52:54:00:00:00:01\"\n");
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(got->value().error().message, "unknown driver 'net-0'");
  std::optional<Status> destroyed;
  engine_->destroy("nope", [&](const Status& s) { destroyed = s; });
  ASSERT_TRUE(destroyed.has_value());
  EXPECT_EQ(destroyed->error().message, "no domain named 'nope'");
  EXPECT_EQ(states_.count("x"), 0u);
  EXPECT_EQ(states_.count("nic"), 0u);
}

}  // namespace
}  // namespace axl::hv
