#include "supervisor/dbus/manager_api.h"

#include <linux/capability.h>
#include <poll.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include <time.h>
#include <unistd.h>
#include <type_traits>

#include <cstdarg>
#include <cstdlib>
#include <memory>
#include <optional>

#include "common/log.h"

namespace axl::dbus {

namespace {

// Messages handed out by sd-bus with a reference we own.
struct MessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;

// A burst of queued messages is handled in slices of this many, so one busy
// client cannot starve the supervisor's other handlers (heartbeats, pidfds).
constexpr int kMessagesPerTurn = 64;

std::string errno_text(int negative_errno) { return strerror(-negative_errno); }

uint64_t monotonic_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

std::string driver_path(const std::string& name) {
  char* raw = nullptr;
  if (sd_bus_path_encode(kDriverPathPrefix, name.c_str(), &raw) < 0) return {};
  std::string path(raw);
  free(raw);
  return path;
}

std::optional<std::string> driver_name(const char* path) {
  char* raw = nullptr;
  if (sd_bus_path_decode(path, kDriverPathPrefix, &raw) <= 0) return std::nullopt;
  std::string name(raw);
  free(raw);
  return name;
}

std::optional<DriverRow> find_driver(ManagerBackend& backend, const char* path) {
  auto name = driver_name(path);
  if (!name) return std::nullopt;
  for (auto& d : backend.list_drivers())
    if (d.name == *name) return d;
  return std::nullopt;
}

int set_failed(sd_bus_error* e, const Error& err) {
  const bool denied = err.message.rfind("denied by policy", 0) == 0;
  return sd_bus_error_set(e, denied ? SD_BUS_ERROR_ACCESS_DENIED : kErrorFailed,
                          err.message.c_str());
}

// Builds a method return whose body is an array of `element` structs, one
// per row, filled in by `append(reply, row)`.
template <typename Rows, typename Append>
int reply_array(sd_bus_message* call, const char* element, const Rows& rows, Append append) {
  sd_bus_message* raw = nullptr;
  int r = sd_bus_message_new_method_return(call, &raw);
  if (r < 0) return r;
  MessagePtr reply(raw);
  r = sd_bus_message_open_container(raw, 'a', element);
  for (auto it = rows.begin(); r >= 0 && it != rows.end(); ++it) r = append(raw, *it);
  if (r >= 0) r = sd_bus_message_close_container(raw);
  if (r < 0) return r;
  return sd_bus_send(nullptr, raw, nullptr);
}

}  // namespace

// A method that changes state learns who calls (sender credentials: euid,
// groups, the names it owns on the bus) and hands that to the backend,
// where the access policy decides (policy/access.h; the built-in policy
// allows root only).  Credentials the bus cannot vouch for are a refusal.
// (docs/policy.md.)
int caller_of(sd_bus_message* m, const char* method, policy::Subject* out, sd_bus_error* e) {
  sd_bus_creds* raw = nullptr;
  const int r = sd_bus_query_sender_creds(
      m,
      SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
          SD_BUS_CREDS_WELL_KNOWN_NAMES | SD_BUS_CREDS_UNIQUE_NAME | SD_BUS_CREDS_AUGMENT,
      &raw);
  std::unique_ptr<sd_bus_creds, decltype(&sd_bus_creds_unref)> creds(raw, sd_bus_creds_unref);
  uid_t euid = uid_t(-1);
  if (r < 0 || sd_bus_creds_get_euid(raw, &euid) < 0) {
    AXL_WARN("dbus: %s from a caller without credentials refused", method);
    return sd_bus_error_setf(e, SD_BUS_ERROR_ACCESS_DENIED,
                             "%s: the bus did not say who the caller is", method);
  }
  std::vector<int> gids;
  gid_t egid = 0;
  if (sd_bus_creds_get_egid(raw, &egid) >= 0) gids.push_back(int(egid));
  const gid_t* sup = nullptr;
  const int n = sd_bus_creds_get_supplementary_gids(raw, &sup);
  for (int i = 0; i < n; ++i) gids.push_back(int(sup[i]));
  *out = policy::Subject::op(int(euid), std::move(gids), "dbus");
  char** names = nullptr;
  if (sd_bus_creds_get_well_known_names(raw, &names) >= 0 && names)
    for (char** p = names; *p; ++p) out->dbus_names.emplace_back(*p);
  const char* unique = nullptr;
  if (sd_bus_creds_get_unique_name(raw, &unique) >= 0 && unique)
    out->dbus_names.emplace_back(unique);
  return 0;
}

bool is_known_kill_signal(const std::string& s) {
  return s == "KILL" || s == "STOP" || s == "SEGV" || s == "ABRT";
}

// The sd-bus callbacks.  A struct of statics so they can reach ManagerApi's
// private members through one friend declaration.
struct Callbacks {
  static ManagerApi& api(void* userdata) { return *static_cast<ManagerApi*>(userdata); }

