@0x9a6364ac8e386031;
# hypervisor <-> driver domain control protocol (over SOCK_SEQPACKET, fds by SCM_RIGHTS).
# The driver connects to the hypervisor's driver socket and says Hello; the
# hypervisor then attaches and detaches device instances.  Everything a
# driver sends is untrusted.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("axl::schema");

enum DriverKind { net @0; blk @1; }

struct DriverMsg {
  union {
    hello @0 :Hello;            # driver -> hv, first message
    attach @1 :Attach;          # hv -> driver; fds: [channel memfd, req_kick, resp_kick, (blk: image, backing...)]
    detach @2 :Detach;          # hv -> driver
    attached @3 :Attached;      # driver -> hv, answer to attach
  }
}

struct Hello {
  name @0 :Text;
  kind @1 :DriverKind;
  pid @2 :Int32;
  standby @3 :Bool;       # a warm standby: attach channels now, requests only once promoted
}

struct Attach {
  deviceId @0 :UInt32;    # hypervisor-chosen, unique per driver connection
  slots @1 :UInt32;
  slotSize @2 :UInt32;
  union {
    net @3 :NetAttach;
    blk @4 :BlkAttach;
  }
}

struct NetAttach {
  mac @0 :Data;           # 6 bytes: the guest NIC's MAC, for the driver's switch
}

struct BlkAttach {
  readOnly @0 :Bool;
  serial @1 :Text;        # answered to VIRTIO_BLK_T_GET_ID
  formats @2 :List(Text); # per image fd, "raw" or "qcow2": the disk, then its
                          # backing chain (nearest first); empty: one raw image
  aio @3 :Text;           # "auto" (or absent), "io_uring" or "sync"
}

struct Detach {
  deviceId @0 :UInt32;
}

struct Attached {
  deviceId @0 :UInt32;
  ok @1 :Bool;
  error @2 :Text;
}
