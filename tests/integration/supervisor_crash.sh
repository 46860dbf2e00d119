#!/usr/bin/env bash
# The supervisor is SIGKILLed while a guest streams TCP to the host and loops
# disk write/read-back rounds (blk0 with a parked spare, net0 with a warm
# standby).  The data path never depends on it: the rounds and the stream go
# on while it is gone.  Its monitor restarts it; the new supervisor adopts
# every driver instance (the same pids, roles and health channels, which the
# monitor kept in its fd store), busctl sees org.axolotl leave and return,
# and a driver SIGKILLed afterwards is restarted.  Then the supervisor is
# killed again while its monitor is held stopped, and blk0 is killed while
# no supervisor runs: once the monitor goes on, the new supervisor finds it
# dead and restarts it.  Every byte and disk round verifies; the guest's
# kernel logs no error; `axl host down` leaves no process behind.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns
start_bus

busctl --address="$BUS" monitor \
  --match="type='signal',member='NameOwnerChanged',arg0='org.axolotl'" >"$T_DIR/owners.txt" 2>&1 &
track $!
for _ in $(seq 100); do
  bus list 2>/dev/null | grep -q busctl && break
  sleep 0.05
done

workload_host axlt11 "" "standby = true"
workload_script "$T_DIR/guest.sh" 10.214.11 111
workload_guest sc 52:54:00:12:11:01

axl host up --config "$T_DIR/host.toml" --bus "$BUS" >&2
T_UP=1
workload_start sc 10.214.11 axlt11
rounds() { workload_rounds sc; }
sup_pid() { cat "$T_STATE/supervisor.pid" 2>/dev/null || true; }
mon_pid() { cat "$T_STATE/supervisor-monitor.pid"; }
for _ in $(seq 100); do [ "$(driver_col blk0 8)" != - ] && break; sleep 0.1; done

# Every instance: blk0's active and parked spare, net0's active and standby.
instances() { echo "$(driver_col blk0 3) $(driver_col blk0 8) $(driver_col net0 3) $(driver_col net0 8)"; }
before=$(instances)
log "instances before: $before"
grep -q ' - \| -$' <<<"$before" && die "an instance is missing: $(axl drivers)"

# 1. SIGKILL: nothing pauses, the successor adopts everything.
old=$(sup_pid)
r0=$(rounds)
b0=$(workload_bytes)
kill -KILL "$old"
# While it is gone and coming back, the guest's I/O goes on at its pace.
for _ in $(seq 300); do
  (($(rounds) > r0 + 1)) && (($(workload_bytes) > b0 + 1048576)) && break
  sleep 0.1
done
(($(rounds) > r0 + 1)) || die "disk rounds stalled after the supervisor's crash"
(($(workload_bytes) > b0 + 1048576)) || die "the stream stalled after the supervisor's crash"
for _ in $(seq 100); do
  new=$(sup_pid)
  [ -n "$new" ] && [ "$new" != "$old" ] && axl drivers >/dev/null 2>&1 && break
  sleep 0.1
done
[ -n "$new" ] && [ "$new" != "$old" ] || die "the supervisor was not restarted"
after=$(instances)
log "supervisor $old -> $new; instances after: $after"
[ "$after" = "$before" ] || die "instances not adopted as they were: $before -> $after"
grep -q "adopted its active instance, pid $(driver_col blk0 3)" "$T_STATE/supervisor.log" ||
  die "the supervisor's log does not tell of the adoption"
# The service left the bus and came back (NameOwnerChanged, new owner last).
for _ in $(seq 100); do
  busctl --address="$BUS" --timeout=2 call org.axolotl /org/axolotl/Manager1 \
    org.axolotl.Manager1 ListDrivers >/dev/null 2>&1 && break
  sleep 0.1
done
manager call ListDrivers >&2 || die "org.axolotl did not come back on the bus"
[ "$(grep -c 'NameOwnerChanged' "$T_DIR/owners.txt")" -ge 3 ] ||
  die "busctl saw no NameOwnerChanged for the loss and the return: $(cat "$T_DIR/owners.txt")"

# 2. The adopted instances are watched: a SIGKILLed driver is restarted (from
# its adopted spare), and net0's adopted standby is promoted.
for d in blk0 net0; do
  pid=$(driver_col "$d" 3)
  r0=$(rounds)
  kill -KILL "$pid"
  for _ in $(seq 200); do
    [ "$(driver_col "$d" 4)" = running ] && [ "$(driver_col "$d" 3)" != "$pid" ] && [ "$(driver_col "$d" 5)" = 1 ] && break
    sleep 0.05
  done
  [ "$(driver_col "$d" 3)" != "$pid" ] && [ "$(driver_col "$d" 5)" = 1 ] ||
    die "$d: not restarted after its adoption: $(axl drivers)"
  for _ in $(seq 600); do (($(rounds) > r0 + 1)) && break; sleep 0.1; done
  (($(rounds) > r0 + 1)) || die "disk rounds stopped after $d's restart"
  log "$d: pid $pid killed, $(driver_col "$d" 3) serves"
done

# 3. A driver that dies while no supervisor runs is restarted once one is back.
blk=$(driver_col blk0 3)
mon=$(mon_pid)
kill -STOP "$mon"
old=$(sup_pid)
kill -KILL "$old"
kill -KILL "$blk"
sleep 1
kill -CONT "$mon"
for _ in $(seq 200); do
  new=$(sup_pid)
  [ -n "$new" ] && [ "$new" != "$old" ] && [ "$(driver_col blk0 4 2>/dev/null)" = running ] &&
    [ "$(driver_col blk0 3)" != "$blk" ] && break
  sleep 0.05
done
[ "$(driver_col blk0 3)" != "$blk" ] && [ "$(driver_col blk0 4)" = running ] ||
  die "blk0 (pid $blk) was not restarted by the new supervisor: $(axl drivers)"
axl drivers --stats | grep -q "exited while no supervisor ran" ||
  die "the outage does not say the driver died while no supervisor ran: $(axl drivers --stats)"
r0=$(rounds)
for _ in $(seq 600); do (($(rounds) > r0 + 1)) && break; sleep 0.1; done
(($(rounds) > r0 + 1)) || die "disk rounds stopped after blk0 died while no supervisor ran"
log "blk0 pid $blk died while no supervisor ran; $(driver_col blk0 3) serves"

workload_finish sc 10.214.11 111
every=$(instances)
axl host down >&2
T_UP=0
assert_gone $every "$mon"
[ ! -e "$T_STATE/instances" ] || [ -z "$(ls -A "$T_STATE/instances")" ] ||
  die "instance records left after host down: $(ls "$T_STATE/instances")"
log "PASS"