  // A method call answered later: the returned completion holds a
  // reference to the call and sends the reply built by `reply(call, value)`
  // (an sd-bus return code), or the error, on the loop. Once the ManagerApi
  // is gone it sends nothing.
  template <typename T, typename Reply>
  static ManagerBackend::Done<T> answer_later(sd_bus_message* m, void* userdata, Reply reply) {
    ManagerApi& self = api(userdata);
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    std::weak_ptr<ManagerApi*> alive = self.alive_;
    return [call, alive, reply](Result<T> result) {
      auto a = alive.lock();
      if (!a || !*a) return;
      int r;
      if (!result) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        set_failed(&e, result.error());
        r = sd_bus_reply_method_error(call.get(), &e);
        sd_bus_error_free(&e);
      } else if constexpr (std::is_void_v<T>) {
        r = reply(call.get());
      } else {
        r = reply(call.get(), result.value());
      }
      if (r < 0) AXL_WARN("dbus: cannot send a reply: %s", errno_text(r).c_str());
      (*a)->schedule_pump();
    };
  }

  static int list_domains(sd_bus_message* m, void* userdata, sd_bus_error*) {
    api(userdata).backend_.list_domains(answer_later<std::vector<DomainRow>>(
        m, userdata, [](sd_bus_message* call, const std::vector<DomainRow>& rows) {
          return reply_array(call, "(sus)", rows, [](sd_bus_message* r, const DomainRow& d) {
            return sd_bus_message_append(r, "(sus)", d.name.c_str(), d.id, d.state.c_str());
          });
        }));
    return 1;  // answered now or later
  }

