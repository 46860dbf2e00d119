// axl as a client of the supervisor's org.axolotl.Manager1 D-Bus API
// (`axl --bus ADDRESS|system VERB`): the verbs that the API covers go over
// the bus instead of the state dir's control sockets.
#include "cli/bus.h"

#include <systemd/sd-bus.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "common/result.h"

namespace axl::cli {
namespace {

constexpr const char* kService = "org.axolotl";
constexpr const char* kPath = "/org/axolotl/Manager1";
constexpr const char* kInterface = "org.axolotl.Manager1";

struct BusDeleter {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct MsgDeleter {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using BusPtr = std::unique_ptr<sd_bus, BusDeleter>;
using MsgPtr = std::unique_ptr<sd_bus_message, MsgDeleter>;

std::string where(const std::string& bus) { return bus == "system" ? "the system bus" : bus; }

// Connects to `bus` ("system" or an address); a one-line error otherwise.
Result<BusPtr> connect(const std::string& bus) {
  sd_bus* raw = nullptr;
  int r;
  if (bus == "system") {
    r = sd_bus_open_system(&raw);
  } else {
    r = sd_bus_new(&raw);
    if (r >= 0) r = sd_bus_set_address(raw, bus.c_str());
    if (r >= 0) r = sd_bus_set_bus_client(raw, 1);
    if (r >= 0) r = sd_bus_start(raw);
  }
  BusPtr b(raw);
  if (r < 0) return make_error("cannot connect to " + where(bus) + ": " + strerror(-r));
  return b;
}

// Calls Manager1.METHOD; `append` adds the arguments.
template <typename Append>
Result<MsgPtr> call(sd_bus* b, const std::string& bus, const char* method, Append append) {
  sd_bus_message* m = nullptr;
  int r = sd_bus_message_new_method_call(b, &m, kService, kPath, kInterface, method);
  MsgPtr req(m);
  if (r >= 0) r = append(m);
  if (r < 0) return make_error(std::string("cannot build ") + method + ": " + strerror(-r));
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  r = sd_bus_call(b, m, 60 * 1000000ull, &err, &reply);
  MsgPtr rep(reply);
  if (r < 0) {
    std::string msg = err.message ? err.message : strerror(-r);
    if (err.name && !strcmp(err.name, SD_BUS_ERROR_SERVICE_UNKNOWN))
      msg = "no Axolotl supervisor on " + where(bus) + " (is the host up with --bus?)";
    sd_bus_error_free(&err);
    return make_error(msg);
  }
  return rep;
}

auto no_args = [](sd_bus_message*) { return 0; };

int bad_reply(const char* method, int r) {
  return fail(std::string("malformed ") + method + " reply: " + strerror(-r));
}

}  // namespace

int bus_list(const std::string& bus) {
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "ListDomains", no_args);
  if (!rep) return fail(rep.error().message);
  sd_bus_message* m = rep->get();
  int r = sd_bus_message_enter_container(m, 'a', "(sus)");
  if (r < 0) return bad_reply("ListDomains", r);
  printf("%-20s %5s  %s\n", "Name", "ID", "State");
  const char *name, *state;
  uint32_t id;
  while ((r = sd_bus_message_read(m, "(sus)", &name, &id, &state)) > 0)
    printf("%-20s %5u  %s\n", name, id, state);
  if (r < 0) return bad_reply("ListDomains", r);
  return 0;
}

int bus_create(const std::string& bus, const std::string& config_path) {
  // The supervisor reads the file itself, from its own working directory.
  std::error_code ec;
  std::string abs = std::filesystem::absolute(config_path, ec).string();
  if (ec) return fail("bad config path " + config_path + ": " + ec.message());
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "CreateDomain",
                  [&](sd_bus_message* m) { return sd_bus_message_append(m, "s", abs.c_str()); });
  if (!rep) return fail(rep.error().message);
  const char* name = nullptr;
  if (int r = sd_bus_message_read(rep->get(), "s", &name); r < 0)
    return bad_reply("CreateDomain", r);
  printf("created domain %s\n", name);
  return 0;
}

int bus_destroy(const std::string& bus, const std::string& name) {
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "DestroyDomain",
                  [&](sd_bus_message* m) { return sd_bus_message_append(m, "s", name.c_str()); });
  if (!rep) return fail(rep.error().message);
  printf("destroyed domain %s\n", name.c_str());
  return 0;
}

int bus_drivers(const std::string& bus, bool stats) {
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "ListDrivers", no_args);
  if (!rep) return fail(rep.error().message);
  sd_bus_message* m = rep->get();
  int r = sd_bus_message_enter_container(m, 'a', "(ssisus)");
  if (r < 0) return bad_reply("ListDrivers", r);
  printf("%-16s %-4s %8s %-10s %8s  %s\n", "Name", "Kind", "PID", "State", "Restarts",
         "LastFailure");
  const char *name, *kind, *state, *last;
  int32_t pid;
  uint32_t restarts;
  while ((r = sd_bus_message_read(m, "(ssisus)", &name, &kind, &pid, &state, &restarts, &last)) > 0)
    printf("%-16s %-4s %8d %-10s %8u  %s\n", name, kind, pid, state, restarts, *last ? last : "-");
  if (r < 0) return bad_reply("ListDrivers", r);
  if (!stats) return 0;
  auto out = call(b->get(), bus, "ListOutages",
                  [](sd_bus_message* q) { return sd_bus_message_append(q, "s", ""); });
  if (!out) return fail(out.error().message);
  m = out->get();
  if ((r = sd_bus_message_enter_container(m, 'a', "(sstt)")) < 0)
    return bad_reply("ListOutages", r);
  printf("\n%-16s %12s %12s  %s\n", "Driver", "Detect(us)", "Outage(us)", "Cause");
  const char *drv, *cause;
  uint64_t detect_us, outage_us;
  while ((r = sd_bus_message_read(m, "(sstt)", &drv, &cause, &detect_us, &outage_us)) > 0) {
    std::string outage = outage_us ? std::to_string(outage_us) : "pending";
    printf("%-16s %12llu %12s  %s\n", drv, (unsigned long long)detect_us, outage.c_str(), cause);
  }
  if (r < 0) return bad_reply("ListOutages", r);
  return 0;
}

int bus_driver_kill(const std::string& bus, const std::string& name, const std::string& signal) {
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "KillDriver", [&](sd_bus_message* m) {
    return sd_bus_message_append(m, "ss", name.c_str(), signal.c_str());
  });
  if (!rep) return fail(rep.error().message);
  printf("sent SIG%s to driver %s\n", signal.c_str(), name.c_str());
  return 0;
}

int bus_driver_restart(const std::string& bus, const std::string& name) {
  auto b = connect(bus);
  if (!b) return fail(b.error().message);
  auto rep = call(b->get(), bus, "RestartDriver",
                  [&](sd_bus_message* m) { return sd_bus_message_append(m, "s", name.c_str()); });
  if (!rep) return fail(rep.error().message);
  printf("restarting driver %s\n", name.c_str());
  return 0;
}

}  // namespace axl::cli
