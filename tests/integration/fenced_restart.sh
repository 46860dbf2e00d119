#!/usr/bin/env bash
# Restarts with warm standbys while a guest streams TCP to the host and loops
# disk write/read-back rounds: for each driver (blk0, net0) a SIGKILL (the
# hypervisor promotes the standby when the connection drops), then three kills
# the supervisor decides itself, where it fences the old instance and has the
# standby promoted before it kills: a SIGSTOP (found hung), an operator
# restart, and a quarantine (the driver sends a completion for an id never
# issued).  Every streamed byte and every disk round verifies, the guest's
# kernel logs no I/O or network error, and each driver shows 4 restarts.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
standby = true
heartbeat_ms = 20
heartbeat_misses = 3
fault_injection = true
restart_max = 20
[[driver]]
name = "net0"
kind = "net"
tap = "axlt7"
standby = true
heartbeat_ms = 20
heartbeat_misses = 3
fault_injection = true
restart_max = 20
TOML
truncate -s 64M "$T_DIR/disk.img"
cat >"$T_DIR/guest.sh" <<'SH'
set -e
ip addr add 10.214.7.2/24 dev eth0
ip link set eth0 up
axl-tool recv 10.214.7.2 5009 --timeout 900 >/dev/null &
stopper=$!
axl-tool gen 71 64G | axl-tool send 10.214.7.1 5007 --retry 30 &
sender=$!
round=0
while kill -0 $stopper 2>/dev/null; do
  round=$((round + 1))
  seed=$((round % 7 + 1))
  axl-tool gen $seed 2M | dd of=/dev/vda bs=128K seek=$(( (round % 16) * 16 )) oflag=direct 2>/dev/null
  got=$(dd if=/dev/vda bs=128K skip=$(( (round % 16) * 16 )) count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  want=$(axl-tool gen $seed 2M | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "ROUND-MISMATCH $round"; exit 1; }
  echo ROUND $round
done
kill $sender 2>/dev/null || true
wait $sender 2>/dev/null || true
echo IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)|eth0.*(timeout|reset)')
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "fr"
memory_mib = 512
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:07:01"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.7.1/24 dev axlt7
in_ns "$TOOL" recv 10.214.7.1 5007 --timeout 600 >"$T_DIR/received" &
receiver=$!
track $receiver
axl create "$T_DIR/guest.toml" >&2
rounds() { axl console fr --log | tr -d '\r' | grep -c '^ROUND ' || true; }
col() { axl drivers | awk -v d="$1" -v c="$2" '$1==d{print $c}'; }
for _ in $(seq 600); do [ "$(rounds)" -ge 1 ] && break; sleep 0.1; done
[ "$(rounds)" -ge 1 ] || die "guest never completed a disk round"

# fault DRIVER HOW: injects, then waits until a new active and a new standby run.
fault() {
  local d=$1 how=$2 pid sb r0 s0
  pid=$(col "$d" 3)
  sb=$(col "$d" 8)
  r0=$(rounds)
  s0=$(stat -c %s "$T_DIR/received")
  case $how in
    KILL | STOP) kill -"$how" "$pid" ;;
    restart) axl driver-restart "$d" >&2 ;;
    quarantine) axl inject "$d" bogus-id >&2 ;;
  esac
  for _ in $(seq 400); do
    [ "$(col "$d" 3)" = "$sb" ] && [ "$(col "$d" 4)" = running ] &&
      [ "$(col "$d" 8)" != - ] && [ "$(col "$d" 8)" != "$sb" ] && break
    sleep 0.05
  done
  [ "$(col "$d" 3)" = "$sb" ] || die "$d: standby $sb not promoted after $how ($(axl drivers))"
  # The workload goes on: another round and more bytes after the fault.
  for _ in $(seq 600); do
    (($(rounds) > r0 + 1)) && (($(stat -c %s "$T_DIR/received") > s0)) && break
    sleep 0.1
  done
  (($(rounds) > r0 + 1)) || die "$d: disk rounds stopped after $how"
  (($(stat -c %s "$T_DIR/received") > s0)) || die "$d: the stream stopped after $how"
  log "$d $how: pid $pid -> $sb ($(axl drivers | awk -v d="$d" '$1==d{for (i=9; i<=NF; ++i) printf "%s ", $i}'))"
}
for d in blk0 net0; do
  for how in KILL STOP restart quarantine; do fault "$d" "$how"; done
done

in_ns "$TOOL" send 10.214.7.2 5009 </dev/null || die "cannot tell the guest to stop"
axl wait fr --timeout 600 >&2 || die "guest script failed"
wait "$receiver" || true  # the guest ended its sender mid-stream
T_PIDS=()
axl drivers --stats >&2
size=$(stat -c %s "$T_DIR/received")
[ "$(sha_of "$T_DIR/received")" = "$("$TOOL" gen 71 64G | head -c "$size" | sha256sum | cut -d' ' -f1)" ] ||
  die "stream corrupted (first $size bytes differ)"
errors=$(axl console fr --log | tr -d '\r' | sed -n 's/^IO-ERRORS \([0-9]*\).*/\1/p')
[ "$errors" = 0 ] || die "guest kernel logged $errors I/O or network errors"
for d in blk0 net0; do
  [ "$(col "$d" 5)" = 4 ] || die "$d: $(col "$d" 5) restarts, expected 4"
  n=$(grep -c "driver '$d' (pid [0-9]*) fenced on request" "$T_STATE/hv.log" || true)
  [ "$n" = 3 ] || die "$d: fenced $n times before a kill, expected 3 (hang, restart, quarantine)"
done
stats=$(axl drivers --stats | awk '/^Driver +When/ {t = 1; next} t')
for cause in "hang: " "restart requested" "protocol violation" "crash: killed by Killed"; do
  [ "$(grep -c -- "$cause" <<<"$stats")" = 2 ] || die "expected 2 outages with cause '$cause': $stats"
done
log "$((size / 1048576)) MiB streamed and $(rounds) disk rounds verified across 8 restarts; PASS"