  static int create_domain(sd_bus_message* m, void* userdata, sd_bus_error* e) {
    return create(m, userdata, e, false);
  }
  // CreateDomainWithVtpmState(config_path, vtpm_state): for a name that had
  // a vTPM before, "keep" it or make a "new" one (axl create --vtpm-state).
  static int create_domain_with_vtpm_state(sd_bus_message* m, void* userdata, sd_bus_error* e) {
    return create(m, userdata, e, true);
  }
  static int create(sd_bus_message* m, void* userdata, sd_bus_error* e, bool with_state) {
    policy::Subject caller;
    if (int c = caller_of(m, with_state ? "CreateDomainWithVtpmState" : "CreateDomain", &caller, e);
        c < 0)
      return c;
    const char* path = nullptr;
    const char* state = "";
    int r = with_state ? sd_bus_message_read(m, "ss", &path, &state)
                       : sd_bus_message_read(m, "s", &path);
    if (r < 0) return r;
    if (!*path) return sd_bus_error_set(e, SD_BUS_ERROR_INVALID_ARGS, "empty config path");
    if (with_state && std::string_view(state) != "keep" && std::string_view(state) != "new")
      return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
                               "vtpm_state must be keep or new, not '%s'", state);
    api(userdata).backend_.create_domain(
        caller, path, state,
        answer_later<std::string>(m, userdata, [](sd_bus_message* call, const std::string& n) {
          return sd_bus_reply_method_return(call, "s", n.c_str());
        }));
    return 1;
  }

  static int destroy_domain(sd_bus_message* m, void* userdata, sd_bus_error* e) {
    policy::Subject caller;
    if (int c = caller_of(m, "DestroyDomain", &caller, e); c < 0) return c;
    const char* name = nullptr;
    int r = sd_bus_message_read(m, "s", &name);
    if (r < 0) return r;
    api(userdata).backend_.destroy_domain(caller, name,
                                          answer_later<void>(m, userdata, [](sd_bus_message* call) {
                                            return sd_bus_reply_method_return(call, "");
                                          }));
    return 1;
  }

  static int list_drivers(sd_bus_message* m, void* userdata, sd_bus_error*) {
    return reply_array(m, "(ssisus)", api(userdata).backend_.list_drivers(),
                       [](sd_bus_message* r, const DriverRow& d) {
                         return sd_bus_message_append(r, "(ssisus)", d.name.c_str(), d.kind.c_str(),
                                                      d.pid, d.state.c_str(), d.restarts,
                                                      d.last_failure.c_str());
                       });
  }

  static int kill_driver(sd_bus_message* m, void* userdata, sd_bus_error* e) {
    policy::Subject caller;
    if (int c = caller_of(m, "KillDriver", &caller, e); c < 0) return c;
    const char *name = nullptr, *signal = nullptr;
    int r = sd_bus_message_read(m, "ss", &name, &signal);
    if (r < 0) return r;
    if (!is_known_kill_signal(signal))
      return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
                               "unknown signal '%s' (want KILL, STOP, SEGV or ABRT)", signal);
    if (auto st = api(userdata).backend_.kill_driver(caller, name, signal); !st)
      return set_failed(e, st.error());
    return sd_bus_reply_method_return(m, "");
  }

  static int restart_driver(sd_bus_message* m, void* userdata, sd_bus_error* e) {
    policy::Subject caller;
    if (int c = caller_of(m, "RestartDriver", &caller, e); c < 0) return c;
    const char* name = nullptr;
    int r = sd_bus_message_read(m, "s", &name);
    if (r < 0) return r;
    if (auto st = api(userdata).backend_.restart_driver(caller, name); !st)
      return set_failed(e, st.error());
    return sd_bus_reply_method_return(m, "");
  }

  static int list_outages(sd_bus_message* m, void* userdata, sd_bus_error*) {
    const char* driver = nullptr;
    int r = sd_bus_message_read(m, "s", &driver);
    if (r < 0) return r;
    return reply_array(m, "(sstt)", api(userdata).backend_.outages(driver),
                       [](sd_bus_message* r, const OutageRow& o) {
                         return sd_bus_message_append(r, "(sstt)", o.driver.c_str(),
                                                      o.cause.c_str(), o.detect_us, o.outage_us);
                       });
  }

  // Fallback vtable lookup: a path under /org/axolotl/Driver is an object
  // only while the backend knows a driver of that name.
  static int find_driver_object(sd_bus*, const char* path, const char*, void* userdata,
                                void** found, sd_bus_error*) {
    if (!find_driver(api(userdata).backend_, path)) return 0;
    *found = userdata;
    return 1;
  }

  static int enumerate_drivers(sd_bus*, const char*, void* userdata, char*** nodes, sd_bus_error*) {
    auto rows = api(userdata).backend_.list_drivers();
    // sd-bus frees the array and each string with free().
    auto** out = static_cast<char**>(calloc(rows.size() + 1, sizeof(char*)));
    if (!out) return -ENOMEM;
    size_t n = 0;
    for (auto& d : rows) {
      auto path = driver_path(d.name);
      if (path.empty()) continue;
      if (!(out[n] = strdup(path.c_str()))) {
        for (size_t i = 0; i < n; ++i) free(out[i]);
        free(out);
        return -ENOMEM;
      }
      ++n;
    }
    *nodes = out;
    return 0;
  }

  static int policy_property(sd_bus*, const char*, const char*, const char* property,
                             sd_bus_message* reply, void* userdata, sd_bus_error*) {
    ManagerBackend& b = api(userdata).backend_;
    const uint64_t v =
        std::string_view(property) == "PolicyAllowed" ? b.policy_allowed() : b.policy_denied();
    return sd_bus_message_append(reply, "t", v);
  }

  static int driver_property(sd_bus*, const char* path, const char*, const char* property,
                             sd_bus_message* reply, void* userdata, sd_bus_error* e) {
    auto d = find_driver(api(userdata).backend_, path);
    if (!d) return sd_bus_error_setf(e, SD_BUS_ERROR_UNKNOWN_OBJECT, "no driver at %s", path);
    const std::string_view p = property;
    if (p == "Name") return sd_bus_message_append(reply, "s", d->name.c_str());
    if (p == "Kind") return sd_bus_message_append(reply, "s", d->kind.c_str());
    if (p == "Pid") return sd_bus_message_append(reply, "i", d->pid);
    if (p == "State") return sd_bus_message_append(reply, "s", d->state.c_str());
    if (p == "Restarts") return sd_bus_message_append(reply, "u", d->restarts);
    if (p == "LastFailure") return sd_bus_message_append(reply, "s", d->last_failure.c_str());
    if (p == "UptimeSec") return sd_bus_message_append(reply, "t", d->uptime_s);
    if (p == "HeartbeatLagMs") return sd_bus_message_append(reply, "d", d->heartbeat_lag_ms);
    return sd_bus_error_setf(e, SD_BUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property);
  }
};

