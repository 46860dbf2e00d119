#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun
after changing an input format).  Each seed is a small, meaningful input:
a valid exchange or config first, then edge cases.  The byte layouts are the
ones documented at the top of each fuzz target."""
import os
import struct
import subprocess
import sys

top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(top, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- configs ---------------------------------------------------------------
write("host_config", "readme", """\
[[driver]]
name = "net0"
kind = "net"
tap = "axltap0"

[[driver]]
name = "blk0"
kind = "blk"
heartbeat_ms = 100
heartbeat_misses = 5
restart_max = 10
restart_window_s = 60
backoff_ms = 0
standby = false
memory_max_mib = 512
pids_max = 64
cpu_percent = 0
fault_injection = true
fault_at_start = "crash"
""")
write("host_config", "minimal_blk", '[[driver]]\nname = "b"\nkind = "blk"\n')
write("host_config", "standby_net", '[[driver]]\nname="n-1"\nkind="net"\ntap="t_0"\nstandby=true\n'
      '[[driver]]\nname="n2"\nkind="net"\ntap="t1"\n')
write("host_config", "out_of_range", '[[driver]]\nname = "b"\nkind = "blk"\ncpu_percent = 6401\n')
write("host_config", "inline_table", 'driver = [{name = "b", kind = "blk"}]\n')
write("host_config", "empty", "")

write("guest_config", "readme", """\
name = "g1"
memory_mib = 512
vcpus = 1
accel = "auto"
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:34:56"
[guest]
script = "run.sh"
""")
write("guest_config", "full", """\
name = "g-2"
memory_mib = 65536
vcpus = 64
accel = "tcg"
kernel = "/boot/vmlinuz"
initrd = "initrd.gz"
cmdline = "quiet loglevel=3"
[[disk]]
driver = "blk0"
image = "/images/a.img"
readonly = true
[[disk]]
driver = "blk1"
image = "b.img"
[[nic]]
driver = "net0"
mac = "02:00:00:00:00:01"
[[nic]]
driver = "net1"
mac = "fe:ff:ff:ff:ff:ff"
""")
write("guest_config", "minimal", 'name = "g"\n')
write("guest_config", "bad_mac", 'name = "g"\n[[nic]]\ndriver = "n"\nmac = "01:00:5e:00:00:01"\n')
write("guest_config", "strings", "name = 'g'\ncmdline = \"\"\"\nmulti\"\"\"\nkernel = '''k'''\n")

# ---- vhost-user ------------------------------------------------------------
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
GET_CONFIG, SET_CONFIG, RESET_DEVICE = 24, 25, 34
NEED_REPLY = 1 << 3
FEATURES = (1 << 32) | (1 << 30) | (1 << 29) | (1 << 28)
UVA = 0x7F0000000000
RAM = 64 * 1024


def msg(req, payload=b"", flags=0):
    return struct.pack("<III", req, 1 | flags, len(payload)) + payload


def u64(v):
    return struct.pack("<Q", v)


def vstate(i, n):
    return struct.pack("<II", i, n)


def vaddr(i, desc, used, avail):
    return struct.pack("<IIQQQQ", i, 0, desc, used, avail, 0)


def memtable(regions):
    return struct.pack("<II", len(regions), 0) + b"".join(struct.pack("<QQQQ", *r) for r in regions)


def config(off, size, data=None):
    return struct.pack("<III", off, size, 0) + (data if data is not None else bytes(size))


mt = memtable([(0, RAM, UVA, 0)])
write("vhost_user_message", "memtable_first", bytes([1]) + msg(SET_MEM_TABLE, mt, NEED_REPLY)
      + msg(GET_FEATURES) + msg(SET_FEATURES, u64(FEATURES)))
write("vhost_user_message", "kick_first", bytes([1]) + msg(SET_VRING_KICK, u64(0))
      + msg(SET_VRING_CALL, u64(1 | 0x100)) + msg(SET_VRING_NUM, vstate(0, 256)))
write("vhost_user_message", "ring_setup", bytes([0]) + msg(SET_VRING_ADDR, vaddr(0, UVA, UVA + 0x2000, UVA + 0x1000))
      + msg(SET_VRING_BASE, vstate(0, 0)) + msg(GET_CONFIG, config(0, 60))
      + msg(SET_CONFIG, config(4, 4, b"\1\2\3\4")) + msg(GET_VRING_BASE, vstate(0, 0)))
write("vhost_user_message", "too_many_fds", bytes([10]) + msg(SET_MEM_TABLE, memtable([(0, RAM, UVA, 0)] * 9)))
write("vhost_user_message", "oversized", bytes([0]) + struct.pack("<III", 5, 1, 4097))
write("vhost_user_message", "bad_version", bytes([0]) + struct.pack("<III", 1, 2, 0))


def step_msg(req, payload=b"", flags=1, fds=0):
    """Handler fuzz step 0: flags bit0 = NEED_REPLY; fds = count | 0x10 for guest RAM."""
    return bytes([0, req, flags, fds]) + struct.pack("<H", len(payload)) + payload


def step_kick(q):
    return bytes([1, q])


def step_guest(off, data):
    out = b""
    while data:
        chunk, data = data[:255], data[255:]
        out += bytes([2]) + struct.pack("<HB", off, len(chunk)) + chunk
        off += len(chunk)
    return out


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


handshake = (step_msg(GET_FEATURES, flags=0) + step_msg(SET_OWNER)
             + step_msg(GET_PROTOCOL_FEATURES, flags=0)
             + step_msg(SET_PROTOCOL_FEATURES, u64((1 << 0) | (1 << 3) | (1 << 9)))
             + step_msg(SET_FEATURES, u64(FEATURES))
             + step_msg(SET_MEM_TABLE, mt, fds=0x11)
             + step_msg(SET_VRING_NUM, vstate(0, 8)) + step_msg(SET_VRING_BASE, vstate(0, 0))
             + step_msg(SET_VRING_ADDR, vaddr(0, UVA + 0x1000, UVA + 0x3000, UVA + 0x2000))
             + step_msg(SET_VRING_CALL, u64(0), fds=1) + step_msg(SET_VRING_KICK, u64(0), fds=1)
             + step_msg(SET_VRING_ENABLE, vstate(0, 1)))
chain = (step_guest(0x1000, desc(0x8000, 64, 1, 1) + desc(0x9000, 64, 2, 0))
         + step_guest(0x2000, struct.pack("<HHH", 0, 1, 0)))
write("vhost_user_handler", "handshake_and_chain", bytes([0, 3]) + handshake + chain + step_kick(0)
      + step_msg(GET_CONFIG, config(0, 16), flags=0) + step_msg(GET_VRING_BASE, vstate(0, 0), flags=0))
indirect = (step_guest(0x1000, desc(0x4000, 32, 4, 0))
            + step_guest(0x4000, desc(0x8000, 16, 1, 1) + desc(0x9000, 16, 2, 0))
            + step_guest(0x2000, struct.pack("<HHH", 0, 1, 0)))
write("vhost_user_handler", "indirect_then_reset", bytes([1, 1]) + handshake + indirect + step_kick(0)
      + step_msg(RESET_OWNER) + step_msg(RESET_DEVICE) + bytes([3]))
write("vhost_user_handler", "no_protocol_features", bytes([1, 0])
      + step_msg(SET_FEATURES, u64(1 << 32)) + step_msg(SET_MEM_TABLE, mt, fds=0x11)
      + step_msg(SET_VRING_NUM, vstate(0, 8))
      + step_msg(SET_VRING_ADDR, vaddr(0, UVA + 0x1000, UVA + 0x3000, UVA + 0x2000))
      + step_msg(SET_VRING_KICK, u64(0), fds=1) + chain + step_kick(0)
      + step_msg(SET_MEM_TABLE, memtable([(0x100000, RAM, UVA + 0x100000, 0)]), fds=0x11))
write("vhost_user_handler", "bad_messages", bytes([0, 0])
      + step_msg(SET_OWNER, flags=3) + step_msg(SET_VRING_NUM, vstate(0, 3))
      + step_msg(SET_VRING_KICK, u64(0x1ff)) + step_msg(SET_MEM_TABLE, mt, fds=1)
      + step_msg(99, b"x", fds=2))

# ---- virtqueue ---------------------------------------------------------------
# cfg: bits 0-3 log2(queue size) (mod 9), 0x10 EVENT_IDX, 0x20 INDIRECT_DESC,
# 0x40 leave avail idx as the image says, 0x80 a full ring available.
# Then the start index u16, the RAM image length u16 and the image, then
# steps.  Guest RAM starts at 0x10000; the descriptor table is its first byte.
B = 0x10000


def vq_seed(cfg, descs, steps=b"\0" * 4, start=0, extra=b""):
    image = b"".join(descs) + extra
    return bytes([cfg]) + struct.pack("<HH", start, len(image)) + image + steps


write("virtqueue", "direct_chain", vq_seed(3, [desc(B + 0x4000, 16, 1, 1), desc(B + 0x4100, 512, 3, 2),
                                               desc(B + 0x4400, 1, 2, 0)]))
write("virtqueue", "indirect", vq_seed(0x23, [desc(B + 0x3000, 48, 4, 0)], extra=b"\0" * (0x3000 - 16)
                                       + desc(B + 0x4000, 16, 1, 1) + desc(B + 0x4100, 16, 1, 2)
                                       + desc(B + 0x4200, 8, 2, 0)))
write("virtqueue", "loop", vq_seed(2, [desc(B + 0x4000, 16, 1, 1), desc(B + 0x4000, 16, 1, 0)]))
write("virtqueue", "event_idx_wrap", vq_seed(0x90 | 4, [desc(B + 0x4000, 64, 2, 0)], steps=b"\6\6\6\6",
                                             start=0xfffe))
write("virtqueue", "readable_after_writable", vq_seed(3, [desc(B + 0x4000, 4, 3, 1), desc(B + 0x4000, 4, 0, 0)]))
write("virtqueue", "outside_ram", vq_seed(3, [desc(B + 0x7ff0, 32, 0, 0)]))

# ---- channel responses ---------------------------------------------------------


def resp(i, status, length):
    return struct.pack("<BbH", i, status, length)


blk = bytes([0])
blk += bytes([0, 0, 2, 1, 0])        # IN, sector 2, 1 sector
blk += bytes([0, 1, 4, 2, 1])        # OUT, sector 4, 2 sectors, split
blk += bytes([0, 2, 0, 0, 0])        # FLUSH
blk += bytes([0, 3, 0, 0, 0])        # GET_ID
blk += bytes([5])                    # the driver pops them
blk += bytes([1]) + resp(0, 0, 512) + bytes([1]) + resp(1, 0, 0) + bytes([2])
blk += bytes([1]) + resp(2, 0, 0) + bytes([1]) + resp(3, 0, 11) + bytes([2])
write("blk_responses", "read_write_flush_id", blk)
write("blk_responses", "duplicate_completion", bytes([0]) + bytes([0, 0, 0, 8, 0, 5])
      + bytes([1]) + resp(0, 0, 4096) + bytes([1]) + resp(0, 0, 4096) + bytes([2]))
write("blk_responses", "rebind_replays", bytes([0]) + bytes([0, 1, 0, 1, 0]) + bytes([0, 0, 9, 3, 1])
      + bytes([1]) + resp(9, 0, 0) + bytes([2]) + bytes([4, 0]) + bytes([5])
      + bytes([1]) + resp(0, 0, 0) + bytes([1]) + resp(1, 1, 0) + bytes([2]) + bytes([4, 1]))
write("blk_responses", "bad_ring_head", bytes([0]) + bytes([0, 0, 0, 1, 0]) + bytes([3])
      + struct.pack("<I", 0x80000000) + bytes([2]) + bytes([0, 2, 0, 0, 0]) + bytes([4, 0, 2]))
write("blk_responses", "status_and_length", bytes([1]) + bytes([0, 0, 0, 1, 0]) + bytes([1]) + resp(0, 3, 0)
      + bytes([2, 4, 0]) + bytes([1]) + resp(0, -1, 0) + bytes([2, 4, 0]) + bytes([1]) + resp(0, 0, 513)
      + bytes([2]))


def eth(n):
    return bytes(12) + b"\xff" * 6 + b"\x52\x54\x00\x12\x34\x56" + b"\x08\x00" + bytes(n - 26)


def net_resp(i, status, frame):
    return bytes([2]) + resp(i, status, len(frame)) + frame


net = bytes([0x07])                                        # MRG_RXBUF, CSUM, GUEST_CSUM
net += bytes([0]) + struct.pack("<HB", 1526, 0)            # an RX buffer
net += bytes([0]) + struct.pack("<HB", 64, 1)              # a small one, split
tx = eth(72)
net += bytes([1]) + struct.pack("<H", len(tx)) + tx        # a TX frame
net += bytes([6])                                          # the driver pops
net += net_resp(0, 0, eth(60)) + net_resp(4, 0, b"") + bytes([3])
net += net_resp(1, 0, eth(200)) + bytes([3, 7])
write("net_responses", "rx_tx_mergeable", net)
write("net_responses", "rx_no_mergeable_too_big", bytes([0]) + bytes([0]) + struct.pack("<HB", 64, 0)
      + net_resp(0, 0, eth(100)) + bytes([3]) + net_resp(0, 0, eth(40)) + bytes([3]))
csum = bytearray(eth(80))
csum[0] = 1                       # NEEDS_CSUM
csum[6:8] = struct.pack("<H", 34)  # csum_start
csum[8:10] = struct.pack("<H", 16)  # csum_offset
write("net_responses", "rx_needs_csum_guest_without", bytes([0]) + bytes([0]) + struct.pack("<HB", 2048, 0)
      + net_resp(1, 0, bytes(csum)) + bytes([3]))
write("net_responses", "tx_rebind_and_violation", bytes([0x80]) + bytes([1]) + struct.pack("<H", len(tx)) + tx
      + bytes([1]) + struct.pack("<H", 8) + bytes(8) + bytes([5, 0, 6])
      + net_resp(4, 0, b"") + net_resp(4, 0, b"") + bytes([3]) + bytes([5, 1, 4]) + struct.pack("<I", 7) + bytes([3]))
write("net_responses", "rx_short_header", bytes([0]) + bytes([0]) + struct.pack("<HB", 100, 0)
      + net_resp(2, 0, bytes(5)) + bytes([3]) + net_resp(3, 1, b"") + bytes([3]))

# ---- driver control messages (driver_messages_fuzz.cc) -----------------------
# u32 device id asked for, then one Cap'n Proto message as the packet carried
# it, encoded by the capnp tool from common/schema/driver.capnp.
schema = os.path.join(os.path.dirname(top), "..", "common", "schema", "driver.capnp")


def driver_msg(text):
    return subprocess.run(["capnp", "encode", schema, "DriverMsg"], input=text.encode(),
                          capture_output=True, check=True).stdout


write("driver_messages", "hello", struct.pack("<I", 1)
      + driver_msg('(hello = (name = "blk0", kind = blk, pid = 4242))'))
write("driver_messages", "hello_standby_net", struct.pack("<I", 1)
      + driver_msg('(hello = (name = "net-0", kind = net, pid = 77, standby = true))'))
write("driver_messages", "attached_ok", struct.pack("<I", 3)
      + driver_msg("(attached = (deviceId = 3, ok = true))"))
write("driver_messages", "attached_refused", struct.pack("<I", 3)
      + driver_msg('(attached = (deviceId = 3, ok = false,'
                   ' error = "attach carries 2 fds, expected 3"))'))
write("driver_messages", "attached_wrong_id", struct.pack("<I", 4)
      + driver_msg("(attached = (deviceId = 3, ok = true))"))


# ---- qcow2 images (qemu-img makes them; small clusters keep them small) ----
def qcow2_seed(name, flags, offset, length, commands):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for c in commands:
            subprocess.run(c, shell=True, cwd=d, check=True, capture_output=True)
        with open(os.path.join(d, "img"), "rb") as f:
            image = f.read()
    write("qcow2_image", name, struct.pack("<BQH", flags, offset, length) + image)


qcow2_seed("v3_data_read", 0, 0, 0, [
    "yes abc | head -c 8192 > raw",
    "qemu-img convert -O qcow2 -o cluster_size=512 raw img"])
qcow2_seed("v3_write_new_cluster", 1, 9000, 700, [
    "yes abc | head -c 4096 > raw",
    "qemu-img convert -O qcow2 -o cluster_size=512 raw img",
    "qemu-img resize img 16K"])
qcow2_seed("v3_zero_clusters", 1, 100, 64, [
    "qemu-img create -f qcow2 -o cluster_size=512 img 8K",
    "qemu-io -c 'write -P 0x5a 0 1024' -c 'write -z 512 512' img"])
qcow2_seed("v2_compat", 1, 511, 2, [
    "yes xyz | head -c 2048 > raw",
    "qemu-img convert -O qcow2 -o compat=0.10,cluster_size=512 raw img"])

print("seeds written under", top, file=sys.stderr)
