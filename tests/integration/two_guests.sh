#!/usr/bin/env bash
# Two guests on one net driver domain exchange 16 MiB over TCP through its
# switch; the host side of the TAP is not involved.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt1"
TOML
cat >"$T_DIR/a.sh" <<'SH'
set -e
ip addr add 10.214.1.2/24 dev eth0
ip link set eth0 up
echo RECV-SHA256 $(axl-tool recv 10.214.1.2 5002 --timeout 240 | sha256sum | cut -d' ' -f1)
SH
cat >"$T_DIR/b.sh" <<'SH'
set -e
ip addr add 10.214.1.3/24 dev eth0
ip link set eth0 up
axl-tool gen 21 16M | axl-tool send 10.214.1.2 5002 --retry 120
SH
for g in a b; do
  mac=$([ $g = a ] && echo 52:54:00:12:01:0a || echo 52:54:00:12:01:0b)
  cat >"$T_DIR/$g.toml" <<TOML
name = "guest-$g"
memory_mib = 256
vcpus = 1
[[nic]]
driver = "net0"
mac = "$mac"
[guest]
script = "$g.sh"
TOML
done
expect=$("$TOOL" gen 21 16M | sha256sum | cut -d' ' -f1)

host_up "$T_DIR/host.toml"
axl create "$T_DIR/a.toml" >&2
axl create "$T_DIR/b.toml" >&2
axl drivers >&2
axl wait guest-b --timeout 300 >&2 || die "sender failed"
axl wait guest-a --timeout 300 >&2 || die "receiver failed"
got=$(console_value guest-a RECV-SHA256)
[ "$got" = "$expect" ] || die "guest-a received $got, expected $expect"
log "PASS"
