#!/usr/bin/env bash
# A guest that floods its serial console fills no disk: QEMU runs under
# RLIMIT_FSIZE (the guest config's log_max_mib), so the console log stops at
# that size, QEMU ignores SIGXFSZ and runs on, and the guest with it: after
# writing three times the limit it still answers the host's pings.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v ping >/dev/null || { echo "SKIP: ping (iputils-ping) not installed"; exit 77; }
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt15"
TOML
cat >"$T_DIR/guest.sh" <<'SH'
ip addr add 10.214.15.2/24 dev eth0
ip link set eth0 up
head -c 3145728 /dev/zero | tr '\0' 'x'
echo
# Only a guest that got past the flood takes this second address.
ip addr add 10.214.15.3/24 dev eth0
sleep 3600
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "fl"
memory_mib = 256
log_max_mib = 1
[[nic]]
driver = "net0"
mac = "52:54:00:12:15:01"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.15.1/24 dev axlt15
axl create "$T_DIR/guest.toml" >&2
qemu=$(axl list | awk '$1=="fl"{print $7}')
[ -n "$qemu" ] && [ "$qemu" -gt 0 ] || die "no QEMU pid for fl in axl list"
limit=$(awk '/^Max file size/ {print $4}' "/proc/$qemu/limits")
[ "$limit" = 1048576 ] || die "QEMU's file size limit is '$limit', not 1048576 (log_max_mib = 1)"

for _ in $(seq 600); do in_ns ping -c1 -W1 10.214.15.3 >/dev/null 2>&1 && break; sleep 0.5; done
in_ns ping -c1 -W1 10.214.15.3 >/dev/null 2>&1 || die "the guest never got past its console flood"
kill -0 "$qemu" 2>/dev/null || die "QEMU ($qemu) died"
in_ns ping -c3 -i0.2 -W1 10.214.15.2 >/dev/null || die "the guest stopped answering pings"
size=$(stat -c %s "$T_STATE/dom/fl/console.log")
log "console.log holds $size bytes of a 3 MiB flood; the guest answers pings"
[ "$size" -le 1048576 ] || die "console.log grew to $size bytes, past log_max_mib = 1"
[ "$size" -ge 1000000 ] || die "console.log holds only $size bytes: the flood never reached it"
axl list | awk '$1=="fl"{print $5}' | grep -qx running || die "fl is not running: $(axl list)"
axl destroy fl >&2
log "PASS"
