#include "hypervisor/daemon/domain_engine.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/fs.h"
#include "common/kv_record.h"
#include "common/log.h"
#include "common/quote.h"
#include "common/wire.h"
#include "driverdom/blk/image.h"
#include "hypervisor/daemon/device_binding.h"
#include "hypervisor/daemon/qemu_cmdline.h"
#include "hypervisor/io/blk/device.h"
#include "hypervisor/platform/accel.h"
#include "hypervisor/platform/initramfs.h"
#include "policy/measure.h"

namespace axl::hv {

namespace asio = boost::asio;
namespace fs = std::filesystem;

const char* to_string(DomainState s) {
  switch (s) {
    case DomainState::kPreparing:
      return "preparing";
    case DomainState::kVtpmStarting:
      return "vtpm-starting";
    case DomainState::kAttaching:
      return "attaching";
    case DomainState::kStarting:
      return "starting";
    case DomainState::kRunning:
      return "running";
    case DomainState::kShutoff:
      return "shutoff";
    case DomainState::kCrashed:
      return "crashed";
    case DomainState::kStopping:
      return "stopping";
  }
  return "unknown";
}

void DomainEngine::set_state(Domain& d, DomainState s) {
  d.state = s;
  state_changed(d.cfg.name, to_string(s));
}

DomainEngine::DomainEngine(asio::io_context& io, std::string state_dir, std::string guest_dir,
                           DriverRegistry& drivers, DriverSupervision supervision, VtpmControl vtpm)
    : io_(io),
      state_dir_(std::move(state_dir)),
      guest_dir_(std::move(guest_dir)),
      drivers_(drivers),
      supervision_(std::move(supervision)),
      vtpm_(std::move(vtpm)) {}

// A device quarantines on its own thread; the report crosses to the engine's
// loop, which hands it on without waiting for anyone.
DeviceSupervision DomainEngine::supervision_for(const std::string& driver) {
  DeviceSupervision sup;
  sup.io_timeout_ms = supervision_.io_timeout_ms ? supervision_.io_timeout_ms(driver) : 0;
  sup.poll_us = supervision_.poll_us ? supervision_.poll_us(driver) : 0;
  sup.on_quarantine = [this, driver](const std::string& cause, int pid) {
    asio::post(io_, [this, driver, pid, cause] {
      AXL_WARN("driver %s (pid %d) quarantined: %s", driver.c_str(), pid, cause.c_str());
      if (supervision_.report) supervision_.report(driver, pid, cause);
    });
  };
  sup.on_first_served = [this, driver](uint64_t rebind_ns, uint64_t served_ns, int pid) {
    asio::post(io_, [this, driver, pid, rebind_ns, served_ns] {
      if (supervision_.served) supervision_.served(driver, pid, rebind_ns, served_ns);
    });
  };
  return sup;
}

DomainEngine::~DomainEngine() { destroy_all(); }

namespace {

// Removes a domain's directory (the supervisor may be unlinking the vTPM's
// sockets in it meanwhile: remove_tree copes).
void remove_domain_dir(const std::string& dir) {
  if (auto s = remove_tree(dir); !s) AXL_WARN("%s", s.error().message.c_str());
}
// OVMF from Debian's `ovmf` package: its code (read-only, shared) and the
// template of a domain's variable store.
constexpr const char* kOvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
constexpr const char* kOvmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

// The variable store `path` in `dir` (0700), copied from the template if
// the domain has none yet (0600).
Status ensure_nvram(const std::string& dir, const std::string& path) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return make_error("cannot create " + dir + ": " + strerror(errno));
  if (::access(path.c_str(), F_OK) == 0) return {};
  auto vars = config::read_file(kOvmfVars);
  if (!vars) return vars.error();
  const std::string tmp = path + ".tmp";
  UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f || ::write(f.get(), vars->data(), vars->size()) != ssize_t(vars->size()) ||
      ::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error("cannot write " + path + ": " + strerror(errno));
  return {};
}

Status write_file(const std::string& path, const std::string& bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return make_error("cannot create " + path + ": " + strerror(errno));
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::write(fd.get(), bytes.data() + off, bytes.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return make_error("cannot write " + path + ": " + strerror(errno));
    off += size_t(w);
  }
  return {};
}

// The bytes the hypervisor appended to the base initrd for this domain.
Result<std::string> overlay_bytes(const std::string& base, const std::string& combined) {
  std::error_code ec;
  const auto base_size = fs::file_size(base, ec);
  if (ec) return make_error("cannot stat " + base + ": " + ec.message());
  std::ifstream in(combined, std::ios::binary);
  if (!in) return make_error("cannot read " + combined);
  in.seekg(std::streamoff(base_size));
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && in.fail()) return make_error("cannot read " + combined);
  return tail;
}
}  // namespace

// Measured boot (vtpm/README.md): the hypervisor is the
// guest's boot loader and measures what it hands QEMU.  Writes
// DIR/eventlog.bin (the TCG event log the vTPM extends after the guest's
// TPM2_Startup, and a verifier replays) and DIR/boot-record.toml (what the
// host itself knows about this boot: a verifier's HostRecord).
static Status write_boot_measurements(const std::string& dir, const config::GuestConfig& cfg,
                                      const std::string& initrd, const std::string& append,
                                      const std::string& config_text) {
  policy::BootInputs in;
  in.kernel_path = cfg.kernel;
  in.initrd_path = cfg.initrd;
  if (initrd != cfg.initrd) {
    auto ov = overlay_bytes(cfg.initrd, initrd);
    if (!ov) return ov.error();
    in.initrd_overlay = std::move(ov).value();
  }
  in.cmdline = append;
  in.config = config_text;
  auto events = policy::measure_boot(in);
  if (!events) return make_error("measuring the boot: " + events.error().message);
  if (auto s = write_file(dir + "/eventlog.bin", policy::encode_event_log(*events)); !s) return s;
  std::string rec = "kernel = " + quoted(cfg.kernel) + "\ninitrd = " + quoted(cfg.initrd) +
                    "\ncmdline = " + quoted(append) + "\ncmdline_sha256 = \"" +
                    policy::hex(policy::sha256(append)) + "\"\nconfig_sha256 = \"" +
                    policy::hex(policy::sha256(config_text)) + "\"\n";
  if (!in.initrd_overlay.empty())
    rec += "initrd_overlay_sha256 = \"" + policy::hex(policy::sha256(in.initrd_overlay)) + "\"\n";
  return write_file(dir + "/boot-record.toml", rec);
}

namespace {
// Stable, short serial for VIRTIO_BLK_T_GET_ID (at most 20 bytes).
std::string disk_serial(const std::string& dom, size_t i) {
  std::string s = "axl-" + dom + "-" + std::to_string(i);
  return s.substr(0, 20);
}
}  // namespace

