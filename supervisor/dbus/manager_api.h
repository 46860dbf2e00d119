// The Axolotl management API on D-Bus (docs/architecture.md, "Control plane").
//
// Bus layout, service name org.axolotl:
//   /org/axolotl/Manager1          org.axolotl.Manager1  methods and signals
//   /org/axolotl/Driver/<name>     org.axolotl.Driver1   read-only properties
//   /org/axolotl                   org.freedesktop.DBus.ObjectManager
// Driver object names are escaped with sd_bus_path_encode(): driver names may
// hold '-', which an object path element may not ("net-0" -> "net_2d0").
//
// This layer only speaks D-Bus.  It owns no daemon state: every method call
// and property read asks a ManagerBackend at the time it arrives, so the
// answer is never staler than the supervisor's own view.
//
// sd-bus runs inside the caller's Boost.Asio io_context: its fd is watched
// with async_wait for the events sd_bus_get_events() asks for and its
// timeout with a steady_timer, so nothing here blocks the loop after start().
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/result.h"
#include "policy/access.h"

// sd-bus types, kept out of this header's includers.
struct sd_bus;
struct sd_bus_slot;

namespace axl::dbus {

inline constexpr const char* kServiceName = "org.axolotl";
inline constexpr const char* kManagerPath = "/org/axolotl/Manager1";
inline constexpr const char* kManagerInterface = "org.axolotl.Manager1";
inline constexpr const char* kDriverPathPrefix = "/org/axolotl/Driver";
inline constexpr const char* kDriverInterface = "org.axolotl.Driver1";
inline constexpr const char* kObjectManagerPath = "/org/axolotl";
inline constexpr const char* kErrorFailed = "org.axolotl.Error.Failed";

struct DomainRow {
  std::string name;
  uint32_t id = 0;
  std::string state;
};

struct DriverRow {
  std::string name, kind, state, last_failure;
  int32_t pid = -1;
  uint32_t restarts = 0;
  uint64_t uptime_s = 0;
  double heartbeat_lag_ms = 0;
};

struct OutageRow {
  std::string driver, cause;
  uint64_t detect_us = 0, outage_us = 0;
  uint64_t at_unix_s = 0;
};

// Implemented by the supervisor.  Every call is made on the io_context
// thread, from inside sd_bus_process().  The domain calls reach the
// hypervisor, which may take seconds (a create waits for the domain to run)
// and may call back into the supervisor before it answers: each completes
// through its `done`, on the loop, exactly once, now or later, and the D-Bus
// reply goes out then; the loop serves every other call meanwhile.  A
// backend must not call ManagerApi's emit_* re-entrantly expecting them to be
// sent before it returns (they are queued and flushed on the next loop turn).
class ManagerBackend {
 public:
  template <typename T>
  using Done = std::function<void(Result<T>)>;
  virtual ~ManagerBackend() = default;
  virtual void list_domains(Done<std::vector<DomainRow>> done) = 0;
  // The methods that change state carry their caller (its uid, groups and
  // bus names), for the access policy to decide on (policy/access.h).  A
  // refusal's message starts with "denied by policy" and goes out as
  // org.freedesktop.DBus.Error.AccessDenied.
  // vtpm_state: "" or, for a name that had a vTPM before, "keep" or "new".
  virtual void create_domain(const policy::Subject& caller, const std::string& config_path,
                             const std::string& vtpm_state,
                             Done<std::string> done) = 0;  // name
  virtual void destroy_domain(const policy::Subject& caller, const std::string& name,
                              std::function<void(Status)> done) = 0;
  virtual std::vector<DriverRow> list_drivers() = 0;
  virtual Status kill_driver(const policy::Subject& caller, const std::string& name,
                             const std::string& signal) = 0;
  virtual Status restart_driver(const policy::Subject& caller, const std::string& name) = 0;
  virtual std::vector<OutageRow> outages(const std::string& driver) = 0;  // "": all drivers
  // The access policy's decisions so far, allowed and denied (properties
  // PolicyAllowed and PolicyDenied of org.axolotl.Manager1).
  virtual uint64_t policy_allowed() { return 0; }
  virtual uint64_t policy_denied() { return 0; }
};

// Signals KillDriver accepts; anything else is rejected before the backend
// sees it.
bool is_known_kill_signal(const std::string& signal);

class ManagerApi {
 public:
  // Connects to the system bus when `address` is empty, else to that bus
  // address (e.g. "unix:path=/run/x/bus"), exports the objects and requests
  // org.axolotl.  Blocks for the connection and the name request (one round
  // trip each to the bus daemon), so call it before io.run() or accept that
  // pause; a name already owned by someone else is an error.
  static Result<std::unique_ptr<ManagerApi>> start(boost::asio::io_context& io,
                                                   const std::string& address,
                                                   ManagerBackend& backend);
  // Must run on the io_context thread, or after the io_context stopped.
  ~ManagerApi();
  ManagerApi(const ManagerApi&) = delete;
  ManagerApi& operator=(const ManagerApi&) = delete;

  // Signals on /org/axolotl/Manager1.  Queued now, written by the loop.
  void emit_driver_failed(const std::string& driver, const std::string& reason);
  void emit_driver_restarted(const std::string& driver, uint32_t restarts, uint64_t outage_us);
  void emit_domain_state_changed(const std::string& domain, const std::string& state);
  // Compares the backend's drivers with the last snapshot and emits
  // InterfacesAdded / InterfacesRemoved for drivers that came or went and
  // PropertiesChanged for Pid, State, Restarts and LastFailure.  UptimeSec
  // and HeartbeatLagMs change all the time and are marked as never emitting.
  void drivers_changed();

  // The bus's unique name (":1.42"), for logs and tests.
  std::string unique_name() const;

 private:
  struct BusUnref {
    void operator()(sd_bus* b) const;
  };
  struct SlotUnref {
    void operator()(sd_bus_slot* s) const;
  };
  using BusPtr = std::unique_ptr<sd_bus, BusUnref>;
  using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;

  ManagerApi(boost::asio::io_context& io, BusPtr bus, ManagerBackend& backend);
  Status export_objects();
  Status request_name();
  void emit(const char* member, const char* types, ...);
  // Runs sd_bus_process() until it has nothing left, then re-arms the fd
  // watch and the timer for what sd-bus asks next.
  void pump();
  void schedule_pump();  // pump() on the next loop turn, at most once queued
  void arm();
  void lose_connection(int negative_errno);

  // sd-bus callbacks; userdata is the ManagerApi.
  friend struct Callbacks;

  boost::asio::io_context& io_;
  ManagerBackend& backend_;
  BusPtr bus_;
  std::vector<SlotPtr> slots_;
  boost::asio::posix::stream_descriptor watch_;  // sd-bus's fd, never closed by us
  boost::asio::steady_timer timer_;
  bool read_armed_ = false, write_armed_ = false, pump_queued_ = false;
  bool dead_ = false;  // the connection failed; logged once, not pumped again
  // Handlers still queued in the io_context when we are destroyed hold a
  // weak_ptr to this and do nothing once it has expired.
  std::shared_ptr<ManagerApi*> alive_;
  std::map<std::string, DriverRow> last_drivers_;  // snapshot for drivers_changed()
};

}  // namespace axl::dbus
