#!/usr/bin/env bash
# No false hang verdicts while a driver serves a guest reading a sparse
# image.  With heartbeat_ms = 5 and heartbeat_misses = 3, the guest reads its
# whole (never written, so sparse) 64 MiB disk twice with 4 KiB O_DIRECT
# reads.  The host's readahead on such an image zero-fills large page-cache
# folios inside the driver's pread, tens of ms of CPU in one system call,
# which the supervisor would take for a spinning loop; the hypervisor turns
# readahead off on the image, so the driver never runs that long without
# answering.  Neither pass may cost a restart, and the reads return zeros.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
standby = true
heartbeat_ms = 5
heartbeat_misses = 3
restart_max = 100
TOML
truncate -s 64M "$T_DIR/disk.img"
cat >"$T_DIR/guest.sh" <<'SH'
for i in 1 2; do
  sum=$(dd if=/dev/vda bs=4K iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
  echo "SPARSE-PASS $i nonzero=$sum"
done
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "sp"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
axl create "$T_DIR/guest.toml" >&2
for _ in $(seq 1800); do console_has sp '^SPARSE-PASS 2 ' && break; sleep 0.1; done
console_has sp '^SPARSE-PASS 2 ' || die "the guest did not finish two passes over its disk"
axl console sp --log | tr -d '\r' | grep '^SPARSE-PASS' >&2
console_has sp '^SPARSE-PASS 1 nonzero=0$' || die "pass 1 read non-zero bytes from a sparse image"
console_has sp '^SPARSE-PASS 2 nonzero=0$' || die "pass 2 read non-zero bytes from a sparse image"
axl drivers --stats >&2
n=$(axl drivers | awk '$1=="blk0"{print $5}')
[ "$n" = 0 ] || die "blk0 restarted $n times while serving sequential reads ($(axl drivers | awk '$1=="blk0"{for (i=9; i<=NF; ++i) printf "%s ", $i}'))"
log "PASS"
