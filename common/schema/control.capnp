@0xb82807dbd3661e27;
# axl CLI <-> host daemons (axolotl-hv, axolotl-supervisor).
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("axl::schema");

struct ControlRequest {
  union {
    create @0 :CreateDomain;
    list @1 :Void;
    destroy @2 :Text;          # domain name
    listDrivers @3 :Void;
    shutdown @4 :Void;         # stop the daemon and everything it started
    ping @5 :Void;
    domainInfo @6 :Text;       # domain name
    killDriver @7 :KillDriver; # supervisor: send a signal to a driver domain
    restartDriver @8 :Text;    # supervisor: kill and restart a driver domain
    injectFault @9 :InjectFault;  # supervisor: run a fault hook in a driver domain
    driverQuarantined @10 :DriverQuarantined;  # hv -> supervisor: replace that instance
    startVtpm @11 :StartVtpm;  # hv -> supervisor: start a domain's vTPM; replies when it listens
    stopVtpm @12 :Text;        # hv -> supervisor: stop the vTPM of this domain (SIGTERM, by PID)
    listVtpms @13 :Void;       # supervisor: the vTPM domains it watches
    domainStateChanged @14 :DomainStateChanged;  # hv -> supervisor: emitted on D-Bus
    promoteStandby @15 :Text;  # supervisor -> hv: fence this driver's active instance
                               # and move its devices to its warm standby now
    driverServed @16 :DriverServed;  # hv -> supervisor: first request served after a rebind
    guestExec @18 :GuestExec;  # hv: run a command in a domain through its guest agent
    guestShutdown @19 :GuestShutdown;  # hv: ACPI power-off, answered once QEMU exited
    reloadPolicy @21 :ReloadPolicy;  # both: check, or put in force, a new access policy
    openConsole @22 :OpenConsole;    # hv: the console's socket (or log) as an fd, after the policy
    openVtpm @23 :OpenVtpm;          # supervisor: a connection to a domain's vTPM as an fd
    policyCounted @24 :PolicyCounted;  # hv -> supervisor: its decisions so far (D-Bus counters)
    deleteVtpm @26 :Text;      # supervisor: retire a domain's vTPM state (not while it runs)
    failOver @25 :FailOver;    # supervisor -> hv: move a given-up driver's devices to its failover
  }
  # On whose behalf a host daemon asks (the supervisor forwarding a D-Bus
  # call): honoured only from a peer running as root, ignored otherwise.
  caller @20 :Caller;
  # Chosen by the client, unique among its requests in flight on one
  # connection; the reply carries it back (replies on one connection may come
  # in any order: a deferred answer does not hold up the next request).
  id @17 :UInt64;
}

# The hypervisor asks for a domain's vTPM at `axl create`.  Every path is
# derived by the supervisor from the domain name and its own state dir
# (STATE/vtpm/NAME, STATE/vtpm-host/{key,ca}, STATE/dom/NAME/vtpm.ctrl and
# vtpm.cmd); the hypervisor only says whether it wrote a boot event log
# (STATE/dom/NAME/eventlog.bin) and which TCP port to serve, if any.
struct StartVtpm {
  domain @0 :Text;
  measureLog @1 :Bool;
  commandPort @2 :UInt32;  # 0: none; else 1024..65534 (and +1 for control)
}

struct VtpmInfo {
  domain @0 :Text;
  pid @1 :Int32;
  state @2 :Text;        # running | restarting | failed | stopped
  restarts @3 :UInt32;
  lastFailure @4 :Text;
  commandPort @5 :UInt32;
  uptimeMs @6 :UInt64;
}

# The hypervisor quarantined a channel of one driver instance (a protocol
# violation or no progress past io_timeout_ms).  The supervisor kills that
# instance with `cause` and restarts it through its normal path; a report
# about an instance that is no longer the active one is ignored.
struct DriverQuarantined {
  name @0 :Text;
  pid @1 :Int32;         # the instance, as the kernel named it to the hypervisor
  cause @2 :Text;        # e.g. "protocol violation: duplicate completion id 17"
}

# A domain changed state, whoever caused it; the supervisor emits the D-Bus
# signal DomainStateChanged(name, state).
struct DomainStateChanged {
  name @0 :Text;
  state @1 :Text;        # preparing | vtpm-starting | attaching | starting | running |
                         # shutoff | failed (create failed; gone) | destroyed
}

# The first request a driver instance completed after its devices moved to
# it: the end of the outage the supervisor records (CLOCK_MONOTONIC ns).
struct DriverServed {
  name @0 :Text;
  pid @1 :Int32;
  reboundNs @2 :UInt64;
  servedNs @3 :UInt64;
  diedNs @4 :UInt64;     # when the hypervisor learned that the instance before it died
                         # (its channel lock); 0: it did not learn that way
}

struct KillDriver {
  name @0 :Text;
  signal @1 :Text;       # KILL | STOP | SEGV | ABRT
}

