#!/usr/bin/env bash
# Channel polling on (poll_us = 50 for a blk and a net driver domain): a
# guest writes and reads back 2 x 32 MiB of known patterns with O_DIRECT
# while the blk driver is killed twice, and answers pings from the host;
# every byte verifies.  Then, with the guest idle, the hypervisor and both
# driver domains together use under 1% of one core over 10 s (their
# utime + stime from /proc): polling only follows work, so an idle guest
# costs nothing.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
poll_us = 50
restart_max = 10
[[driver]]
name = "net0"
kind = "net"
tap = "axlt6"
poll_us = 50
TOML
truncate -s 64M "$T_DIR/disk.img"
cat >"$T_DIR/guest.sh" <<'SH'
set -e
ip addr add 10.214.6.2/24 dev eth0
ip link set eth0 up
for round in 1 2; do
  axl-tool gen 6$round 32M | dd of=/dev/vda bs=256K seek=$(( (round - 1) * 128 )) oflag=direct 2>/dev/null
  echo READ$round-SHA256 $(dd if=/dev/vda bs=256K skip=$(( (round - 1) * 128 )) count=128 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
done
echo IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)')
echo IDLE-NOW
while [ ! -e /tmp/stop ]; do sleep 1; done
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "pl"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:06:01"
[guest]
script = "guest.sh"
TOML
sha1=$("$TOOL" gen 61 32M | sha256sum | cut -d' ' -f1)
sha2=$("$TOOL" gen 62 32M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.6.1/24 dev axlt6
axl create "$T_DIR/guest.toml" >&2
for d in blk0 net0; do
  p=$(driver_pid "$d")
  [ -n "$p" ] || die "$d is not running"
  tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- '--poll-us 50' || die "$d (pid $p) does not poll: $(tr '\0' ' ' <"/proc/$p/cmdline")"
done

# Two kills of the polling blk driver while the guest's I/O runs.
for _ in $(seq 400); do console_has pl AXL-GUEST-READY && break; sleep 0.05; done
for k in 1 2; do
  for _ in $(seq 400); do console_has pl "READ$k-SHA256" && break; [ "$k" = 1 ] && break; sleep 0.05; done
  sleep "0.$((RANDOM % 5 + 3))"
  pid=$(driver_pid blk0)
  [ -n "$pid" ] || die "blk0 is not running"
  kill -KILL "$pid"
  for _ in $(seq 400); do
    np=$(driver_pid blk0)
    [ -n "$np" ] && [ "$np" != "$pid" ] && break
    sleep 0.02
  done
  [ -n "$np" ] && [ "$np" != "$pid" ] || die "blk0 was not replaced after kill $k"
  log "kill $k: blk0 pid $pid replaced by $np"
done
for _ in $(seq 1200); do console_has pl IDLE-NOW && break; sleep 0.1; done
console_has pl IDLE-NOW || die "the guest's I/O did not finish"
[ "$(console_value pl READ1-SHA256)" = "$sha1" ] || die "round 1 read back wrong data"
[ "$(console_value pl READ2-SHA256)" = "$sha2" ] || die "round 2 read back wrong data"
console_has pl "^IO-ERRORS 0$" || die "the guest saw I/O errors: $(axl console pl --log | tr -d "\r" | grep IO-ERRORS)"
# Host to guest through the polling net driver.
in_ns ping -c 20 -i 0.05 -W 2 10.214.6.2 >"$T_DIR/ping.out" || die "pings to the guest failed: $(tail -n 3 "$T_DIR/ping.out")"
grep -q ' 0% packet loss' "$T_DIR/ping.out" || die "pings lost: $(grep 'packet loss' "$T_DIR/ping.out")"

# Idle: the guest sleeps; nothing is asked of its devices.
hv=$(cat "$T_STATE/hv.pid")
blk=$(driver_pid blk0)
net=$(driver_pid net0)
ticks() {  # utime + stime of every thread of these processes, in clock ticks
  local p t=0
  for p in "$@"; do
    set -- $(sed 's/^.*) //' "/proc/$p/stat")
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
sleep 2
t0=$(ticks "$hv" "$blk" "$net")
s0=$(date +%s%N)
sleep 10
t1=$(ticks "$hv" "$blk" "$net")
ns=$(($(date +%s%N) - s0))
hz=$(getconf CLK_TCK)
# Under 1% of a core: (t1 - t0) / hz seconds of CPU in ns / 1e9 seconds.
cpu_ppm=$(( (t1 - t0) * 1000000000 / hz * 1000000 / ns ))
log "idle for $((ns / 1000000)) ms: hypervisor + blk0 + net0 used $((t1 - t0)) ticks ($((cpu_ppm / 10000)).$(printf '%02d' $((cpu_ppm % 10000 / 100)))% of a core)"
((cpu_ppm < 10000)) || die "idle with polling on, they used $((cpu_ppm / 10000))% of a core (limit 1%)"
for p in "$hv" "$blk" "$net"; do kill -0 "$p" || die "pid $p died while idle"; done
log PASS