namespace {
// A device's vhost-user session kept in the daemon's fd store (each fd as
// "dev.DOMAIN.INDEX.NAME") and its journal in DIR/devINDEX.session
// (hypervisor/io/vhost_user/session.h).  Runs on the device thread; the
// store's notices are datagrams, safe from any thread.
class StoreKeeper final : public vhost_user::SessionKeeper {
 public:
  StoreKeeper(FdStore& store, std::string prefix, std::string record)
      : store_(store), prefix_(std::move(prefix)), record_(std::move(record)) {}
  void keep_fd(const std::string& name, int fd) override {
    if (auto s = store_.put(prefix_ + name, fd); !s) AXL_WARN("%s", s.error().message.c_str());
    names_.insert(name);
  }
  void drop_fd(const std::string& name) override {
    store_.remove(prefix_ + name);
    names_.erase(name);
  }
  void keep_record(const KvRecord& rec) override {
    if (auto s = write_kv_record(record_, rec); !s) AXL_WARN("%s", s.error().message.c_str());
  }
  void forget() override {
    for (const auto& n : names_) store_.remove(prefix_ + n);
    names_.clear();
    ::unlink(record_.c_str());
  }

 private:
  FdStore& store_;
  std::string prefix_, record_;
  std::set<std::string> names_;
};

std::string device_prefix(const std::string& dom, size_t i) {
  return "dev." + dom + "." + std::to_string(i) + ".";
}
std::string session_path(const std::string& dir, size_t i) {
  return dir + "/dev" + std::to_string(i) + ".session";
}
}  // namespace

std::unique_ptr<vhost_user::SessionKeeper> DomainEngine::keeper_for(const Domain& d, size_t i) {
  if (!store_ || !store_->available()) return nullptr;
  return std::make_unique<StoreKeeper>(*store_, device_prefix(d.cfg.name, i),
                                       session_path(d.dir, i));
}

void DomainEngine::write_domain_record(const Domain& d) {
  if (!store_ || !store_->available()) return;
  KvRecord r{{"name", d.cfg.name},         {"id", std::to_string(d.id)}, {"accel", d.accel},
             {"qemu", d.qemu_binary},      {"initrd", d.initrd},         {"nvram", d.nvram},
             {"vtpm", d.vtpm ? "1" : "0"}, {"base_dir", d.base_dir}};
  // Devices moved to another driver than their config names (fail_over).
  for (const auto& [i, driver] : d.failed_over) r["driver." + std::to_string(i)] = driver;
  auto s = write_file(d.dir + "/config.toml", d.config_toml);
  if (s) s = write_kv_record(d.dir + "/domain.rec", r);
  if (!s)
    AXL_WARN("domain %s: not adoptable after a crash of the hypervisor: %s", d.cfg.name.c_str(),
             s.error().message.c_str());
}

DeviceBinding* DomainEngine::resolve(const BindingRef& r) {
  auto alive = r.alive.lock();
  if (!alive || !*alive) return nullptr;
  if (r.index >= r.d->devices.size() || r.d->devices[r.index].driver != r.driver) return nullptr;
  return &r.d->devices[r.index];
}

void DomainEngine::attach_next(Domain* d, const std::shared_ptr<Requests>& reqs, size_t i) {
  if (i == reqs->size()) return create_spawn(d);
  const std::string driver_name = (*reqs)[i].first;
  DriverConnection* drv = drivers_.find(driver_name);
  if (!drv && d->adopting)
    return adopt_wait(d, driver_name, [this, d, reqs, i] { attach_next(d, reqs, i); });
  if (!drv)
    return create_failed(d, make_error("driver '" + driver_name + "' is not running on this host"));
  const uint64_t serial = drv->serial();
  std::weak_ptr<bool> alive = d->alive;
  attach_channel(*drv, (*reqs)[i].second, [=, this](Result<ChannelGrant> g) {
    auto a = alive.lock();
    DriverConnection* cur = drivers_.find_serial(driver_name, serial);
    if (!a || !*a) {  // destroyed meanwhile: give the channel back
      if (g && cur) cur->detach(g->device_id);
      return;
    }
    if (!g && d->adopting) {
      // A driver that died while no hypervisor ran, or dies now: its
      // successor is waited for.
      AXL_WARN("domain %s: adopting device %zu: %s", d->cfg.name.c_str(), i,
               g.error().message.c_str());
      return adopt_wait(d, driver_name, [this, d, reqs, i] { attach_next(d, reqs, i); });
    }
    if (!g) return create_failed(d, g.error());
    if (!cur || drivers_.find(driver_name) != cur) {
      // The driver was replaced while it answered: ask its successor instead.
      if (cur) cur->detach(g->device_id);
      return attach_next(d, reqs, i);
    }
    DeviceRequest& req = (*reqs)[i].second;
    const std::string sock = d->dir + "/dev" + std::to_string(i) + ".sock";
    const uint32_t device_id = g->device_id;
    std::optional<vhost_user::KeptSession> kept;
    if (d->adopting && i < d->adopting->sessions.size())
      kept = std::exchange(d->adopting->sessions[i], std::nullopt);
    auto b = make_bound_device(sock, req, std::move(g).value(), cur->instance_pid(),
                               supervision_for(driver_name), keeper_for(*d, i), std::move(kept),
                               {d->qemu_uid(), d->qemu_uid()});
    if (!b) {
      cur->detach(device_id);
      return create_failed(d, b.error());
    }
    const auto kind = req.kind;
    const auto mac = req.net.mac;
    const uint32_t queue_size = req.blk.queue_size;
    const uint32_t queues = kind == config::DriverKind::kBlk ? req.blk.queues : req.net.queue_pairs;
    d->devices.push_back(DeviceBinding{driver_name, std::move(req), std::move(b).value(), {}});
    if (DriverConnection* sb = drivers_.find_standby(driver_name))
      preattach_standby(d, d->devices.size() - 1, *sb);
    d->qdevs.push_back(QemuDevice{kind, sock, mac, false, queue_size, queues});
    attach_next(d, reqs, i + 1);
  });
}

void DomainEngine::release_devices(Domain& d) {
  for (auto& b : d.devices) {
    b.bound.device.reset();  // stops its thread, unlinks its socket
    if (DriverConnection* drv = drivers_.find(b.driver)) drv->detach(b.bound.device_id);
    if (b.standby)
      if (DriverConnection* sb = drivers_.find_standby(b.driver)) sb->detach(b.standby->device_id);
  }
  d.devices.clear();
}

