#!/usr/bin/env bash
# Restarts with warm standbys while a guest streams TCP to the host and loops
# disk write/read-back rounds: for each driver (blk0, net0) a SIGKILL (the
# hypervisor promotes the standby when the connection drops), then three kills
# the supervisor decides itself, where it fences the old instance and has the
# standby promoted before it kills: a SIGSTOP (found hung), an operator
# restart, and a quarantine (the driver sends a completion for an id never
# issued).  Every streamed byte and every disk round verifies, the guest's
# kernel logs no I/O or network error, and each driver shows 4 restarts.  The
# SIGKILL is reported to the hypervisor by the channel's liveness lock (the
# robust futex the kernel releases while the driver exits).
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

driver_opts="standby = true
heartbeat_ms = 20
heartbeat_misses = 3
fault_injection = true
restart_max = 20"
workload_host axlt7 "$driver_opts" "$driver_opts"
workload_script "$T_DIR/guest.sh" 10.214.7 71
workload_guest fr 52:54:00:12:07:01

host_up "$T_DIR/host.toml"
workload_start fr 10.214.7 axlt7
rounds() { workload_rounds fr; }

# fault DRIVER HOW: injects, then waits until a new active and a new standby run.
fault() {
  local d=$1 how=$2 pid sb r0 s0
  pid=$(driver_col "$d" 3)
  sb=$(driver_col "$d" 8)
  r0=$(rounds)
  s0=$(workload_bytes)
  case $how in
    KILL | STOP) kill -"$how" "$pid" ;;
    restart) axl driver-restart "$d" >&2 ;;
    quarantine) axl inject "$d" bogus-id >&2 ;;
  esac
  for _ in $(seq 400); do
    [ "$(driver_col "$d" 3)" = "$sb" ] && [ "$(driver_col "$d" 4)" = running ] &&
      [ "$(driver_col "$d" 8)" != - ] && [ "$(driver_col "$d" 8)" != "$sb" ] && break
    sleep 0.05
  done
  [ "$(driver_col "$d" 3)" = "$sb" ] || die "$d: standby $sb not promoted after $how ($(axl drivers))"
  # The workload goes on: another round and more bytes after the fault.
  for _ in $(seq 600); do
    (($(rounds) > r0 + 1)) && (($(workload_bytes) > s0)) && break
    sleep 0.1
  done
  (($(rounds) > r0 + 1)) || die "$d: disk rounds stopped after $how"
  (($(workload_bytes) > s0)) || die "$d: the stream stopped after $how"
  log "$d $how: pid $pid -> $sb ($(axl drivers | awk -v d="$d" '$1==d{for (i=9; i<=NF; ++i) printf "%s ", $i}'))"
}
for d in blk0 net0; do
  for how in KILL STOP restart quarantine; do fault "$d" "$how"; done
done

workload_finish fr 10.214.7 71
axl drivers --stats >&2
for d in blk0 net0; do
  [ "$(driver_col "$d" 5)" = 4 ] || die "$d: $(driver_col "$d" 5) restarts, expected 4"
  n=$(grep -c "driver '$d' (pid [0-9]*) fenced on request" "$T_STATE/hv.log" || true)
  [ "$n" = 3 ] || die "$d: fenced $n times before a kill, expected 3 (hang, restart, quarantine)"
  # The SIGKILL: the hypervisor learned it from the channel's liveness lock,
  # which the kernel releases before the dying driver's socket closes.
  n=$(grep -c "driver '$d' (pid [0-9]*) died: the kernel released its channel lock" "$T_STATE/hv.log" || true)
  [ "$n" = 1 ] || die "$d: $n deaths reported by the channel lock, expected 1 (the SIGKILL)"
done
stats=$(axl drivers --stats | awk '/^Driver +When/ {t = 1; next} t')
for cause in "hang: " "restart requested" "protocol violation" "crash: killed by Killed"; do
  [ "$(grep -c -- "$cause" <<<"$stats")" = 2 ] || die "expected 2 outages with cause '$cause': $stats"
done
# A crash's record says when the hypervisor's channel lock told of it
# (HvDetect, the 7th field: the date and time are two).
[ "$(awk '/crash: killed by Killed/ && $7 ~ /^[0-9]+$/' <<<"$stats" | wc -l)" = 2 ] ||
  die "the crashes' records lack the hypervisor's detection: $stats"
log "PASS"