# `axl inject DRIVER FAULT [--after N] [--probability P] [--seed S]`.  The
# first two fields are laid out as KillDriver's (which this message used to be).
struct InjectFault {
  name @0 :Text;
  fault @1 :Text;        # a fault hook (common/config.h kFaultNames)
  after @2 :UInt64;      # see FaultTrigger (supervisor.capnp)
  probability @3 :Float64;
  seed @4 :UInt64;
  vtpm @5 :Bool;         # `name` is a domain: the fault goes to its vTPM (kVtpmFaultNames)
  daemon @6 :Bool;       # the fault (crash) is for the daemon that receives this
}

# `axl exec NAME -- PATH ARGS...`: qemu-guest-agent's guest-exec in the
# guest, its output captured (docs/architecture.md, "Guest agent").
struct GuestExec {
  domain @0 :Text;
  path @1 :Text;
  args @2 :List(Text);
  timeoutMs @3 :UInt32;
}

# `axl shutdown NAME [--force]`.
struct GuestShutdown {
  domain @0 :Text;
  timeoutMs @1 :UInt32;
  force @2 :Bool;        # destroy the domain once timeoutMs passed
}

struct ExecResult {
  exitCode @0 :Int32;    # -1: ended by a signal
  signal @1 :Int32;
  stdout @2 :Data;
  stderr @3 :Data;
  truncated @4 :Bool;    # the agent cut the output short
}

struct CreateDomain {
  configToml @0 :Text;   # the guest config, already validated by axl
  baseDir @1 :Text;      # relative paths in the config resolve against this
  vtpmState @2 :Text;    # a name that had a vTPM before: "keep" it or make a "new" one
}

struct DomainInfo {
  name @0 :Text;
  id @1 :UInt32;
  state @2 :Text;        # preparing | vtpm-starting | attaching | starting | running |
                         # shutoff | crashed | stopping
  memoryMib @3 :UInt32;
  vcpus @4 :UInt32;
  qemuPid @5 :Int32;
  exitStatus @6 :Int32;  # QEMU's exit status once shut off
  accel @7 :Text;
  consoleLog @8 :Text;   # path of the console log
  consoleSocket @9 :Text;
  crashCause @10 :Text;  # state crashed: how its QEMU ended
  firmware @11 :Text;    # "" (direct kernel boot) | bios | uefi
}

struct DriverInfo {
  name @0 :Text;
  kind @1 :Text;
  pid @2 :Int32;
  state @3 :Text;        # starting | ready | failed | stopped
  restarts @4 :UInt32;
  devices @5 :UInt32;
  lastFailure @6 :Text;
  uptimeMs @7 :UInt64;
  heartbeatLagMs @8 :Float64;   # age of the last heartbeat answer
  reboundNs @9 :UInt64;         # hv: CLOCK_MONOTONIC of the last rebind of its devices
  firstServedNs @10 :UInt64;    # hv: first completion after that rebind (0: none yet)
  outages @11 :List(Outage);
  standbyPid @12 :Int32;        # the warm standby's pid (0: none)
  sparePid @13 :Int32;          # the parked spare's pid (0: none)
}

# One driver failure and recovery, as the supervisor saw it.
struct Outage {
  cause @0 :Text;
  detectUs @1 :UInt64;   # failure -> detection
  restartUs @2 :UInt64;  # failure -> new instance spawned
  outageUs @3 :UInt64;   # failure -> first request served by the new instance (0: not yet)
  atUnixS @4 :UInt64;
  hvDetectUs @5 :Int64 = -1;  # failure -> the hypervisor's channel lock told of the death
                              # (0: it was the first to know; -1: unknown)
}

struct ControlReply {
  ok @0 :Bool;
  error @1 :Text;
  domains @2 :List(DomainInfo);
  drivers @3 :List(DriverInfo);
  vtpms @4 :List(VtpmInfo);
  id @5 :UInt64;         # the request's id
  exec @6 :ExecResult;   # guestExec
  forced @7 :Bool;       # guestShutdown: destroyed past its timeout
  golden @8 :Text;       # openVtpm for attest: the policy's golden values for the guest, if any
  policyAllowed @9 :UInt64;  # reloadPolicy: the daemon's decision counters
  policyDenied @10 :UInt64;
}

struct Caller {
  present @0 :Bool;
  uid @1 :Int32;
  gids @2 :List(Int32);
  dbusNames @3 :List(Text);
}

struct ReloadPolicy {
  text @0 :Text;      # the policy file's contents (policy/access.h)
  origin @1 :Text;    # its name in errors and audit lines
  dryRun @2 :Bool;    # only check that it parses and fits what runs now
}

struct OpenConsole {
  domain @0 :Text;
  log @1 :Bool;       # the console log (read-only) instead of the live console
}

struct OpenVtpm {
  domain @0 :Text;
  purpose @1 :Text;   # "access" (vtpm_access) | "attest" (attest)
}

struct PolicyCounted {
  allowed @0 :UInt64;
  denied @1 :UInt64;
}

struct FailOver {
  from @0 :Text;      # the driver that used up its restart budget
  to @1 :Text;        # the one the policy names its failover
}