namespace {

// sd-bus lets every call through (SD_BUS_VTABLE_UNPRIVILEGED): reading is
// open to anyone the bus policy lets through, and a method that changes
// state hands its caller to the access policy (caller_of), on every bus and with one
// message, instead of sd-bus's CAP_SYS_ADMIN check, which applies only on
// buses it does not trust.
constexpr uint64_t kReadOnly = SD_BUS_VTABLE_UNPRIVILEGED;
constexpr uint64_t kChecked = SD_BUS_VTABLE_UNPRIVILEGED;

const sd_bus_vtable kManagerVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("ListDomains", "", "", "a(sus)", SD_BUS_PARAM(domains),
                             Callbacks::list_domains, kReadOnly),
    SD_BUS_METHOD_WITH_NAMES("CreateDomain", "s", SD_BUS_PARAM(config_path), "s",
                             SD_BUS_PARAM(name), Callbacks::create_domain, kChecked),
    SD_BUS_METHOD_WITH_NAMES(
        "CreateDomainWithVtpmState", "ss", SD_BUS_PARAM(config_path) SD_BUS_PARAM(vtpm_state), "s",
        SD_BUS_PARAM(name), Callbacks::create_domain_with_vtpm_state, kChecked),
    SD_BUS_METHOD_WITH_NAMES("DestroyDomain", "s", SD_BUS_PARAM(name), "", "",
                             Callbacks::destroy_domain, kChecked),
    SD_BUS_METHOD_WITH_NAMES("ListDrivers", "", "", "a(ssisus)", SD_BUS_PARAM(drivers),
                             Callbacks::list_drivers, kReadOnly),
    SD_BUS_METHOD_WITH_NAMES("KillDriver", "ss", SD_BUS_PARAM(name) SD_BUS_PARAM(signal), "", "",
                             Callbacks::kill_driver, kChecked),
    SD_BUS_METHOD_WITH_NAMES("RestartDriver", "s", SD_BUS_PARAM(name), "", "",
                             Callbacks::restart_driver, kChecked),
    SD_BUS_METHOD_WITH_NAMES("ListOutages", "s", SD_BUS_PARAM(driver), "a(sstt)",
                             SD_BUS_PARAM(outages), Callbacks::list_outages, kReadOnly),
    // Counted, not announced: read them when needed.
    SD_BUS_PROPERTY("PolicyAllowed", "t", Callbacks::policy_property, 0, 0),
    SD_BUS_PROPERTY("PolicyDenied", "t", Callbacks::policy_property, 0, 0),
    SD_BUS_SIGNAL_WITH_NAMES("DriverFailed", "ss", SD_BUS_PARAM(name) SD_BUS_PARAM(reason), 0),
    SD_BUS_SIGNAL_WITH_NAMES("DriverRestarted", "sut",
                             SD_BUS_PARAM(name) SD_BUS_PARAM(restarts) SD_BUS_PARAM(outage_us), 0),
    SD_BUS_SIGNAL_WITH_NAMES("DomainStateChanged", "ss", SD_BUS_PARAM(name) SD_BUS_PARAM(state), 0),
    SD_BUS_VTABLE_END,
};