void DomainEngine::create(const std::string& toml, const std::string& base_dir,
                          std::function<void(Result<const Domain*>)> done) {
  auto refuse = [&](Error e) { done(std::move(e)); };
  auto cfg = config::parse_guest(toml, "guest config", base_dir);
  if (!cfg) return refuse(cfg.error());
  if (domains_.count(cfg->name))
    return refuse(make_error("domain '" + cfg->name + "' already exists"));
  // Check everything that needs no resources before taking any.
  std::string qemu = proc::find_on_path("qemu-system-x86_64");
  if (qemu.empty()) return refuse(make_error("QEMU not found: qemu-system-x86_64 is not on PATH"));
  auto accel = choose_accel(cfg->accel);
  if (!accel) return refuse(accel.error());
  if (cfg->firmware.empty()) {
    if (cfg->kernel.empty()) cfg->kernel = guest_dir_ + "/vmlinuz";
    if (cfg->initrd.empty()) cfg->initrd = guest_dir_ + "/initrd.img";
    for (const std::string* f : {&cfg->kernel, &cfg->initrd})
      if (::access(f->c_str(), R_OK) != 0)
        return refuse(make_error(
            "cannot read " + *f +
            (f->rfind(guest_dir_, 0) == 0 ? " (run scripts/setup to build the guest image)" : "")));
  } else if (cfg->firmware == "uefi") {
    for (const char* f : {kOvmfCode, kOvmfVars})
      if (::access(f, R_OK) != 0)
        return refuse(make_error(std::string("firmware = \"uefi\" needs OVMF: cannot read ") + f +
                                 " (apt-get install ovmf)"));
  }
  std::string script;
  if (!cfg->script.empty()) {
    auto s = config::read_file(cfg->script);
    if (!s) return refuse(make_error("cannot read guest script " + cfg->script));
    script = *s;
  }
  for (const auto& disk : cfg->disks)
    if (!drivers_.find(disk.driver))
      return refuse(make_error("unknown driver '" + disk.driver + "'"));
  for (const auto& nic : cfg->nics)
    if (!drivers_.find(nic.driver))
      return refuse(make_error("unknown driver '" + nic.driver + "'"));
  if (cfg->vtpm.enabled && !vtpm_.start)
    return refuse(make_error("[vtpm] enabled, but no supervisor runs vTPMs here"));

  auto owned = std::make_unique<Domain>();
  Domain* d = owned.get();
  d->cfg = std::move(cfg).value();
  d->dir = state_dir_ + "/dom/" + d->cfg.name;
  d->accel = accel_qemu_arg(*accel);
  d->qemu_binary = qemu;
  d->initrd = d->cfg.initrd;
  d->config_toml = toml;
  d->base_dir = base_dir;
  remove_domain_dir(d->dir);
  // Private (0700), whatever the umask: QEMU's sockets, the console log and
  // the guest's files live there.
  for (const std::string& dir : {state_dir_ + "/dom", d->dir})
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return refuse(make_error("cannot create " + dir + ": " + strerror(errno)));
  if (::chmod(d->dir.c_str(), 0700) != 0)
    return refuse(make_error("cannot chmod " + d->dir + ": " + strerror(errno)));
  // From here on the domain is listed, and every failure goes through create_failed.
  d->id = next_id_++;
  d->on_created = std::move(done);
  domains_[d->cfg.name] = std::move(owned);
  set_state(*d, DomainState::kPreparing);

  if (d->cfg.firmware == "uefi") {
    // The domain's own UEFI variable store, kept across destroy and create
    // (boot entries, Secure Boot keys), made from OVMF's template once.
    d->nvram = state_dir_ + "/nvram/" + d->cfg.name + ".fd";
    if (auto s = ensure_nvram(state_dir_ + "/nvram", d->nvram); !s)
      return create_failed(d, s.error());
  }
  if (!script.empty()) {
    d->initrd = d->dir + "/initrd.img";
    if (auto s = append_overlay(d->cfg.initrd, {CpioFile{"axl/script", 0755, script}}, d->initrd);
        !s)
      return create_failed(d, s.error());
  }
  if (!d->cfg.vtpm.enabled) return create_attach(d);
  // A firmware-booted guest's firmware measures its own boot; the
  // hypervisor measures only what it boots directly.
  const bool measure = d->cfg.firmware.empty();
  if (measure) {
    if (auto s = write_boot_measurements(d->dir, d->cfg, d->initrd,
                                         kernel_append(d->cfg.cmdline, d->cfg.iommu), toml);
        !s)
      return create_failed(d, s.error());
  }
  set_state(*d, DomainState::kVtpmStarting);
  // The supervisor answers once the vTPM listens (provisioning one can take
  // seconds); the loop serves everyone else meanwhile.
  d->pending_call =
      vtpm_.start(d->cfg.name, measure, d->cfg.vtpm.command_port, [this, d](const Status& s) {
        d->pending_call.reset();
        if (!s) return create_failed(d, make_error("vTPM: " + s.error().message));
        d->vtpm = true;
        create_attach(d);
      });
}

