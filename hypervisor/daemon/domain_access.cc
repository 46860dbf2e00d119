#include "hypervisor/daemon/domain_access.h"

namespace axl::hv {

using policy::Kind;
using policy::Object;
using policy::Permission;
using policy::Subject;

Status check_domain(const policy::Policy& policy, const Decide& decide, const Subject* op,
                    const config::GuestConfig& cfg) {
  auto refuse = [](const policy::Decision& d) { return make_error(policy::denied(d)); };
  if (op) {
    auto d = decide(*op, Permission::kCreate, Object{Kind::kGuest, cfg.name});
    if (!d.allowed) return refuse(d);
  }
  if (policy.guest(cfg.name).require_vtpm && !cfg.vtpm.enabled)
    return make_error("denied by policy: guest " + cfg.name +
                      " must have a vTPM ([vtpm] enabled = true; require_vtpm in " +
                      policy.origin() + ")");
  const Subject guest = Subject::domain(Kind::kGuest, cfg.name);
  auto attach = [&](const std::string& driver, Permission p) -> Status {
    auto d = decide(guest, p, Object{Kind::kDriver, driver});
    if (!d.allowed) return refuse(d);
    d = decide(Subject::domain(Kind::kDriver, driver), Permission::kBindChannel,
               Object{Kind::kGuest, cfg.name});
    if (!d.allowed) return refuse(d);
    return {};
  };
  for (const auto& n : cfg.nics)
    if (auto s = attach(n.driver, Permission::kAttachNet); !s) return s;
  for (const auto& b : cfg.disks)
    if (auto s = attach(b.driver, Permission::kAttachBlk); !s) return s;
  return {};
}

}  // namespace axl::hv
