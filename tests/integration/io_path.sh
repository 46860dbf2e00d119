#!/usr/bin/env bash
# A guest boots under QEMU TCG with a disk and a NIC served by two driver
# domains: it reads the disk (sha256 must equal the host's), writes a new
# 16 MiB pattern that the host must find in the image, and streams 64 MiB over
# TCP to a receiver on the host side of the TAP.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt0"

[[driver]]
name = "blk0"
kind = "blk"
TOML
"$TOOL" gen 11 64M >"$T_DIR/disk.img"
disk_sha=$(sha_of "$T_DIR/disk.img")
pattern_sha=$("$TOOL" gen 12 16M | sha256sum | cut -d' ' -f1)
stream_sha=$("$TOOL" gen 13 64M | sha256sum | cut -d' ' -f1)

cat >"$T_DIR/guest.sh" <<'SH'
set -e
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
axl-tool gen 12 16M | dd of=/dev/vda bs=1M seek=16 conv=fsync 2>/dev/null
sync
ip addr add 10.214.0.2/24 dev eth0
ip link set eth0 up
axl-tool gen 13 64M | axl-tool send 10.214.0.1 5001 --retry 30
echo NET-SHA256 $(axl-tool gen 13 64M | sha256sum | cut -d' ' -f1)
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "io1"
memory_mib = 512
vcpus = 1
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:00:01"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.0.1/24 dev axlt0
ip netns exec "$T_NS" "$TOOL" recv 10.214.0.1 5001 --timeout 300 >"$T_DIR/received" &
track $!
axl create "$T_DIR/guest.toml" >&2
axl list >&2
axl drivers >&2
axl wait io1 --timeout 300 >&2 || die "guest script failed (status $?)"
wait "${T_PIDS[0]}" || die "receiver failed"
T_PIDS=()

[ "$(console_value io1 DISK-SHA256)" = "$disk_sha" ] || die "guest read a different disk: $(console_value io1 DISK-SHA256) != $disk_sha"
written=$(dd if="$T_DIR/disk.img" bs=1M skip=16 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$written" = "$pattern_sha" ] || die "the guest's 16 MiB write is not in the image"
untouched=$(dd if="$T_DIR/disk.img" bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$untouched" = "$("$TOOL" gen 11 16M | sha256sum | cut -d' ' -f1)" ] || die "bytes before the write changed"
[ "$(sha_of "$T_DIR/received")" = "$stream_sha" ] || die "TCP stream arrived corrupted ($(stat -c %s "$T_DIR/received") bytes)"
[ "$(console_value io1 NET-SHA256)" = "$stream_sha" ] || die "guest and host disagree on the stream"

# Everything the host started must be gone after host down.
pids="$(cat "$T_STATE"/hv.pid "$T_STATE"/supervisor.pid) $(axl drivers | awk 'NR>1{print $3}')"
axl host down >&2
T_UP=0
assert_gone $pids
log "PASS"