void DomainEngine::create_attach(Domain* d) {
  set_state(*d, DomainState::kAttaching);
  auto reqs = std::make_shared<Requests>();
  for (size_t i = 0; i < d->cfg.disks.size(); ++i) {
    const auto& disk = d->cfg.disks[i];
    DeviceRequest req;
    req.kind = config::DriverKind::kBlk;
    req.aio = disk.aio;
    uint64_t capacity = 0;
    uint32_t block_size = 512;
    if (disk.format == "raw") {
      req.image.reset(::open(disk.image.c_str(), (disk.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
      if (!req.image)
        return create_failed(
            d, make_error("cannot open image " + disk.image + ": " + strerror(errno)));
      struct stat st {};
      if (::fstat(req.image.get(), &st) < 0 || !S_ISREG(st.st_mode))
        return create_failed(d, make_error("image " + disk.image + " is not a regular file"));
      capacity = uint64_t(st.st_size);
      if (disk.cache == "none") {
        auto align = driverdom::blk::use_direct_io(req.image.get());
        if (!align)
          return create_failed(d, make_error("image " + disk.image + ": " + align.error().message));
        block_size = *align;
      }
    } else {
      // The whole chain is checked here, before anything runs or is written
      // (driverdom/blk/image.h); the driver gets its files as fds.
      auto chain = driverdom::blk::open_chain_fds(disk.image, disk.format, disk.read_only);
      if (!chain) return create_failed(d, make_error("image " + chain.error().message));
      capacity = chain->size;
      req.image = std::move(chain->fds.front());
      for (size_t k = 1; k < chain->fds.size(); ++k)
        req.backing.push_back(std::move(chain->fds[k]));
      req.formats = chain->formats;
    }
    if (capacity == 0 || capacity % 512 != 0)
      return create_failed(
          d, make_error("image " + disk.image + " size is not a non-zero multiple of 512"));
    if (capacity % block_size != 0)
      return create_failed(d, make_error("image " + disk.image + " size is not a multiple of " +
                                         std::to_string(block_size) + " (direct I/O)"));
    req.blk = BlkDeviceSpec{capacity,   disk.read_only,      disk_serial(d->cfg.name, i),
                            block_size, io::blk::kQueueSize, disk.queues};
    reqs->emplace_back(disk.driver, std::move(req));
  }
  for (const auto& nic : d->cfg.nics) {
    DeviceRequest req;
    req.kind = config::DriverKind::kNet;
    req.net = NetDeviceSpec{nic.mac, nic.queues};
    reqs->emplace_back(nic.driver, std::move(req));
  }
  // Each driver answers on the loop; a slow one delays only this domain.
  attach_next(d, reqs, 0);
}

namespace {
// A listening stream socket at `path`, 0600 (QEMU gets the fd).
Result<UniqueFd> stream_listen(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  if (auto b = wire::bind_private(s.get(), path); !b) return b.error();
  if (::listen(s.get(), 4) != 0) return make_error("listen " + path + ": " + strerror(errno));
  return s;
}
}  // namespace

void DomainEngine::create_spawn(Domain* d) {
  if (d->adopting) return adopt_finish(d);
  QemuSpec qs{d->qemu_binary,      d->cfg.name,      d->accel,  d->cfg.memory_mib,
              d->cfg.vcpus,        d->cfg.kernel,    d->initrd, d->cfg.cmdline,
              d->console_socket(), d->console_log(), d->qdevs};
  qs.iommu = d->cfg.iommu;
  if (d->vtpm) qs.tpm_socket = d->dir + "/vtpm.ctrl";
  qs.firmware = d->cfg.firmware;
  qs.ovmf_code = kOvmfCode;
  qs.nvram = d->nvram;
  qs.agent_socket = d->agent_socket();
  qs.qmp_socket = d->qmp_socket();
  // Disks come first among the devices, in config order.
  for (size_t i = 0; i < d->cfg.disks.size() && i < qs.devices.size(); ++i)
    qs.devices[i].boot = d->cfg.disks[i].boot;
  proc::SpawnOptions so;
  // QEMU runs as a uid of its own (Domain::qemu_uid), which can reach no
  // path in the state dir: everything it uses is handed to it as an fd.
  // Sockets it listens on are made here; the vTPM's control channel is
  // connected here; files (the console log, the variable store, kernel and
  // initrd) and the vhost-user sockets it connects to (and reconnects to)
  // are reached through /proc/self/fd/N, which checks the file's own
  // permissions, never the directories' (docs/architecture.md).
  const uid_t u = d->qemu_uid();
  std::vector<UniqueFd> held;
  auto give = [&](UniqueFd fd) {
    const int n = 3 + int(held.size());
    so.fds.emplace_back(fd.get(), n);
    held.push_back(std::move(fd));
    return n;
  };
  auto by_fd = [](int n) { return "/proc/self/fd/" + std::to_string(n); };
  auto open_for_qemu = [&](const std::string& path, int flags, bool own) -> Result<int> {
    UniqueFd f(::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f) return make_error("cannot open " + path + ": " + strerror(errno));
    if (own && ::fchown(f.get(), u, u) != 0)
      return make_error("cannot chown " + path + ": " + strerror(errno));
    return give(std::move(f));
  };
  for (auto [path, fdp] :
       {std::pair{qs.console_socket, &qs.console_fd}, std::pair{qs.agent_socket, &qs.agent_fd},
        std::pair{qs.qmp_socket, &qs.qmp_fd}}) {
    auto l = stream_listen(path);
    if (!l) return create_failed(d, l.error());
    *fdp = give(std::move(l).value());
  }
  if (!qs.tpm_socket.empty()) {
    auto c = wire::stream_connect(qs.tpm_socket);
    if (!c) return create_failed(d, make_error("vTPM: " + c.error().message));
    qs.tpm_fd = give(std::move(c).value());
  }
  {
    UniqueFd ram(::memfd_create(("axl-ram-" + d->cfg.name).c_str(), MFD_CLOEXEC));
    if (!ram || ::ftruncate(ram.get(), off_t(d->cfg.memory_mib) << 20) != 0 ||
        ::fchown(ram.get(), u, u) != 0)
      return create_failed(d, make_error(std::string("guest RAM: ") + strerror(errno)));
    qs.ram_path = by_fd(give(std::move(ram)));
  }
  auto log = open_for_qemu(qs.console_log, O_WRONLY | O_CREAT | O_TRUNC, true);
  if (!log) return create_failed(d, log.error());
  qs.console_log = by_fd(*log);
  if (!qs.nvram.empty()) {
    auto n = open_for_qemu(qs.nvram, O_RDWR, true);
    if (!n) return create_failed(d, n.error());
    qs.nvram = by_fd(*n);
  }
  if (qs.firmware.empty()) {
    // The bundled kernel and initrd are world-readable; the domain's own
    // initrd (with its script) becomes QEMU's to read, and only QEMU's.
    const bool own_initrd = qs.initrd != d->cfg.initrd;
    if (own_initrd && ::chmod(qs.initrd.c_str(), 0400) != 0)
      return create_failed(d, make_error("cannot chmod " + qs.initrd + ": " + strerror(errno)));
    auto k = open_for_qemu(qs.kernel, O_RDONLY, false);
    auto i = k ? open_for_qemu(qs.initrd, O_RDONLY, own_initrd) : k;
    if (!k || !i) return create_failed(d, (!k ? k : i).error());
    qs.kernel = by_fd(*k);
    qs.initrd = by_fd(*i);
  }
  for (auto& dev : qs.devices) {
    auto p = open_for_qemu(dev.socket, O_PATH, false);
    if (!p) return create_failed(d, p.error());
    dev.socket = by_fd(*p);
  }
  so.argv = qemu_argv(qs);
  so.log_path = d->dir + "/qemu.log";
  so.new_session = true;
  // No capabilities, no network, IPC, UTS or mount namespace of the host's,
  // and its own uid (with the kvm group for /dev/kvm).
  so.drop_privileges = true;
  so.new_pid_ns = true;
  so.run_as = {u, u};
  so.file_size_limit = uint64_t(d->cfg.log_max_mib) << 20;
  if (d->accel == "kvm")
    if (const group* g = ::getgrnam("kvm")) so.groups.push_back(g->gr_gid);
  auto child = proc::spawn(so);
  if (!child) return create_failed(d, child.error());
  d->qemu = std::move(child).value();
  // QEMU outlives a hypervisor that is killed: `axl host down` finds it by
  // this record (docs/architecture.md, "Domain lifecycle").
  if (auto s = proc::write_record(d->dir + "/qemu.pid", d->qemu.pid); !s)
    AXL_WARN("domain %s: %s", d->cfg.name.c_str(), s.error().message.c_str());
  // And the init of its pid namespace, which goes with it.
  if (auto s = proc::write_record(d->dir + "/qemu-ns.pid", d->qemu.ns_holder.pid()); !s)
    AXL_WARN("domain %s: %s", d->cfg.name.c_str(), s.error().message.c_str());
  set_state(*d, DomainState::kStarting);
  // QEMU rejects a bad command line or a missing file within a moment; say so
  // then instead of reporting a domain that never ran.
  d->start_check = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(300));
  d->start_check->async_wait([this, d](const boost::system::error_code& ec) {
    if (!ec) create_check_started(d);
  });
}

void DomainEngine::create_check_started(Domain* d) {
  d->start_check.reset();
  if (auto st = proc::wait_for(d->qemu, std::chrono::milliseconds(0)); st) {
    auto log = config::read_file(d->dir + "/qemu.log");
    std::string last = log ? *log : "";
    while (!last.empty() && last.back() == '\n') last.pop_back();
    if (auto p = last.rfind('\n'); p != std::string::npos) last = last.substr(p + 1);
    d->qemu.pid = -1;
    return create_failed(
        d, make_error("QEMU failed to start (" + proc::describe_status(*st) + "): " + last));
  }
  d->exit_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d->qemu.pidfd.get()));
  d->exit_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                            [this, d](const boost::system::error_code& ec) {
                              if (!ec) on_qemu_exit(d);
                            });
  AXL_INFO("domain %s (id %u) started: qemu pid %d, accel %s", d->cfg.name.c_str(), d->id,
           d->qemu.pid, d->accel.c_str());
  set_state(*d, DomainState::kRunning);
  write_domain_record(*d);
  if (auto done = std::move(d->on_created)) done(static_cast<const Domain*>(d));
}

