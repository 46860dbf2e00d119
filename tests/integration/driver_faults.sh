#!/usr/bin/env bash
# Data-path faults and escape attempts: the blk and the net driver domain
# each break the channel protocol in five ways (fault hooks wild-write,
# bogus-id, bogus-len, dup-completion, stall) and try five escapes
# (open-host-file, open-socket, ptrace-hv, signal-hv, map-hv-mem) while one
# guest keeps doing O_DIRECT disk I/O and TCP to a receiver on the host side
# of its TAP.  After every hook: the hypervisor quarantined the channel (or
# the sandbox killed the driver by SIGSYS) and is alive, the supervisor
# replaced the driver with the hook's cause as its last failure, and the
# guest runs on.  At the end: a 64 MiB region of guest memory hashes as before the
# attacks, every disk round and every TCP stream verifies, and the guest's
# kernel logged no I/O or virtio error.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
fault_injection = true
restart_max = 20
io_timeout_ms = 1000
[[driver]]
name = "net0"
kind = "net"
tap = "axlt5"
fault_injection = true
restart_max = 20
io_timeout_ms = 1000
TOML
truncate -s 16M "$T_DIR/disk.img"
STOP_SECTOR=16384  # 8 MiB in: the host writes STOP there when the attacks are over
cat >"$T_DIR/guest.sh" <<SH
set -e
ip addr add 10.214.5.2/24 dev eth0
ip link set eth0 up
axl-tool gen 77 64M >/tmp/region
region=\$(sha256sum /tmp/region | cut -d' ' -f1)
echo REGION-SHA \$region
r=0
while :; do
  r=\$((r + 1))
  axl-tool gen \$r 4M | dd of=/dev/vda bs=256K oflag=direct 2>/dev/null
  got=\$(dd if=/dev/vda bs=256K count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "\$got" = "\$(axl-tool gen \$r 4M | sha256sum | cut -d' ' -f1)" ] || echo DISK-BAD \$r
  axl-tool gen \$((1000 + r)) 4M | axl-tool send 10.214.5.1 5005 --retry 30
  [ "\$(sha256sum /tmp/region | cut -d' ' -f1)" = "\$region" ] || echo REGION-BAD \$r
  echo ROUND-DONE \$r
  [ "\$(dd if=/dev/vda bs=512 skip=$STOP_SECTOR count=1 iflag=direct 2>/dev/null | head -c 4)" = STOP ] && break
