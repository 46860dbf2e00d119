#!/usr/bin/env bash
# The outage as a peer sees it, with a warm standby: the host pings the guest
# every millisecond over the TAP.  A standby holds the TAP but never reads it
# before it is promoted, so with one present nothing is lost while no fault
# happens; and across SIGKILLs of the active net driver, the frames the host
# sent meanwhile wait in the TAP's queue until the promoted standby reads them.
# Reports the longest gap between replies per phase (from ping's own
# timestamps, independent of Axolotl's).
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v ping >/dev/null || { echo "SKIP: ping (iputils-ping) not installed"; exit 77; }
ping -V 2>&1 | grep -q iputils || { echo "SKIP: ping is not iputils' (needs -i 0.001)"; exit 77; }
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt9"
standby = true
restart_max = 20
TOML
cat >"$T_DIR/guest.sh" <<'SH'
ip addr add 10.214.9.2/24 dev eth0
ip link set eth0 up
echo GUEST-UP
sleep 3600
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "sp"
memory_mib = 512
[[nic]]
driver = "net0"
mac = "52:54:00:12:09:01"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.9.1/24 dev axlt9
axl create "$T_DIR/guest.toml" >&2

wait_standby() {  # waits until a standby other than $1 (or any) is connected
  local sb
  for _ in $(seq 200); do
    sb=$(driver_col net0 8)
    if [ "$sb" != "-" ] && [ -n "$sb" ] && [ "$sb" != "${1:-}" ] &&
      grep -q "driver 'net0' standby connected, pid $sb" "$T_STATE/hv.log" 2>/dev/null; then
      echo "$sb"
      return 0
    fi
    sleep 0.05
  done
  return 1
}
for _ in $(seq 120); do in_ns ping -c1 -W1 10.214.9.2 >/dev/null 2>&1 && break; sleep 0.5; done
in_ns ping -c1 -W1 10.214.9.2 >/dev/null || die "guest never answered a ping"
sb=$(wait_standby) || die "no warm standby connected to the hypervisor"
log "active $(driver_col net0 3), standby $sb"

# ping_run COUNT OUT: COUNT echo requests 1 ms apart, replies timestamped.
ping_run() { in_ns ping -D -n -i 0.001 -c "$1" -W 2 10.214.9.2 >"$2" 2>&1 || true; }
received() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$1"; }
# The longest gap between two consecutive replies, in ms.
max_gap_ms() {
  awk -F'[][]' '/bytes from/ {t = $2 + 0; if (p) {g = (t - p) * 1000; if (g > m) m = g}; p = t}
                END {printf "%.1f", m}' "$1"
}

# Phase 1: no fault, a standby present. Nothing may be lost.
ping_run 3000 "$T_DIR/ping1"
got=$(received "$T_DIR/ping1")
log "no fault: $got/3000 replies, longest gap $(max_gap_ms "$T_DIR/ping1") ms"
[ "$got" = 3000 ] || die "with a standby present and no fault, $((3000 - got)) of 3000 pings were lost"

# Phase 2: 3 SIGKILLs of the active driver 1.5 s apart while pings run.
ping_run 6000 "$T_DIR/ping2" &
pinger=$!
track $pinger
for k in 1 2 3; do
  sleep 1.2
  pid=$(driver_col net0 3)
  kill -KILL "$pid"
  log "kill $k: SIGKILL to active net0 pid $pid (standby $sb)"
  sb=$(wait_standby "$sb") || die "no new standby after kill $k"
done
wait $pinger
T_PIDS=()
got=$(received "$T_DIR/ping2")
log "3 kills: $got/6000 replies, longest gap $(max_gap_ms "$T_DIR/ping2") ms"
[ "$(driver_col net0 5)" = 3 ] || die "axl drivers shows $(driver_col net0 5) restarts, expected 3"
[ "$got" = 6000 ] || die "$((6000 - got)) of 6000 pings lost across 3 kills with a standby"
axl destroy sp >&2
log "PASS"