// Name and Kind never change for an object's life; Pid, State, Restarts and
// LastFailure are announced by drivers_changed(); UptimeSec and
// HeartbeatLagMs move continuously, so they are read on demand only
// (introspection marks them EmitsChangedSignal=false).
constexpr uint64_t kConst = SD_BUS_VTABLE_PROPERTY_CONST;
constexpr uint64_t kEmits = SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE;

const sd_bus_vtable kDriverVtable[] = {
    SD_BUS_VTABLE_START(SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_PROPERTY("Name", "s", Callbacks::driver_property, 0, kConst),
    SD_BUS_PROPERTY("Kind", "s", Callbacks::driver_property, 0, kConst),
    SD_BUS_PROPERTY("Pid", "i", Callbacks::driver_property, 0, kEmits),
    SD_BUS_PROPERTY("State", "s", Callbacks::driver_property, 0, kEmits),
    SD_BUS_PROPERTY("Restarts", "u", Callbacks::driver_property, 0, kEmits),
    SD_BUS_PROPERTY("LastFailure", "s", Callbacks::driver_property, 0, kEmits),
    SD_BUS_PROPERTY("UptimeSec", "t", Callbacks::driver_property, 0, 0),
    SD_BUS_PROPERTY("HeartbeatLagMs", "d", Callbacks::driver_property, 0, 0),
    SD_BUS_VTABLE_END,
};

}  // namespace

void ManagerApi::BusUnref::operator()(sd_bus* b) const {
  // Flush so signals queued just before shutdown still go out.
  sd_bus_flush_close_unref(b);
}

void ManagerApi::SlotUnref::operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }

ManagerApi::ManagerApi(boost::asio::io_context& io, BusPtr bus, ManagerBackend& backend)
    : io_(io),
      backend_(backend),
      bus_(std::move(bus)),
      watch_(io),
      timer_(io),
      alive_(std::make_shared<ManagerApi*>(this)) {}

ManagerApi::~ManagerApi() {
  alive_.reset();
  boost::system::error_code ec;
  // The fd belongs to sd-bus: stop watching it without closing it.
  if (watch_.is_open()) {
    watch_.cancel(ec);
    watch_.release();
  }
  timer_.cancel();
  slots_.clear();  // unexport before the connection goes
  bus_.reset();
}

Result<std::unique_ptr<ManagerApi>> ManagerApi::start(boost::asio::io_context& io,
                                                      const std::string& address,
                                                      ManagerBackend& backend) {
  sd_bus* raw = nullptr;
  int r;
  if (address.empty()) {
    r = sd_bus_open_system_with_description(&raw, "axolotl-manager");
    if (r < 0) return make_error("cannot connect to the system bus: " + errno_text(r));
  } else {
    r = sd_bus_new(&raw);
    if (r < 0) return make_error("sd_bus_new: " + errno_text(r));
  }
  BusPtr bus(raw);
  if (!address.empty()) {
    if ((r = sd_bus_set_address(raw, address.c_str())) < 0 ||
        (r = sd_bus_set_bus_client(raw, 1)) < 0 || (r = sd_bus_start(raw)) < 0)
      return make_error("cannot connect to bus " + address + ": " + errno_text(r));
  }
  std::unique_ptr<ManagerApi> api(new ManagerApi(io, std::move(bus), backend));
  if (auto st = api->export_objects(); !st) return st.error();
  if (auto st = api->request_name(); !st) return st.error();
  r = sd_bus_get_fd(raw);
  if (r < 0) return make_error("sd_bus_get_fd: " + errno_text(r));
  boost::system::error_code ec;
  api->watch_.assign(r, ec);
  if (ec) return make_error("cannot watch the bus fd: " + ec.message());
  for (auto& d : backend.list_drivers()) api->last_drivers_.emplace(d.name, d);
  // Replies to anything already queued are sent once the loop runs.
  api->schedule_pump();
  return api;
}