// Undoes whatever create() had taken so far; the domain leaves the table.
void DomainEngine::create_failed(Domain* d, Error e) {
  AXL_WARN("domain %s: create failed while %s: %s", d->cfg.name.c_str(), to_string(d->state),
           e.message.c_str());
  auto done = std::move(d->on_created);
  const std::string name = d->cfg.name;
  if (d->qemu.pid > 0) proc::stop(d->qemu, std::chrono::milliseconds(2000));
  release_devices(*d);
  stop_vtpm(*d);
  remove_domain_dir(d->dir);
  domains_.erase(name);  // `d` is gone from here on
  state_changed(name, "failed");
  if (done) done(std::move(e));
}

namespace {
// How a process this hypervisor adopted ended: its monitor, which reaped
// it, wrote "PID START STATUS" to STATE/hv.reaped (supervisor/monitor/main.cc).
std::optional<int> reaped_status(const std::string& path, pid_t pid, uint64_t start) {
  std::ifstream f(path);
  long long p = 0, st = 0;
  unsigned long long t = 0;
  std::optional<int> found;
  while (f >> p >> t >> st)
    if (p == pid && t == start && st >= 0 && st <= 0xffff) found = int(st);
  return found;
}
}  // namespace

void DomainEngine::on_qemu_exit(Domain* d) {
  auto st = proc::wait_for(d->qemu, std::chrono::milliseconds(0));
  if (st && *st == proc::kStatusUnknown && d->qemu_start) {
    // Adopted: not ours to reap.  Its monitor tells how it ended, once it
    // has reaped it (moments after the pidfd said it exited).
    if (auto r = reaped_status(state_dir_ + "/hv.reaped", d->qemu.pid, d->qemu_start)) {
      st = *r;
    } else if (++d->reap_tries < 50) {
      auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(20));
      std::weak_ptr<bool> alive = d->alive;
      t->async_wait([this, d, t, alive](const boost::system::error_code& ec) {
        auto a = alive.lock();
        if (!ec && a && *a) on_qemu_exit(d);
      });
      return;
    }
  }
  d->exit_status = st ? *st : -1;
  d->qemu.pid = -1;
  d->qemu.ns_holder.reset();  // its pid namespace is empty now
  if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) return on_crash(d);
  d->state = DomainState::kShutoff;
  d->agent.reset();
  release_devices(*d);
  stop_vtpm(*d);
  AXL_INFO("domain %s shut off: qemu %s", d->cfg.name.c_str(),
           proc::describe_status(d->exit_status).c_str());
  state_changed(d->cfg.name, to_string(DomainState::kShutoff));
  shutoff_waiters(*d, {});
}

void DomainEngine::shutoff_waiters(Domain& d, const Status& s) {
  for (auto& t : std::exchange(d.shutdown_timers, {})) t->cancel();
  for (auto& f : std::exchange(d.on_shutoff, {})) f(s);
}

void DomainEngine::guest_exec(const std::string& name, std::string path,
                              std::vector<std::string> args, std::chrono::milliseconds timeout,
                              std::function<void(Result<ExecResult>)> done) {
  auto it = domains_.find(name);
  if (it == domains_.end()) return done(make_error("no domain named '" + name + "'"));
  Domain& d = *it->second;
  if (d.state != DomainState::kRunning)
    return done(make_error("domain " + name + " is " + to_string(d.state) + ", not running"));
  if (!d.agent) d.agent = std::make_unique<GuestAgent>(io_, d.agent_socket());
  d.agent->exec(std::move(path), std::move(args), timeout, std::move(done));
}

