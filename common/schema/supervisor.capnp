@0x8bf7510bb001eb8e;
# supervisor <-> driver domain health channel (a socketpair handed to the
# driver at spawn).  The supervisor pings; a live driver answers from its
# event loop, so a hung loop (or a SIGSTOPped process) stops answering.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("axl::schema");

struct Heartbeat {
  union {
    ping @0 :UInt64;   # sequence number
    pong @1 :UInt64;   # the sequence number answered
    fault @2 :Text;    # run a fault hook (only honoured when the driver was
                       # started with fault injection enabled by the host config)
    start @3 :Void;    # to a parked spare: become the active instance now; a
                       # sandboxed one gets its hypervisor connection with it
                       # (SCM_RIGHTS)
  }
  # With `fault`: when it fires.  Absent (all zero): at once.
  trigger @4 :FaultTrigger;
}

# axl inject --after N --probability P --seed S (common/fault_trigger.h).
struct FaultTrigger {
  after @0 :UInt64;         # requests the domain answers normally first
  probability @1 :Float64;  # then each request fires it with this chance (0: the first)
  seed @2 :UInt64;          # of those draws: the same seed, the same request
}
