#!/usr/bin/env bash
# A 2-vCPU guest with a 2-pair NIC (queues = 2) streams 2 x 512 MiB over TCP,
# one stream per vCPU (each transmits on its own queue; the host's ACKs are
# steered by flow over both receive queues), to two receivers on the host side
# while the net driver domain is killed with SIGKILL 5 times at random points
# (every kill while the streams still run).
# Both transfers complete with matching sha256, the guest saw 2 queue pairs,
# its kernel log shows no virtio or network error, and `axl drivers` counts 5
# restarts.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt3"
restart_max = 10
TOML
cat >"$T_DIR/guest.sh" <<'SH'
set -e
ip addr add 10.214.3.2/24 dev eth0
ip link set eth0 up
echo QUEUES $(ls -d /sys/class/net/eth0/queues/rx-* | wc -l) $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)
pids=
for h in 0 1; do
  taskset -c $h sh -c "axl-tool gen 3$h 512M | axl-tool send 10.214.3.1 500$((4 + h)) --retry 30" &
  pids="$pids $!"
done
for p in $pids; do wait $p; done
echo KERNEL-ERRORS $(dmesg | grep -iE 'virtio|eth0|net' | grep -ciE 'error|fail|timeout|reset|watchdog|down')
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "nr"
memory_mib = 512
vcpus = 2
[[nic]]
driver = "net0"
mac = "52:54:00:12:03:01"
queues = 2
[guest]
script = "guest.sh"
TOML
expect0=$("$TOOL" gen 30 512M | sha256sum | cut -d' ' -f1)
expect1=$("$TOOL" gen 31 512M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.3.1/24 dev axlt3
for h in 0 1; do
  ip netns exec "$T_NS" "$TOOL" recv 10.214.3.1 500$((4 + h)) --timeout 300 >"$T_DIR/received$h" &
  track $!
done
received() { echo $(($(stat -c %s "$T_DIR/received0") + $(stat -c %s "$T_DIR/received1"))); }
axl create "$T_DIR/guest.toml" >&2

driver_pid() { axl drivers | awk '$1=="net0" && $4=="running"{print $3}'; }
spares() { grep -c 'driver net0 spare started, pid [0-9]* (parked)' "$T_STATE/supervisor.log" || true; }
kills=0
while ((kills < 5)); do
  # Wait until the transfer is under way, then kill at a random point, once
  # the instance's parked spare is up (a kill before that restarts with a
  # fresh process, which the blk and fault tests cover).
  size=$(received)
  if ((size < (kills + 1) * 64 * 1024 * 1024)); then sleep 0.05; continue; fi
  if (($(spares) < kills + 1)); then sleep 0.02; continue; fi
  sleep "0.$((RANDOM % 5))"
  pid=$(driver_pid)
  [ -n "$pid" ] || { sleep 0.05; continue; }
  kill -KILL "$pid"
  kills=$((kills + 1))
  size=$(received)
  log "killed net0 (pid $pid) at $((size / 1048576)) MiB received"
  ((size < 1024 * 1024 * 1024)) || die "kill $kills came after the streams had finished"
  for _ in $(seq 100); do
    np=$(driver_pid)
    [ -n "$np" ] && [ "$np" != "$pid" ] && break
    sleep 0.05
  done
done
axl wait nr --timeout 300 >&2 || die "guest script failed"
wait "${T_PIDS[0]}" || die "receiver 0 failed"
wait "${T_PIDS[1]}" || die "receiver 1 failed"
T_PIDS=()
axl drivers >&2
[ "$(sha_of "$T_DIR/received0")" = "$expect0" ] || die "stream 0 corrupted ($(stat -c %s "$T_DIR/received0") bytes)"
[ "$(sha_of "$T_DIR/received1")" = "$expect1" ] || die "stream 1 corrupted ($(stat -c %s "$T_DIR/received1") bytes)"
shape=$(axl console nr --log | tr -d '\r' | grep -m1 '^QUEUES ')
[ "$shape" = "QUEUES 2 2" ] || die "the guest did not get 2 receive and 2 transmit queues: '$shape'"
errors=$(axl console nr --log | tr -d '\r' | sed -n 's/^KERNEL-ERRORS \([0-9]*\).*/\1/p')
[ "$errors" = 0 ] || die "guest kernel logged $errors virtio/network errors"
restarts=$(axl drivers | awk '$1=="net0"{print $5}')
[ "$restarts" = 5 ] || die "axl drivers shows $restarts restarts, expected 5"
# Each restart started the parked spare (it held the TAP unread until then).
n=$(grep -c 'driver net0 (net) started, pid [0-9]* (its parked spare)' "$T_STATE/supervisor.log" || true)
[ "$n" = 5 ] || die "$n of 5 restarts started the parked spare"
log "PASS"