Status ManagerApi::export_objects() {
  sd_bus* bus = bus_.get();
  sd_bus_slot* slot = nullptr;
  auto keep = [&](int r, const char* what) -> Status {
    if (r < 0) return make_error(std::string("cannot export ") + what + ": " + errno_text(r));
    slots_.emplace_back(slot);
    slot = nullptr;
    return {};
  };
  Status st = keep(
      sd_bus_add_object_vtable(bus, &slot, kManagerPath, kManagerInterface, kManagerVtable, this),
      kManagerInterface);
  if (st)
    st = keep(sd_bus_add_fallback_vtable(bus, &slot, kDriverPathPrefix, kDriverInterface,
                                         kDriverVtable, Callbacks::find_driver_object, this),
              kDriverInterface);
  if (st)
    st = keep(sd_bus_add_node_enumerator(bus, &slot, kDriverPathPrefix,
                                         Callbacks::enumerate_drivers, this),
              "the driver enumerator");
  if (st) st = keep(sd_bus_add_object_manager(bus, &slot, kObjectManagerPath), "ObjectManager");
  return st;
}

Status ManagerApi::request_name() {
  // No queueing and no replacement: two supervisors on one bus is a
  // configuration error the second one should report, not wait out.
  int r = sd_bus_request_name(bus_.get(), kServiceName, 0);
  if (r == -EEXIST) return make_error(std::string(kServiceName) + " is already owned on this bus");
  if (r < 0) return make_error(std::string("cannot own ") + kServiceName + ": " + errno_text(r));
  return {};
}

std::string ManagerApi::unique_name() const {
  const char* name = nullptr;
  if (sd_bus_get_unique_name(bus_.get(), &name) < 0 || !name) return {};
  return name;
}

void ManagerApi::emit(const char* member, const char* types, ...) {
  if (dead_) return;
  va_list ap;
  va_start(ap, types);
  int r = sd_bus_emit_signalv(bus_.get(), kManagerPath, kManagerInterface, member, types, ap);
  va_end(ap);
  if (r < 0) AXL_WARN("dbus: cannot emit %s: %s", member, errno_text(r).c_str());
  schedule_pump();
}

void ManagerApi::emit_driver_failed(const std::string& driver, const std::string& reason) {
  emit("DriverFailed", "ss", driver.c_str(), reason.c_str());
}

void ManagerApi::emit_driver_restarted(const std::string& driver, uint32_t restarts,
                                       uint64_t outage_us) {
  emit("DriverRestarted", "sut", driver.c_str(), restarts, outage_us);
}

void ManagerApi::emit_domain_state_changed(const std::string& domain, const std::string& state) {
  emit("DomainStateChanged", "ss", domain.c_str(), state.c_str());
}

