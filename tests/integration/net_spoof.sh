#!/usr/bin/env bash
# A guest cannot pose as another station on its net driver's switch
# (driverdom/net/switch.h).  Guest A first pings the host honestly, then
# takes guest B's MAC, then the host's (the TAP's) MAC, and pings the host
# under each: not one of those echo requests reaches the host (its ICMP
# InEchos counter does not move), A gets no answer, and B, pinged by the
# host all the while, never misses a reply (no frame for the host is
# stolen) and keeps its address.  With its own MAC back, A is served again.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt13"
TOML
mac_a=52:54:00:12:13:0a
mac_b=52:54:00:12:13:0b
host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.13.1/24 dev axlt13
host_mac=$(in_ns cat /sys/class/net/axlt13/address)
cat >"$T_DIR/b.sh" <<'SH'
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
ip addr add 10.214.13.3/24 dev eth0
ip link set eth0 up
echo B-UP
sleep 600
SH
cat >"$T_DIR/a.sh" <<SH
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
ip addr add 10.214.13.2/24 dev eth0
ip link set eth0 up
n=\$(ping -c 3 -i 0.3 -W 2 10.214.13.1 | grep -c 'bytes from')
echo "HONEST \$n"
for mac in $mac_b $host_mac; do
  ip link set eth0 down
  ip link set eth0 address \$mac
  ip link set eth0 up
  # The host's MAC given, so A sends its echo requests without asking
  # ARP first: each one reaching the host counts there.
  arp -s 10.214.13.1 $host_mac
  echo "SPOOF-START \$mac"
  sleep 1
  n=\$(ping -c 8 -i 0.25 -W 1 10.214.13.1 | grep -c 'bytes from')
  echo "SPOOF-END \$mac \$n"
  sleep 1
done
ip link set eth0 down
ip link set eth0 address $mac_a
ip link set eth0 up
n=\$(ping -c 3 -i 0.3 -W 2 10.214.13.1 | grep -c 'bytes from')
echo "RESTORED \$n"
SH
for g in a b; do
  mac=$([ $g = a ] && echo $mac_a || echo $mac_b)
  printf 'name = "spoof-%s"\nmemory_mib = 256\n[[nic]]\ndriver = "net0"\nmac = "%s"\n[guest]\nscript = "%s.sh"\n' \
    "$g" "$mac" "$g" >"$T_DIR/$g.toml"
done
axl create "$T_DIR/b.toml" >&2
for _ in $(seq 600); do console_has spoof-b B-UP && break; sleep 0.1; done
for _ in $(seq 100); do in_ns ping -c 1 -W 1 10.214.13.3 >/dev/null 2>&1 && break; sleep 0.2; done
# The host pings B through everything that follows.
ip netns exec "$T_NS" ping -i 0.2 -W 1 10.214.13.3 >"$T_DIR/ping-b" 2>&1 &
track $!
ping_b=$!
axl create "$T_DIR/a.toml" >&2
# Echo requests the host received (B only answers the host's; only A asks).
rx() {
  in_ns cat /proc/net/snmp | awk '$1 == "Icmp:" && $2 !~ /^[0-9]+$/ {for (i = 2; i <= NF; i++) if ($i == "InEchos") c = i}
                                  $1 == "Icmp:" && $2 ~ /^[0-9]+$/ {print $c}'
}
a_says() { axl console spoof-a --log | tr -d '\r' | sed -n "s/^$1 \([0-9]*\).*/\1/p" | tail -n 1; }
for mac in $mac_b $host_mac; do
  for _ in $(seq 600); do console_has spoof-a "SPOOF-START $mac" && break; sleep 0.1; done
  console_has spoof-a "SPOOF-START $mac" || die "guest A never took $mac: $(axl console spoof-a --log | tail -n 5)"
  before=$(rx)
  for _ in $(seq 300); do console_has spoof-a "SPOOF-END $mac" && break; sleep 0.1; done
  after=$(rx)
  got=$(axl console spoof-a --log | tr -d '\r' | sed -n "s/^SPOOF-END $mac \([0-9]*\).*/\1/p")
  [ "$got" = 0 ] || die "guest A, posing as $mac, got $got answers from the host"
  [ "$after" = "$before" ] || die "frames from guest A posing as $mac reached the host ($before -> $after)"
  log "posing as $mac: no frame reached the host"
done
axl wait spoof-a --timeout 120 >&2 || die "guest A's script failed"
[ "$(a_says HONEST)" = 3 ] || die "guest A was not served before it spoofed"
(($(rx) >= 6)) || die "the host counted $(rx) echo requests: the counter proves nothing"
[ "$(a_says RESTORED)" -ge 2 ] || die "guest A was not served with its own MAC back"
kill -INT "$ping_b"
wait "$ping_b" || true
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$T_DIR/ping-b")
lost=$(sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p' "$T_DIR/ping-b")
[ -n "$sent" ] && ((sent > 20)) || die "the host's pings to B did not run: $(tail -n 3 "$T_DIR/ping-b")"
[ "$lost" = 0 ] || die "B lost replies while A spoofed: $(tail -n 2 "$T_DIR/ping-b")"
lladdr=$(in_ns ip neigh show 10.214.13.3 | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
[ "$lladdr" = "$mac_b" ] || die "the host's neighbour entry for B is $lladdr, not $mac_b"
log "PASS"
