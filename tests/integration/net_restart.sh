#!/usr/bin/env bash
# A guest streams 256 MiB over TCP to a receiver on the host side while the
# net driver domain is killed with SIGKILL 5 times at random points. The
# transfer completes with matching sha256, the guest's kernel log shows no
# virtio or network error, and `axl drivers` counts 5 restarts.
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
axl-tool gen 31 256M | axl-tool send 10.214.3.1 5004 --retry 30
echo KERNEL-ERRORS $(dmesg | grep -iE 'virtio|eth0|net' | grep -ciE 'error|fail|timeout|reset|watchdog|down')
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "nr"
memory_mib = 512
[[nic]]
driver = "net0"
mac = "52:54:00:12:03:01"
[guest]
script = "guest.sh"
TOML
expect=$("$TOOL" gen 31 256M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.3.1/24 dev axlt3
ip netns exec "$T_NS" "$TOOL" recv 10.214.3.1 5004 --timeout 300 >"$T_DIR/received" &
track $!
axl create "$T_DIR/guest.toml" >&2

driver_pid() { axl drivers | awk '$1=="net0" && $4=="running"{print $3}'; }
spares() { grep -c 'driver net0 spare started, pid [0-9]* (parked)' "$T_STATE/supervisor.log" || true; }
kills=0
while ((kills < 5)); do
  # Wait until the transfer is under way, then kill at a random point, once
  # the instance's parked spare is up (a kill before that restarts with a
  # fresh process, which the blk and fault tests cover).
  size=$(stat -c %s "$T_DIR/received")
  if ((size < (kills + 1) * 16 * 1024 * 1024)); then sleep 0.05; continue; fi
  if (($(spares) < kills + 1)); then sleep 0.02; continue; fi
  sleep "0.$((RANDOM % 5))"
  pid=$(driver_pid)
  [ -n "$pid" ] || { sleep 0.05; continue; }
  kill -KILL "$pid"
  kills=$((kills + 1))
  log "killed net0 (pid $pid) at $((size / 1048576)) MiB received"
  for _ in $(seq 100); do
    np=$(driver_pid)
    [ -n "$np" ] && [ "$np" != "$pid" ] && break
    sleep 0.05
  done
done
axl wait nr --timeout 300 >&2 || die "guest script failed"
wait "${T_PIDS[0]}" || die "receiver failed"
T_PIDS=()
axl drivers >&2
[ "$(sha_of "$T_DIR/received")" = "$expect" ] || die "stream corrupted ($(stat -c %s "$T_DIR/received") bytes)"
errors=$(axl console nr --log | tr -d '\r' | sed -n 's/^KERNEL-ERRORS \([0-9]*\).*/\1/p')
[ "$errors" = 0 ] || die "guest kernel logged $errors virtio/network errors"
restarts=$(axl drivers | awk '$1=="net0"{print $5}')
[ "$restarts" = 5 ] || die "axl drivers shows $restarts restarts, expected 5"
# Each restart started the parked spare (it held the TAP unread until then).
n=$(grep -c 'driver net0 (net) started, pid [0-9]* (its parked spare)' "$T_STATE/supervisor.log" || true)
[ "$n" = 5 ] || die "$n of 5 restarts started the parked spare"
log "PASS"