void DomainEngine::shutdown(const std::string& name, std::chrono::milliseconds timeout, bool force,
                            std::function<void(Result<bool>)> done) {
  auto it = domains_.find(name);
  if (it == domains_.end()) return done(make_error("no domain named '" + name + "'"));
  Domain& d = *it->second;
  if (d.state == DomainState::kShutoff) return done(false);
  if (d.state != DomainState::kRunning)
    return done(make_error("domain " + name + " is " + to_string(d.state) + ", not running"));
  // One answer, whichever comes first: the power-off, the deadline, or a
  // failure to press the button.
  auto answer = std::make_shared<std::function<void(Result<bool>)>>(std::move(done));
  auto reply = [answer](Result<bool> r) {
    if (auto f = std::exchange(*answer, nullptr)) f(std::move(r));
  };
  auto timer = std::make_shared<asio::steady_timer>(io_, timeout);
  d.shutdown_timers.push_back(timer);
  // Once the deadline passed with `force`, the destroy answers.
  auto forcing = std::make_shared<bool>(false);
  d.on_shutoff.push_back([reply, timer, forcing](const Status& s) {
    if (*forcing) return;
    timer->cancel();
    reply(s ? Result<bool>(false) : Result<bool>(s.error()));
  });
  std::weak_ptr<bool> alive = d.alive;
  const std::string n = name;  // NOLINT(performance-unnecessary-copy-initialization)
  timer->async_wait([this, alive, n, force, forcing, timeout,
                     reply](const boost::system::error_code& ec) {
    if (ec || alive.expired()) return;
    if (!force)
      return reply(make_error("domain " + n + " did not power off within " +
                              std::to_string(timeout.count() / 1000) +
                              " s (axl shutdown --force destroys it then)"));
    AXL_WARN("domain %s did not power off within %lld ms: destroying it", n.c_str(),
             static_cast<long long>(timeout.count()));
    *forcing = true;
    destroy(n,
            [reply](const Status& s) { reply(s ? Result<bool>(true) : Result<bool>(s.error())); });
  });
  qmp_powerdown(io_, d.qmp_socket(), [reply, timer](const Status& s) {
    if (s) return;
    timer->cancel();
    reply(make_error("pressing the ACPI power button: " + s.error().message));
  });
}

// QEMU was killed or failed: the guest did not power off. What follows is
// the domain's on_crash (docs/architecture.md, "Domain lifecycle").
void DomainEngine::on_crash(Domain* d) {
  std::string cause = "QEMU " + proc::describe_status(d->exit_status);
  if (auto log = config::read_file(d->dir + "/qemu.log"); log && !log->empty()) {
    std::string last = *log;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    if (auto p = last.rfind('\n'); p != std::string::npos) last = last.substr(p + 1);
    if (!last.empty() && WIFEXITED(d->exit_status)) cause += ": " + last;
  }
  d->crash_cause = cause;
  d->agent.reset();
  shutoff_waiters(*d, make_error("domain " + d->cfg.name + " crashed: " + cause));
  const std::string name = d->cfg.name;
  std::string action = d->cfg.on_crash;
  if (action == "restart") {
    auto& times = crash_restarts_[name];
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(times, [&](auto t) { return now - t > std::chrono::minutes(1); });
    if (times.size() >= kMaxCrashRestarts) {
      AXL_ERROR("domain %s crashed %zu times within a minute; preserved, not restarted",
                name.c_str(), times.size() + 1);
      action = "preserve";
    } else {
      times.push_back(now);
    }
  }
  AXL_WARN("domain %s crashed: %s; on_crash = %s", name.c_str(), cause.c_str(), action.c_str());
  set_state(*d, DomainState::kCrashed);
  if (action == "preserve") return;  // devices and vTPM kept until `axl destroy`
  if (action == "destroy") return finish_destroy(name);
  // restart: everything released, then created again from its config (its
  // disks and its vTPM's sealed state live on; a new id, like a reboot).
  const std::string toml = d->config_toml, base = d->base_dir;
  teardown(name);
  create(toml, base, [name](Result<const Domain*> r) {
    if (r)
      AXL_INFO("domain %s restarted after its crash (id %u)", name.c_str(), (*r)->id);
    else
      AXL_ERROR("domain %s: restart after its crash failed: %s", name.c_str(),
                r.error().message.c_str());
  });
}

void DomainEngine::cancel_create(Domain& d) {
  const std::string& name = d.cfg.name;
  if (d.exit_watch) d.exit_watch->cancel();
  // A create still in flight ends here: its step is cancelled and its caller told.
  if (d.pending_call) {
    d.pending_call->cancel();
    d.pending_call.reset();
    // The supervisor may start it yet: it handles this stop after that start.
    if (d.state == DomainState::kVtpmStarting) vtpm_.stop(name);
  }
  d.start_check.reset();
  if (auto done = std::move(d.on_created))
    done(make_error("domain '" + name + "' was destroyed while " + to_string(d.state)));
}

void DomainEngine::destroy(const std::string& name, std::function<void(Status)> done) {
  auto it = domains_.find(name);
  if (it == domains_.end()) return done(make_error("no domain named '" + name + "'"));
  Domain& d = *it->second;
  d.on_destroyed.push_back(std::move(done));
  if (d.state == DomainState::kStopping) return;  // already on its way
  cancel_create(d);
  if (d.qemu.pid <= 0) return finish_destroy(name);
  set_state(d, DomainState::kStopping);
  ::syscall(SYS_pidfd_send_signal, d.qemu.pidfd.get(), SIGTERM, nullptr, 0);
  // A copy: the caller's `name` may not outlive the wait.
  const std::string n = name;  // NOLINT(performance-unnecessary-copy-initialization)
  d.stop_wait =
      proc::ChildWait::start(io_, d.qemu.pidfd.get(), UniqueFd(), std::chrono::milliseconds(2000),
                             [this, n](proc::ChildWait::Outcome o) {
                               auto it = domains_.find(n);
                               if (it == domains_.end()) return;
                               Domain& d = *it->second;
                               d.stop_wait.reset();
                               if (o == proc::ChildWait::Outcome::kTimedOut)
                                 AXL_WARN(
                                     "domain %s: QEMU ignored SIGTERM for 2 s; "
                                     "SIGKILL",
                                     n.c_str());
                               // Exited: reaps it; else kills it first.
                               d.exit_status = proc::stop(d.qemu, std::chrono::milliseconds(0));
                               finish_destroy(n);
                             });
}

void DomainEngine::teardown(const std::string& name) {
  auto it = domains_.find(name);
  if (it == domains_.end()) return;
  Domain& d = *it->second;
  if (d.stop_wait) d.stop_wait->cancel();
  if (d.exit_watch) d.exit_watch->cancel();
  if (d.qemu.pid > 0) d.exit_status = proc::stop(d.qemu, std::chrono::milliseconds(2000));
  d.qemu.pid = -1;
  release_devices(d);
  stop_vtpm(d);
  remove_domain_dir(d.dir);
  domains_.erase(it);
}

void DomainEngine::finish_destroy(const std::string& name) {
  auto it = domains_.find(name);
  if (it == domains_.end()) return;
  // Copies: `name` may be the map's own key, which teardown() erases.
  const std::string n = name;  // NOLINT(performance-unnecessary-copy-initialization)
  auto waiting = std::move(it->second->on_destroyed);
  teardown(n);
  AXL_INFO("domain %s destroyed", n.c_str());
  state_changed(n, "destroyed");
  for (auto& f : waiting)
    if (f) f({});
}

void DomainEngine::stop_vtpm(Domain& d) {
  if (!d.vtpm) return;
  d.vtpm = false;
  vtpm_.stop(d.cfg.name);
}

