#!/usr/bin/env bash
# A guest with `iommu = true` (emulated Intel IOMMU, iommu_platform devices):
# its kernel must really translate (DMAR up, the virtio devices in IOMMU
# groups with a translated DMA domain), and its disk and network I/O goes
# through the hypervisor's IOTLB: the disk reads back with the host's
# sha256, a written pattern lands in the image, a TCP stream reaches a
# receiver on the host side of the TAP intact, and the hypervisor's IOTLB
# counters show updates were processed and no fault was raised.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlim0"

[[driver]]
name = "blk0"
kind = "blk"
TOML
"$TOOL" gen 21 32M >"$T_DIR/disk.img"
disk_sha=$(sha_of "$T_DIR/disk.img")
pattern_sha=$("$TOOL" gen 22 8M | sha256sum | cut -d' ' -f1)
stream_sha=$("$TOOL" gen 23 32M | sha256sum | cut -d' ' -f1)

cat >"$T_DIR/guest.sh" <<'SH'
set -e
# The guest kernel uses the IOMMU: DMAR enabled, a remapping unit in
# /sys/class/iommu, and every virtio PCI function (vendor 0x1af4) in an IOMMU
# group whose default domain translates (DMA or DMA-FQ, not identity).
dmesg | grep -q 'DMAR: IOMMU enabled' && echo IOMMU-DMAR-ENABLED
echo IOMMU-UNITS $(ls /sys/class/iommu | wc -l)
n=0
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor")" = 0x1af4 ] || continue
  g=$(readlink -f "$d/iommu_group") || continue
  case "$(cat "$g/type")" in DMA|DMA-FQ) n=$((n + 1)) ;; esac
done
echo IOMMU-TRANSLATED-VIRTIO $n
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
# The disk's queue is 512 through the IOMMU too (its descriptor table and
# used ring span two pages each, contiguous in IOVA only), so a 1 MiB
# request of 256 page segments travels whole; read 8 of them O_DIRECT.
echo "QUEUE-MAX-SEGMENTS $(cat /sys/block/vda/queue/max_segments)"
echo DISK-DIRECT-SHA256 $(dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
axl-tool gen 22 8M | dd of=/dev/vda bs=1M seek=8 conv=fsync 2>/dev/null
sync
ip addr add 10.215.0.2/24 dev eth0
ip link set eth0 up
axl-tool gen 23 32M | axl-tool send 10.215.0.1 5001 --retry 30
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "im1"
memory_mib = 512
vcpus = 1
iommu = true
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:00:21"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.215.0.1/24 dev axlim0
ip netns exec "$T_NS" "$TOOL" recv 10.215.0.1 5001 --timeout 400 >"$T_DIR/received" &
track $!
axl create "$T_DIR/guest.toml" >&2
axl wait im1 --timeout 400 >&2 || die "guest script failed (status $?)"
wait "${T_PIDS[0]}" || die "receiver failed"
T_PIDS=()

out=$(axl console im1 --log | tr -d '\r')
grep -qx IOMMU-DMAR-ENABLED <<<"$out" || die "guest kernel did not enable the IOMMU"
units=$(sed -n 's/^IOMMU-UNITS \([0-9]*\)$/\1/p' <<<"$out")
[ "${units:-0}" -ge 1 ] || die "no IOMMU in the guest's /sys/class/iommu"
translated=$(sed -n 's/^IOMMU-TRANSLATED-VIRTIO \([0-9]*\)$/\1/p' <<<"$out")
# The disk, the NIC and the guest agent's virtio-serial port.
[ "${translated:-0}" = 3 ] || die "expected all 3 virtio devices behind a translating IOMMU domain, got ${translated:-none}"

[ "$(console_value im1 DISK-SHA256)" = "$disk_sha" ] || die "guest read a different disk: $(console_value im1 DISK-SHA256) != $disk_sha"
grep -qx 'QUEUE-MAX-SEGMENTS 256' <<<"$out" || die "the disk does not take 256 segments through the IOMMU: $(grep QUEUE-MAX <<<"$out")"
first8=$(head -c 8M "$T_DIR/disk.img" | sha256sum | cut -d' ' -f1)
[ "$(console_value im1 DISK-DIRECT-SHA256)" = "$first8" ] || die "1 MiB O_DIRECT reads through the IOMMU returned other data"
written=$(dd if="$T_DIR/disk.img" bs=1M skip=8 count=8 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$written" = "$pattern_sha" ] || die "the guest's 8 MiB write is not in the image"
[ "$(sha_of "$T_DIR/received")" = "$stream_sha" ] || die "TCP stream arrived corrupted ($(stat -c %s "$T_DIR/received") bytes)"

# The hypervisor logs each device's IOTLB counters when QEMU's connection
# goes (the guest powered off): both devices negotiated the IOMMU, processed
# updates and raised no fault.
for _ in $(seq 50); do
  [ "$(grep -c 'iotlb: ' "$T_STATE/hv.log")" -ge 2 ] && break
  sleep 0.2
done
[ "$(grep -c 'guest IOMMU on' "$T_STATE/hv.log")" -ge 2 ] || die "a device did not negotiate VIRTIO_F_ACCESS_PLATFORM"
stats=$(grep 'iotlb: ' "$T_STATE/hv.log")
log "$stats"
[ "$(wc -l <<<"$stats")" -ge 2 ] || die "no IOTLB counters for both devices in hv.log"
while read -r line; do
  updates=$(sed -n 's/.*iotlb: \([0-9]*\) updates.*/\1/p' <<<"$line")
  faults=$(sed -n 's/.* \([0-9]*\) faults$/\1/p' <<<"$line")
  [ "${updates:-0}" -gt 0 ] || die "a device processed no IOTLB update: $line"
  [ "${faults:-x}" = 0 ] || die "IOMMU faults on a well-behaved guest: $line"
done <<<"$stats"

pids="$(cat "$T_STATE"/hv.pid "$T_STATE"/supervisor.pid) $(axl drivers | awk 'NR>1{print $3}')"
axl host down >&2
T_UP=0
assert_gone $pids
log "PASS"
