#!/usr/bin/env bash
# Faults in the host daemons themselves (`axl inject --daemon supervisor|hv
# crash`, host config daemon_fault_injection = true) while a guest streams
# TCP to the host and loops disk write/read-back rounds: each daemon aborts,
# its monitor restarts it, the successor takes over what it kept (the
# supervisor its drivers, the hypervisor the guest's devices), and the guest
# runs on: the drivers and QEMU keep their pids, every streamed byte and
# every disk round verifies, and the guest's kernel logs no error.  Without
# the setting the request is refused with one line and nothing happens.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

workload_host axlt17
# A top-level key goes before the first [[driver]] table.
sed -i '1i daemon_fault_injection = true' "$T_DIR/host.toml"
workload_script "$T_DIR/guest.sh" 10.214.17 117
workload_guest df 52:54:00:12:17:01
host_up "$T_DIR/host.toml"
workload_start df 10.214.17 axlt17

pid_of() { cat "$T_STATE/$1.pid" 2>/dev/null || true; }
progress() {  # progress N: N more disk rounds and more bytes streamed
  local r0 b0
  r0=$(workload_rounds df) b0=$(workload_bytes)
  for _ in $(seq 600); do
    (($(workload_rounds df) >= r0 + $1)) && (($(workload_bytes) > b0)) && return
    sleep 0.1
  done
  die "the guest made no progress"
}
drivers_before="$(driver_col blk0 3) $(driver_col net0 3)"
qemu=$(axl list | awk '$1=="df"{print $7}')
for daemon in supervisor hv; do
  pid=$(pid_of "$daemon")
  [ -n "$pid" ] || die "no $daemon pid"
  out=$(axl inject --daemon "$daemon" crash)
  log "$out"
  np=""
  for _ in $(seq 200); do
    np=$(pid_of "$daemon")
    [ -n "$np" ] && [ "$np" != "$pid" ] && axl list >/dev/null 2>&1 && axl drivers >/dev/null 2>&1 && break
    sleep 0.05
  done
  [ -n "$np" ] && [ "$np" != "$pid" ] || die "the $daemon (pid $pid) was not restarted"
  ! kill -0 "$pid" 2>/dev/null || die "the old $daemon (pid $pid) still runs"
  grep -q "fault hook: crash" "$T_STATE/$daemon.log" || die "the $daemon did not log the fault"
  log "$daemon: pid $pid aborted, pid $np took over"
  progress 2
  [ "$(driver_col blk0 3) $(driver_col net0 3)" = "$drivers_before" ] ||
    die "the drivers changed after the $daemon crash: $(axl drivers)"
  [ "$(axl list | awk '$1=="df"{print $7}')" = "$qemu" ] || die "QEMU changed after the $daemon crash"
done
workload_finish df 10.214.17 117
axl host down >&2
T_UP=0

# Off by default: refused with one line, the daemon unharmed.
workload_host axlt17
host_up "$T_DIR/host.toml"
pid=$(pid_of hv)
if axl inject --daemon hv crash >"$T_DIR/out" 2>&1; then die "a daemon fault was accepted with injection off"; fi
grep -qx "axl: fault injection is disabled for the host daemons (set daemon_fault_injection = true in the host config)" \
  "$T_DIR/out" || die "refusal: $(cat "$T_DIR/out")"
if axl inject --daemon qemu crash >"$T_DIR/out" 2>&1; then die "an unknown daemon was accepted"; fi
grep -qx "axl: --daemon: NAME must be supervisor or hv, not 'qemu'" "$T_DIR/out" || die "bad daemon: $(cat "$T_DIR/out")"
sleep 0.2
[ "$(pid_of hv)" = "$pid" ] && kill -0 "$pid" || die "a refused fault changed the hypervisor"
log "PASS"