void DomainEngine::destroy_all() {
  while (!domains_.empty()) {
    Domain& d = *domains_.begin()->second;
    cancel_create(d);
    finish_destroy(d.cfg.name);  // QEMU: SIGTERM, SIGKILL past 2 s, here and now
  }
}

void DomainEngine::rebind_async(Domain* d, size_t i, DriverConnection& drv) {
  BindingRef r = ref(d, i);
  const std::string driver = drv.name();
  const uint64_t serial = drv.serial();
  attach_channel(drv, d->devices[i].request, [=, this](Result<ChannelGrant> g) {
    DriverConnection* cur = drivers_.find_serial(driver, serial);
    DeviceBinding* b = resolve(r);
    const std::string dom = b ? r.d->cfg.name : std::string("?");
    if (!g) {
      if (b)
        AXL_ERROR("domain %s: device on driver %s not rebound: %s", dom.c_str(), driver.c_str(),
                  g.error().message.c_str());
      return;
    }
    if (!b || !cur || !b->bound.device) {  // gone meanwhile: give the channel back
      if (cur) cur->detach(g->device_id);
      return;
    }
    if (auto s = b->bound.device->rebind(std::move(g->end), cur->instance_pid()); !s) {
      cur->detach(g->device_id);
      AXL_ERROR("domain %s: device on driver %s not rebound: %s", dom.c_str(), driver.c_str(),
                s.error().message.c_str());
      return;
    }
    b->bound.device_id = g->device_id;
    AXL_INFO("domain %s: device rebound to driver %s (pid %d)", dom.c_str(), driver.c_str(),
             cur->pid());
  });
}

void DomainEngine::preattach_standby(Domain* d, size_t i, DriverConnection& sb) {
  BindingRef r = ref(d, i);
  const std::string driver = sb.name();
  const uint64_t serial = sb.serial();
  attach_channel(sb, d->devices[i].request, [=, this](Result<ChannelGrant> g) {
    DriverConnection* cur = drivers_.find_serial(driver, serial);
    DeviceBinding* b = resolve(r);
    if (!g) {
      if (b)
        AXL_WARN("domain %s: standby of %s not pre-attached: %s", r.d->cfg.name.c_str(),
                 driver.c_str(), g.error().message.c_str());
      return;
    }
    // Still the standby, and the binding still there: keep the channel ready.
    if (b && cur && cur == drivers_.find_standby(driver)) {
      b->standby.emplace(std::move(g).value());
      return;
    }
    if (cur) cur->detach(g->device_id);
    // Promoted while it answered: the binding moves by a fresh attach instead.
    if (b && cur && cur == drivers_.find(driver) && b->bound.device)
      rebind_async(r.d, r.index, *cur);
  });
}

void DomainEngine::driver_connected(DriverConnection& drv) {
  // Adoptions waiting for this driver go on (a copy: one may fail and
  // leave the table).
  std::vector<std::function<void()>> resumes;
  for (auto& [name, d] : domains_)
    if (d->adopting && d->adopting->resume_attach && d->adopting->waiting_for == drv.name()) {
      d->adopting->deadline.reset();
      resumes.push_back(std::exchange(d->adopting->resume_attach, nullptr));
    }
  for (auto& r : resumes) r();
  for (auto& [name, d] : domains_)
    for (size_t i = 0; i < d->devices.size(); ++i)
      if (d->devices[i].driver == drv.name() && d->devices[i].bound.device)
        rebind_async(d.get(), i, drv);
}

void DomainEngine::standby_connected(DriverConnection& sb) {
  for (auto& [name, d] : domains_)
    for (size_t i = 0; i < d->devices.size(); ++i)
      if (d->devices[i].driver == sb.name() && d->devices[i].bound.device)
        preattach_standby(d.get(), i, sb);
}

void DomainEngine::standby_promoted(DriverConnection& drv) {
  for (auto& [name, d] : domains_)
    for (size_t i = 0; i < d->devices.size(); ++i) {
      auto& b = d->devices[i];
      if (b.driver != drv.name() || !b.bound.device) continue;
      if (!b.standby) {  // its pre-attach had not come back: attach afresh
        rebind_async(d.get(), i, drv);
        continue;
      }
      uint32_t id = b.standby->device_id;
      Status s = b.bound.device->rebind(std::move(b.standby->end), drv.instance_pid());
      if (s) b.bound.device_id = id;
      b.standby.reset();
      if (!s)
        AXL_ERROR("domain %s: device not moved to the promoted standby of %s: %s", name.c_str(),
                  drv.name().c_str(), s.error().message.c_str());
    }
}

Result<size_t> DomainEngine::fail_over(const std::string& from, const std::string& to) {
  DriverConnection* dst = drivers_.find(to);
  if (!dst) return make_error("failover driver '" + to + "' is not connected");
  for (auto& [name, d] : domains_)
    for (auto& b : d->devices)
      if (b.driver == from && b.request.kind != dst->kind())
        return make_error("driver '" + to + "' is a " + config::to_string(dst->kind()) +
                          " driver; domain " + name + " needs a " +
                          config::to_string(b.request.kind) + " one");
  size_t moved = 0;
  for (auto& [name, d] : domains_) {
    bool any = false;
    for (size_t i = 0; i < d->devices.size(); ++i) {
      auto& b = d->devices[i];
      if (b.driver != from || !b.bound.device) continue;
      if (DriverConnection* old = drivers_.find(from)) old->detach(b.bound.device_id);
      if (b.standby) {
        if (DriverConnection* sb = drivers_.find_standby(from)) sb->detach(b.standby->device_id);
        b.standby.reset();
      }
      b.driver = to;
      d->failed_over[i] = to;
      rebind_async(d.get(), i, *dst);
      if (DriverConnection* sb = drivers_.find_standby(to)) preattach_standby(d.get(), i, *sb);
      AXL_INFO("domain %s: device %zu fails over from driver %s to %s", name.c_str(), i,
               from.c_str(), to.c_str());
      any = true;
      ++moved;
    }
    if (any) write_domain_record(*d);
  }
  return moved;
}

std::pair<uint64_t, uint64_t> DomainEngine::service_times(const std::string& driver) const {
  uint64_t rebound = 0, served = 0;
  for (auto& [name, d] : domains_)
    for (auto& b : d->devices) {
      if (b.driver != driver || !b.bound.device) continue;
      DeviceStats st = b.bound.device->stats();
      rebound = std::max(rebound, st.last_rebind_ns);
      if (st.first_served_ns && (!served || st.first_served_ns < served))
        served = st.first_served_ns;
    }
  return {rebound, served};
}