done
echo ROUNDS \$r
echo REGION-AFTER \$(sha256sum /tmp/region | cut -d' ' -f1)
dmesg | grep -iE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)|NETDEV WATCHDOG|eth0.*(timed out|reset|down)' | sed 's/^/KERNEL-ERROR /' || true
echo IO-ERRORS \$(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)|NETDEV WATCHDOG|eth0.*(timed out|reset|down)')
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "df"
memory_mib = 512
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:05:01"
[guest]
script = "guest.sh"
TOML
region_expect=$("$TOOL" gen 77 64M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.5.1/24 dev axlt5
# One TCP stream per guest round, each into its own file.
(
  i=0
  while :; do
    i=$((i + 1))
    ip netns exec "$T_NS" "$TOOL" recv 10.214.5.1 5005 --timeout 120 >"$T_DIR/net.$i" 2>/dev/null || exit 0
  done
) &
track $!
axl create "$T_DIR/guest.toml" >&2
hv_pid=$(cat "$T_STATE/hv.pid")

rounds_done() { axl console df --log | tr -d '\r' | sed -n 's/^ROUND-DONE \([0-9]*\).*/\1/p' | tail -n 1; }
for _ in $(seq 600); do [ -n "$(rounds_done)" ] && break; sleep 0.1; done
[ -n "$(rounds_done)" ] || die "guest did not finish a first round of disk and network I/O"
[ "$(console_value df REGION-SHA)" = "$region_expect" ] || die "guest region hashed wrong before the attacks"

declare -A CAUSE=(
  [wild-write]="protocol violation: completion id .* was never issued"
  [bogus-id]="protocol violation: completion id .* was never issued"
  [bogus-len]="protocol violation: length .* beyond the .* posted for id"
  [dup-completion]="protocol violation: duplicate completion id"
  [stall]="stalled: request [0-9]* outstanding for [0-9]* ms"
  # Escape attempts: the sandbox's seccomp filter kills the driver (SIGSYS).
  [open-host-file]="crash: killed by Bad system call"
  [open-socket]="crash: killed by Bad system call"
  [ptrace-hv]="crash: killed by Bad system call"
  [signal-hv]="crash: killed by Bad system call"
  [map-hv-mem]="crash: killed by Bad system call"
)
attacks=0
for drv in blk0 net0; do
  for hook in wild-write bogus-id bogus-len dup-completion stall \
    open-host-file open-socket ptrace-hv signal-hv map-hv-mem; do
    pid=$(driver_col "$drv" 3)
    before=$(rounds_done)
    axl inject "$drv" "$hook" >&2
    np=""
    for _ in $(seq 300); do
      np=$(driver_col "$drv" 3)
      [ "$(driver_col "$drv" 4)" = running ] && [ -n "$np" ] && [ "$np" != "$pid" ] && break
      sleep 0.1
    done
    [ -n "$np" ] && [ "$np" != "$pid" ] || die "$drv was not replaced after $hook"
    attacks=$((attacks + 1))
    cause=$(last_failure "$drv")
    log "$drv $hook: pid $pid replaced by $np; last failure: $cause"
    grep -qE "${CAUSE[$hook]}" <<<"$cause" || die "$drv $hook: last failure '$cause' is not the hook's"
    kill -0 "$hv_pid" || die "hypervisor died after $drv $hook"
    [ "$(axl list | awk '$1=="df"{print $5}')" = running ] || die "guest stopped after $drv $hook"
    # The guest's disk and network make progress on the new instance.
    for _ in $(seq 600); do
      [ "$(rounds_done)" -ge $((before + 2)) ] && break
      sleep 0.1
    done
    [ "$(rounds_done)" -ge $((before + 2)) ] || die "guest I/O made no progress after $drv $hook"
  done
done
printf 'STOP' | dd of="$T_DIR/disk.img" bs=512 seek=$STOP_SECTOR conv=notrunc 2>/dev/null
axl wait df --timeout 120 >&2 || die "guest script failed"
axl drivers --stats >&2

rounds=$(axl console df --log | tr -d '\r' | sed -n 's/^ROUNDS \([0-9]*\).*/\1/p')
[ -n "$rounds" ] && ((rounds >= 2 * attacks)) || die "guest reported '$rounds' rounds"
axl console df --log | tr -d '\r' | grep -E '^(DISK|REGION)-BAD' >&2 && die "guest saw wrong disk data or a changed memory region"
[ "$(console_value df REGION-AFTER)" = "$region_expect" ] || die "guest memory region changed"
errors=$(axl console df --log | tr -d '\r' | sed -n 's/^IO-ERRORS \([0-9]*\).*/\1/p')
[ "$errors" = 0 ] || die "guest kernel logged $errors I/O, virtio or network errors: $(axl console df --log | tr -d '\r' | grep KERNEL-ERROR | head -n 3)"
for i in $(seq "$rounds"); do
  [ "$(sha_of "$T_DIR/net.$i")" = "$("$TOOL" gen $((1000 + i)) 4M | sha256sum | cut -d' ' -f1)" ] ||
    die "TCP stream of round $i corrupted ($(stat -c %s "$T_DIR/net.$i") bytes)"
done
[ "$(dd if="$T_DIR/disk.img" bs=256K count=16 2>/dev/null | sha256sum | cut -d' ' -f1)" = \
  "$("$TOOL" gen "$rounds" 4M | sha256sum | cut -d' ' -f1)" ] || die "host image does not hold the last round's data"
for drv in blk0 net0; do
  [ "$(driver_col "$drv" 5)" = 10 ] || die "$drv: expected 10 restarts, got $(driver_col "$drv" 5)"
  grep -q "escape .*: attempting" "$T_STATE/driver-$drv.log" || die "$drv: no escape attempt in its log"
  ! grep -q "SUCCEEDED" "$T_STATE/driver-$drv.log" || die "$drv: an escape attempt succeeded"
done
outages=$(axl drivers --stats | sed '1,/^$/d')  # the outage records, not the driver table
[ "$(grep -c 'protocol violation: ' <<<"$outages")" = 8 ] || die "expected 8 protocol violations in the outage records"
[ "$(grep -c 'stalled: request ' <<<"$outages")" = 2 ] || die "expected 2 stalls in the outage records"
[ "$(grep -c 'killed by Bad system call' <<<"$outages")" = 10 ] || die "expected 10 SIGSYS kills in the outage records"
log "PASS"
