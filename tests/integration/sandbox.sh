#!/usr/bin/env bash
# Driver domains are confined: a blk and a net driver (fault_injection on)
# serve a guest doing disk and network I/O while each escape-attempt hook
# runs in each driver.  Every attempt fails (the driver logs the errno, or
# dies by SIGSYS and is replaced); the hypervisor keeps its PID, the guest
# keeps running and every byte it read, wrote and sent verifies.  The
# drivers map no guest RAM, hold no fd to it, live in namespaces of their
# own as a non-root uid with no_new_privs and seccomp, in an empty root.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
fault_injection = true
[[driver]]
name = "net0"
kind = "net"
tap = "axlt9"
fault_injection = true
TOML
"$TOOL" gen 7 16M >"$T_DIR/disk.img"
head -c 1M /dev/zero >"$T_DIR/ctl.img"
# Reads the disk and streams over TCP until the test writes STOP into the
# control disk, then writes 4 MiB and prints what the disk holds.
cat >"$T_DIR/guest.sh" <<'SH'
set -e
ip addr add 10.214.9.2/24 dev eth0
ip link set eth0 up
i=0
while [ ! -e /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
(axl-tool gen 41 128M | axl-tool send 10.214.9.1 5009 --retry 60; echo NET-SENT $?) &
while :; do
  echo DISK-SHA256 $(dd if=/dev/vda bs=1M count=12 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "$(dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 4)" = STOP ] && break
done
axl-tool gen 9 4M | dd of=/dev/vda bs=1M seek=12 oflag=direct conv=fsync 2>/dev/null
echo FINAL-SHA256 $(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
wait
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "sb"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
[[disk]]
driver = "blk0"
image = "ctl.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:09:01"
[guest]
script = "guest.sh"
TOML
expect_read=$(head -c 12M "$T_DIR/disk.img" | sha256sum | cut -d' ' -f1)
expect_final=$({ head -c 12M "$T_DIR/disk.img"; "$TOOL" gen 9 4M; } | sha256sum | cut -d' ' -f1)
expect_net=$("$TOOL" gen 41 128M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.9.1/24 dev axlt9
ip netns exec "$T_NS" "$TOOL" recv 10.214.9.1 5009 --timeout 300 >"$T_DIR/received" &
track $!
axl create "$T_DIR/guest.toml" >&2
hv=$(cat "$T_STATE/hv.pid")
sup=$(cat "$T_STATE/supervisor.pid")

driver_pid() { axl drivers | awk -v d="$1" '$1==d && $4=="running"{print $3}'; }
restarts() { axl drivers | awk -v d="$1" '$1==d{print $5}'; }
qemu_pid() {
  local f p
  for f in /proc/[0-9]*/stat; do
    p=${f#/proc/}
    p=${p%/stat}
    [ "$(awk '{print $4}' "$f" 2>/dev/null)" = "$hv" ] || continue
    [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == *qemu-system* ]] && { echo "$p"; return; }
  done
}
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }

# The guest is under way: it has read the disk once and the stream flows.
for _ in $(seq 600); do
  [ -n "$(console_value sb DISK-SHA256)" ] && [ -s "$T_DIR/received" ] && break
  sleep 0.1
done
[ -n "$(console_value sb DISK-SHA256)" ] || die "guest never read its disk"
qemu=$(qemu_pid)
[ -n "$qemu" ] || die "no QEMU child of the hypervisor ($hv)"

# Inodes of the guest's RAM: the memfds QEMU holds.
ram_inodes=""
for f in /proc/"$qemu"/fd/*; do
  [[ "$(readlink "$f")" == /memfd:* ]] && ram_inodes+=" $(stat -L -c %i "$f")"
done
[ -n "$ram_inodes" ] || die "QEMU ($qemu) holds no memfd: cannot tell guest RAM"
# The check below can fail: the hypervisor does map guest RAM.
maps_ram() {  # maps_ram PID: prints the guest-RAM inodes PID maps or holds
  local i
  for i in $ram_inodes; do
    awk -v i="$i" '$5==i{found=1} END{exit !found}' "/proc/$1/maps" && echo "map:$i"
    for f in /proc/"$1"/fd/*; do [ "$(stat -L -c %i "$f" 2>/dev/null)" = "$i" ] && echo "fd:$i"; done
  done
  return 0
}
[ -n "$(maps_ram "$hv")" ] || die "the hypervisor maps none of QEMU's memfds ($ram_inodes): the RAM check would prove nothing"

check_confined() {  # check_confined DRIVER
  local d=$1 p ns uid
  p=$(driver_pid "$d")
  [ -n "$p" ] || die "$d is not running"
  [ -z "$(maps_ram "$p")" ] || die "$d (pid $p) reaches guest RAM: $(maps_ram "$p")"
  for ns in user mnt pid net ipc uts; do
    [ "$(readlink "/proc/$p/ns/$ns")" != "$(readlink "/proc/$sup/ns/$ns")" ] ||
      die "$d (pid $p) shares the supervisor's $ns namespace"
  done
  uid=$(awk '/^Uid:/{print $2}' "/proc/$p/status")
  [ "$uid" != 0 ] || die "$d (pid $p) runs as root"
  grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$p/status" || die "$d (pid $p) lacks no_new_privs"
  grep -q '^Seccomp:[[:space:]]*2$' "/proc/$p/status" || die "$d (pid $p) has no seccomp filter"
  grep -q '^CapEff:[[:space:]]*0*$' "/proc/$p/status" || die "$d (pid $p) kept capabilities"
  [ -z "$(ls -A "/proc/$p/root/")" ] || die "$d (pid $p) sees files in its root: $(ls -A "/proc/$p/root/")"
  if [ "$d" = blk0 ] && [ "$uring" = 1 ]; then  # its I/O engine, made before the sandbox
    ls -l "/proc/$p/fd/" | grep -q 'anon_inode:\[io_uring\]' || die "$d (pid $p) holds no io_uring"
  fi
  log "$d (pid $p, uid $uid): own namespaces, no guest RAM, seccomp, empty root"
}
# An unprivileged driver gets an io_uring only where the kernel allows it
# to everyone (kernel.io_uring_disabled = 0).
uring=1
if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 0 ]; then
  uring=0
  log "SKIP part: io_uring is disabled for unprivileged processes on this host (kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled)); the uring-escape hook and the ring check do not run"
fi
check_confined blk0
check_confined net0

# hook -> what must happen: the attempt is refused with an errno the driver
# logs, or the driver dies by SIGSYS and is replaced.
# uring-escape (blk only): the driver's io_uring is asked for an openat of
# host.toml, a read through an fd it did not register, and a registration
# outside its allow-list; the kernel refuses all three with EACCES (the
# ring's restrictions: driverdom/blk/io_ring.h) and the driver serves on.
declare -A outcome=(
  [open-host-file]=sigsys [map-hv-mem]=sigsys
  [open-socket]=sigsys [ptrace-hv]=sigsys [signal-hv]=sigsys
  [uring-escape]=errno
)
declare -A refusals=([uring-escape]=3)
for d in blk0 net0; do
  hooks="open-host-file open-socket ptrace-hv signal-hv map-hv-mem"
  [ "$d" = blk0 ] && [ "$uring" = 1 ] && hooks="uring-escape $hooks"
  for h in $hooks; do
    p=$(driver_pid "$d")
    r=$(restarts "$d")
    lines=$(wc -l <"$T_STATE/driver-$d.log")
    axl inject "$d" "$h" >&2
    if [ "${outcome[$h]}" = errno ]; then
      want=${refusals[$h]:-1}
      for _ in $(seq 100); do
        [ "$(tail -n +"$((lines + 1))" "$T_STATE/driver-$d.log" | grep -c "escape $h: .* denied")" -ge "$want" ] && break
        sleep 0.05
      done
      new=$(tail -n +"$((lines + 1))" "$T_STATE/driver-$d.log")
      [ "$(grep -c "escape $h: .* denied: E\(PERM\|ACCES\|NOENT\)" <<<"$new")" -ge "$want" ] ||
        die "$d $h: fewer than $want refused attempts logged: $new"
      ! grep -q "SUCCEEDED\|denied: E[A-Z]*" <<<"$(grep -v 'denied: E\(PERM\|ACCES\|NOENT\)' <<<"$new")" ||
        die "$d $h: an attempt was not refused as expected: $new"
      sleep 0.3  # a few heartbeats: the driver lives on
      [ "$(driver_pid "$d")" = "$p" ] || die "$d $h: driver did not survive a refused attempt"
      log "$d $h: $(grep -c 'denied' <<<"$new") attempts refused ($(grep -o 'denied: E[A-Z]*' <<<"$new" | sort -u | tr '\n' ' '))"
    else
      for _ in $(seq 200); do
        np=$(driver_pid "$d")
        [ -n "$np" ] && [ "$np" != "$p" ] && break
        sleep 0.05
      done
      [ -n "$np" ] && [ "$np" != "$p" ] || die "$d $h: driver $p was not replaced"
      [ "$(restarts "$d")" = $((r + 1)) ] || die "$d $h: expected one restart more than $r"
      axl drivers | awk -v d="$d" '$1==d' | grep -q "Bad system call" ||
        die "$d $h: not killed by SIGSYS: $(axl drivers)"
      tail -n +"$((lines + 1))" "$T_STATE/driver-$d.log" | grep -q "escape $h: attempting" ||
        die "$d $h: the hook never ran"
      ! tail -n +"$((lines + 1))" "$T_STATE/driver-$d.log" | grep -q "SUCCEEDED" ||
        die "$d $h: an attempt succeeded"
      log "$d $h: killed by SIGSYS, replaced by pid $np"
    fi
    alive "$hv" || die "hypervisor ($hv) died after $d $h"
    [ "$(cat "$T_STATE/hv.pid")" = "$hv" ] || die "hypervisor pid changed after $d $h"
    alive "$qemu" || die "guest's QEMU died after $d $h"
  done
done
# The replacements are confined as well.
check_confined blk0
check_confined net0
[ "$(axl list | awk '$1=="sb"{print $5}')" = running ] || die "guest is not running: $(axl list)"

printf STOP | dd of="$T_DIR/ctl.img" conv=notrunc status=none
axl wait sb --timeout 300 >&2 || die "guest script failed"
wait "${T_PIDS[0]}" || die "receiver failed"
T_PIDS=()
axl drivers --stats >&2
reads=$(axl console sb --log | tr -d '\r' | sed -n 's/^DISK-SHA256 \([0-9a-f]\{64\}\).*/\1/p')
[ -n "$reads" ] || die "guest printed no disk reads"
bad=$(grep -vc "^$expect_read$" <<<"$reads" || true)
[ "$bad" = 0 ] || die "$bad of $(wc -l <<<"$reads") disk reads returned wrong data"
[ "$(console_value sb FINAL-SHA256)" = "$expect_final" ] || die "guest's disk after its write is wrong"
[ "$(sha_of "$T_DIR/disk.img")" = "$expect_final" ] || die "the image on the host is wrong"
console_has sb '^NET-SENT 0' ||
  die "guest's TCP send failed: $(axl console sb --log | tr -d '\r' | grep -v '^DISK-SHA256' | tail -n 15 | tr '\n' '|')"
[ "$(sha_of "$T_DIR/received")" = "$expect_net" ] || die "TCP stream corrupted ($(stat -c %s "$T_DIR/received") bytes)"
for d in blk0 net0; do
  ! grep -q "SUCCEEDED" "$T_STATE/driver-$d.log" || die "$d: an escape attempt succeeded"
done
log "$(wc -l <<<"$reads") disk reads verified during the attempts; PASS"