void ManagerApi::drivers_changed() {
  if (dead_) return;
  std::map<std::string, DriverRow> now;
  for (auto& d : backend_.list_drivers()) now.emplace(d.name, d);
  sd_bus* bus = bus_.get();
  for (auto& [name, d] : now) {
    const std::string path = driver_path(name);
    if (path.empty()) continue;
    auto old = last_drivers_.find(name);
    int r = 0;
    if (old == last_drivers_.end()) {
      r = sd_bus_emit_interfaces_added(bus, path.c_str(), kDriverInterface, nullptr);
    } else {
      const DriverRow& o = old->second;
      std::vector<const char*> changed;
      if (o.pid != d.pid) changed.push_back("Pid");
      if (o.state != d.state) changed.push_back("State");
      if (o.restarts != d.restarts) changed.push_back("Restarts");
      if (o.last_failure != d.last_failure) changed.push_back("LastFailure");
      if (changed.empty()) continue;
      changed.push_back(nullptr);
      r = sd_bus_emit_properties_changed_strv(bus, path.c_str(), kDriverInterface,
                                              const_cast<char**>(changed.data()));
    }
    if (r < 0) AXL_WARN("dbus: cannot announce driver %s: %s", name.c_str(), errno_text(r).c_str());
  }
  for (auto& [name, d] : last_drivers_) {
    if (now.count(name)) continue;
    const std::string path = driver_path(name);
    int r = sd_bus_emit_interfaces_removed(bus, path.c_str(), kDriverInterface, nullptr);
    if (r < 0)
      AXL_WARN("dbus: cannot announce removal of driver %s: %s", name.c_str(),
               errno_text(r).c_str());
  }
  last_drivers_ = std::move(now);
  schedule_pump();
}

void ManagerApi::schedule_pump() {
  if (pump_queued_ || dead_) return;
  pump_queued_ = true;
  boost::asio::post(io_, [alive = std::weak_ptr<ManagerApi*>(alive_)] {
    auto self = alive.lock();
    if (!self) return;
    (*self)->pump_queued_ = false;
    (*self)->pump();
  });
}

void ManagerApi::pump() {
  if (dead_) return;
  for (int handled = 0;; ++handled) {
    if (handled == kMessagesPerTurn) {
      schedule_pump();
      return;
    }
    int r = sd_bus_process(bus_.get(), nullptr);
    if (r < 0) return lose_connection(r);
    if (r == 0) break;
  }
  arm();
}

void ManagerApi::lose_connection(int negative_errno) {
  // Typically the bus daemon went away.  Nothing more can be sent or
  // received; the supervisor keeps running without its D-Bus API.
  AXL_ERROR("dbus: connection lost: %s", errno_text(negative_errno).c_str());
  dead_ = true;
  boost::system::error_code ec;
  watch_.cancel(ec);
  timer_.cancel();
}

void ManagerApi::arm() {
  int events = sd_bus_get_events(bus_.get());
  if (events < 0) return lose_connection(events);
  // sd_bus_process() returned 0 only after a read hit EAGAIN, so the next
  // byte raises a fresh edge for Asio's edge-triggered epoll.
  const std::weak_ptr<ManagerApi*> alive = alive_;
  auto on_ready = [alive](bool read) {
    return [alive, read](const boost::system::error_code& ec) {
      auto self = alive.lock();
      if (!self) return;
      (read ? (*self)->read_armed_ : (*self)->write_armed_) = false;
      if (ec == boost::asio::error::operation_aborted) return;
      (*self)->pump();
    };
  };
  if ((events & POLLIN) && !read_armed_) {
    read_armed_ = true;
    watch_.async_wait(boost::asio::posix::stream_descriptor::wait_read, on_ready(true));
  }
  if ((events & POLLOUT) && !write_armed_) {
    write_armed_ = true;
    watch_.async_wait(boost::asio::posix::stream_descriptor::wait_write, on_ready(false));
  }
  uint64_t until = 0;
  if (sd_bus_get_timeout(bus_.get(), &until) < 0 || until == UINT64_MAX) {
    timer_.cancel();
    return;
  }
  // sd-bus gives an absolute CLOCK_MONOTONIC time; 0 means "now".
  const uint64_t now = monotonic_us();
  timer_.expires_after(std::chrono::microseconds(until > now ? until - now : 0));
  timer_.async_wait([alive](const boost::system::error_code& ec) {
    auto self = alive.lock();
    if (!self || ec == boost::asio::error::operation_aborted) return;
    (*self)->pump();
  });
}

}  // namespace axl::dbus
