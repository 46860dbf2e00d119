#!/usr/bin/env bash
# Disk cache modes as the host sees them, and whole 1 MiB requests.  One guest, two raw disks on one
# blk driver domain: vda with cache = "none", vdb with the default
# "writeback".  The guest writes the same 16 MiB to both, flushes, drops its
# own cache and reads both back: both return what was written.  On the host,
# only the writeback image has pages in the page cache (fincore); the
# O_DIRECT one has none, and both image files hold the data.  Between two
# such rounds the driver domain is killed: its successor gets the same
# O_DIRECT image and the second round holds too.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v fincore >/dev/null || { echo "SKIP: fincore (util-linux) not installed"; exit 77; }
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
truncate -s 64M "$T_DIR/direct.img" "$T_DIR/cached.img"
cat >"$T_DIR/guest.sh" <<'SH'
q=/sys/block/vda/queue
echo "BLOCK-SIZE vda $(cat $q/logical_block_size) vdb $(cat /sys/block/vdb/queue/logical_block_size)"
echo "QUEUE-LIMITS vda max_segments=$(cat $q/max_segments) max_segment_size=$(cat $q/max_segment_size) max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb)"
axl-tool gen 11 16M >/tmp/p
round() {
  for dev in vda vdb; do dd if=/tmp/p of=/dev/$dev bs=1M conv=fsync 2>/dev/null || echo "WRITE-FAILED $dev"; done
  sync
  echo 3 >/proc/sys/vm/drop_caches
  # 1 MiB O_DIRECT reads: one guest request each, whole (256 segments of a page).
  for dev in vda vdb; do echo "SHA-$1-$dev $(dd if=/dev/$dev bs=1M count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"; done
  echo "ROUND-$1-DONE"
}
round 1
sleep 5  # the test kills the driver domain meanwhile
round 2
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "dc"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "direct.img"
cache = "none"
[[disk]]
driver = "blk0"
image = "cached.img"
[guest]
script = "guest.sh"
TOML
expect=$("$TOOL" gen 11 16M | sha256sum | cut -d' ' -f1)
resident() { fincore --bytes --noheadings --output RES "$1" | tr -d ' '; }
check_round() {  # check_round N
  local text got
  for _ in $(seq 1800); do console_has dc "^ROUND-$1-DONE" && break; sleep 0.1; done
  console_has dc "^ROUND-$1-DONE" || die "the guest did not finish round $1"
  text=$(axl console dc --log | tr -d '\r')
  grep -E "^(BLOCK-SIZE|SHA-$1-|WRITE-FAILED)" <<<"$text" >&2
  grep -q '^WRITE-FAILED' <<<"$text" && die "a write failed in the guest"
  for dev in vda vdb; do
    got=$(sed -n "s/^SHA-$1-$dev \([0-9a-f]*\)$/\1/p" <<<"$text")
    [ "$got" = "$expect" ] || die "round $1: $dev read back '$got', expected $expect"
  done
  # Before the host reads the files itself (which would fill its cache).
  local rd rc
  rd=$(resident "$T_DIR/direct.img")
  rc=$(resident "$T_DIR/cached.img")
  log "round $1: host page cache holds $rd bytes of direct.img, $rc of cached.img"
  [ "$rc" -gt 0 ] || die "the writeback image has no page in the host's page cache: the check would prove nothing"
  [ "$rd" = 0 ] || die "cache = \"none\" left $rd bytes of direct.img in the host's page cache"
}

host_up "$T_DIR/host.toml"
axl create "$T_DIR/guest.toml" >&2
check_round 1
# A 1 MiB request of scattered pages fits the disk's limits whole.
limits=$(axl console dc --log | tr -d '\r' | grep '^QUEUE-LIMITS vda' | head -n1)
log "$limits"
grep -q ' max_segments=256 ' <<<"$limits" || die "the guest's disk takes other than 256 segments: $limits"
kb=$(sed -n 's/.*max_hw_sectors_kb=\([0-9]*\).*/\1/p' <<<"$limits")
[ -n "$kb" ] && [ "$kb" -ge 1024 ] || die "the guest's disk takes requests of at most ${kb:-?} KiB: $limits"
pid=$(driver_pid blk0)
kill -KILL "$pid"
log "killed blk0 (pid $pid)"
for _ in $(seq 200); do np=$(driver_pid blk0); [ -n "$np" ] && [ "$np" != "$pid" ] && break; sleep 0.05; done
[ -n "$np" ] && [ "$np" != "$pid" ] || die "blk0 was not restarted: $(axl drivers)"
check_round 2
for f in direct cached; do
  host=$(head -c 16M "$T_DIR/$f.img" | sha256sum | cut -d' ' -f1)
  [ "$host" = "$expect" ] || die "$f.img holds $host, expected $expect"
done
axl wait dc --timeout 60 >&2 || die "the guest did not end cleanly"
log "PASS"
