#!/usr/bin/env bash
# axolotl-hv is SIGKILLed while a guest streams TCP to the host and loops
# disk write/read-back rounds (blk0 with a parked spare, net0 with a warm
# standby).  Its monitor restarts it; the new hypervisor takes back what the
# monitor kept (QEMU's vhost-user connections, guest memory, ring eventfds,
# the inflight regions, the driver connections), binds every device to a
# fresh channel from its driver and resumes each ring where the guest left
# it: QEMU never sees a disconnect, the guest only a stall.  Killed twice,
# the second time just after blk0 was killed (a driver restart under way).
# Every streamed byte and every disk round verifies, the guest's kernel logs
# no I/O error or reset, the domain is listed again, the drivers keep their
# pids; `axl host down` leaves no process behind.  With HV_CRASH_IOMMU=1
# (integration.hv_crash_iommu) the guest has an IOMMU: ring and buffer
# addresses are IOVAs, and the successor's IOTLB fills again through misses.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

workload_host axlt12 "" "standby = true"
iommu=false
[ -n "${HV_CRASH_IOMMU:-}" ] && iommu=true
workload_script "$T_DIR/guest.sh" 10.214.12 112
workload_guest hc 52:54:00:12:12:01 "iommu = $iommu"

axl host up --config "$T_DIR/host.toml" >&2
T_UP=1
workload_start hc 10.214.12 axlt12
rounds() { workload_rounds hc; }
hv_pid() { cat "$T_STATE/hv.pid" 2>/dev/null || true; }
qemu_pid() { axl list | awk '$1=="hc"{print $7}'; }
qemu=$(qemu_pid)
log "guest runs, qemu pid $qemu"

# kill_hv WHY: SIGKILLs the hypervisor, waits for its successor to list the
# domain running again, then for the disk rounds and the stream to go on.
kill_hv() {
  local old new r0 b0
  old=$(hv_pid)
  r0=$(rounds)
  b0=$(workload_bytes)
  kill -KILL "$old"
  for _ in $(seq 200); do
    new=$(hv_pid)
    [ -n "$new" ] && [ "$new" != "$old" ] && axl list 2>/dev/null | grep -q '^hc .*running' && break
    sleep 0.05
  done
  [ -n "$new" ] && [ "$new" != "$old" ] || die "the hypervisor was not restarted ($1)"
  axl list | grep -q '^hc .*running' || die "the domain is not listed running again ($1): $(axl list)"
  [ "$(qemu_pid)" = "$qemu" ] || die "QEMU changed ($1): $qemu -> $(qemu_pid)"
  for _ in $(seq 600); do
    (($(rounds) > r0 + 1)) && (($(workload_bytes) > b0 + 1048576)) && break
    sleep 0.1
  done
  (($(rounds) > r0 + 1)) || die "disk rounds stopped after the hypervisor's crash ($1)"
  (($(workload_bytes) > b0 + 1048576)) || die "the stream stopped after the hypervisor's crash ($1)"
  grep -q "domain hc (id [0-9]*) adopted" "$T_STATE/hv.log" ||
    die "the hypervisor's log does not tell of the adoption ($1)"
  log "hypervisor $old -> $new ($1): rounds and stream go on"
}

drivers_before="$(driver_col blk0 3) $(driver_col net0 3)"
kill_hv "first kill"
[ "$(driver_col blk0 3) $(driver_col net0 3)" = "$drivers_before" ] ||
  die "driver domains were replaced: $drivers_before -> $(driver_col blk0 3) $(driver_col net0 3)"
grep -q "session resumed" "$T_STATE/hv.log" || die "no vhost-user session was resumed"

# A driver restart under way when the hypervisor dies.
blk=$(driver_col blk0 3)
kill -KILL "$blk"
kill_hv "second kill, during blk0's restart"
for _ in $(seq 200); do
  [ "$(driver_col blk0 4)" = running ] && [ "$(driver_col blk0 3)" != "$blk" ] && break
  sleep 0.05
done
[ "$(driver_col blk0 3)" != "$blk" ] || die "blk0 was not restarted: $(axl drivers)"
# The other direction: the host reaches the guest through the resumed NIC.
in_ns ping -c 5 -i 0.2 -W 2 10.214.12.2 >/dev/null || die "the host cannot ping the guest after the crashes"

workload_finish hc 10.214.12 112
every="$(driver_col blk0 3) $(driver_col blk0 8) $(driver_col net0 3) $(driver_col net0 8) $qemu $(hv_pid)"
axl host down >&2
T_UP=0
assert_gone $every
log "PASS"