const Domain* DomainEngine::find(const std::string& name) const {
  auto it = domains_.find(name);
  return it == domains_.end() ? nullptr : it->second.get();
}

std::vector<const Domain*> DomainEngine::list() const {
  std::vector<const Domain*> v;
  for (auto& [k, d] : domains_) v.push_back(d.get());
  return v;
}

}  // namespace axl::hv

namespace axl::hv {

void DomainEngine::adopt_wait(Domain* d, const std::string& driver, std::function<void()> resume) {
  auto& a = *d->adopting;
  a.waiting_for = driver;
  a.resume_attach = std::move(resume);
  if (a.deadline) return;  // one deadline for the whole wait
  AXL_INFO("domain %s: waiting for driver %s to be back", d->cfg.name.c_str(), driver.c_str());
  a.deadline = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(kAdoptWaitMs));
  std::weak_ptr<bool> alive = d->alive;
  a.deadline->async_wait([this, d, alive, driver](const boost::system::error_code& ec) {
    auto live = alive.lock();
    if (ec || !live || !*live || !d->adopting || !d->adopting->resume_attach) return;
    create_failed(d, make_error("driver '" + driver + "' did not come back within " +
                                std::to_string(kAdoptWaitMs / 1000) + " s"));
  });
}

void DomainEngine::adopt_finish(Domain* d) {
  d->adopting.reset();
  d->exit_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d->qemu.pidfd.get()));
  d->exit_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                            [this, d](const boost::system::error_code& ec) {
                              if (!ec) on_qemu_exit(d);
                            });
  AXL_INFO("domain %s (id %u) adopted: qemu pid %d, %zu device%s resumed", d->cfg.name.c_str(),
           d->id, d->qemu.pid, d->devices.size(), d->devices.size() == 1 ? "" : "s");
  set_state(*d, DomainState::kRunning);
}

void DomainEngine::adopt_all() {
  if (!store_) return;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(state_dir_ + "/dom", ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  for (const std::string& name : names) {
    const std::string dir = state_dir_ + "/dom/" + name;
    // Whatever cannot be adopted is stopped and removed, never left running
    // unwatched.
    auto drop = [&](const std::string& why) {
      AXL_WARN("domain %s not adopted: %s", name.c_str(), why.c_str());
      if (auto k = proc::kill_recorded(dir + "/qemu.pid", std::chrono::milliseconds(2000)); k && *k)
        AXL_WARN("domain %s: its QEMU (pid %d) stopped", name.c_str(), *k);
      if (::access((dir + "/vtpm.ctrl").c_str(), F_OK) == 0 && vtpm_.stop) vtpm_.stop(name);
      remove_domain_dir(dir);
    };
    auto rec = read_kv_record(dir + "/domain.rec");
    if (!rec) {
      drop("it was not running (being created or destroyed) when the hypervisor stopped");
      continue;
    }
    auto toml = config::read_file(dir + "/config.toml");
    auto id = kv_number(*rec, "id", UINT32_MAX);
    if (!toml || !id || (*rec)["name"] != name) {
      drop("its record is incomplete");
      continue;
    }
    auto cfg = config::parse_guest(*toml, "guest config", (*rec)["base_dir"]);
    if (!cfg) {
      drop("its config: " + cfg.error().message);
      continue;
    }
    auto owned = std::make_unique<Domain>();
    Domain* d = owned.get();
    d->cfg = std::move(cfg).value();
    d->dir = dir;
    d->id = uint32_t(*id);
    next_id_ = std::max(next_id_, d->id + 1);
    d->accel = (*rec)["accel"];
    d->qemu_binary = (*rec)["qemu"];
    d->initrd = (*rec)["initrd"];
    d->nvram = (*rec)["nvram"];
    d->vtpm = (*rec)["vtpm"] == "1";
    d->config_toml = *toml;
    d->base_dir = (*rec)["base_dir"];
    for (const auto& [key, value] : *rec) {  // devices that failed over (fail_over)
      if (key.rfind("driver.", 0) != 0 || !config::valid_name(value)) continue;
      char* end = nullptr;
      const unsigned long i = strtoul(key.c_str() + 7, &end, 10);
      if (*end || key.size() == 7) continue;
      if (i < d->cfg.disks.size())
        d->cfg.disks[i].driver = value;
      else if (i - d->cfg.disks.size() < d->cfg.nics.size())
        d->cfg.nics[i - d->cfg.disks.size()].driver = value;
      else
        continue;
      d->failed_over[i] = value;
    }
    d->adopting = std::make_unique<Domain::Adoption>();
    const size_t ndev = d->cfg.disks.size() + d->cfg.nics.size();
    for (size_t i = 0; i < ndev; ++i) {
      const std::string prefix = device_prefix(name, i);
      vhost_user::KeptSession k;
      k.listen = store_->take(prefix + "listen");
      k.conn = store_->take(prefix + "conn");
      if (auto r = read_kv_record(session_path(dir, i))) k.record = std::move(r).value();
      for (const auto& [key, value] : k.record) {
        if (key.rfind("n.", 0) != 0) continue;
        auto n = kv_number(k.record, key, 8);
        for (uint64_t j = 0; n && j < *n; ++j) {
          const std::string fd_name = key.substr(2) + "." + std::to_string(j);
          k.fds[fd_name] = store_->take(prefix + fd_name);
        }
      }
      if (k.listen)
        d->adopting->sessions.emplace_back(std::move(k));
      else
        d->adopting->sessions.emplace_back(std::nullopt);  // listens afresh; QEMU reconnects
    }
    auto pid = proc::read_record(dir + "/qemu.pid");
    auto holder = proc::read_record(dir + "/qemu-ns.pid");
    auto child = pid ? (holder ? proc::adopt(pid->first, pid->second, holder->first, holder->second)
                               : proc::adopt(pid->first, pid->second))
                     : Result<proc::Child>(pid.error());
    domains_[name] = std::move(owned);
    if (!child) {
      // Its QEMU ended while no hypervisor ran: as if it ended now.
      AXL_WARN("domain %s: its QEMU is gone (%s)", name.c_str(), child.error().message.c_str());
      d->adopting.reset();
      std::optional<int> st;
      if (pid) st = reaped_status(state_dir_ + "/hv.reaped", pid->first, pid->second);
      d->exit_status = st ? *st : proc::kStatusUnknown;
      if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        on_crash(d);
      } else {
        stop_vtpm(*d);
        set_state(*d, DomainState::kShutoff);
      }
      continue;
    }
    d->qemu = std::move(child).value();
    d->qemu_start = pid->second;
    AXL_INFO("domain %s (id %u): adopting, qemu pid %d", name.c_str(), d->id, d->qemu.pid);
    create_attach(d);
  }
}

}  // namespace axl::hv
