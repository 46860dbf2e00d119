#!/usr/bin/env bash
# A guest disk in qcow2 over a qcow2 backing file, served by a blk driver
# domain (driverdom/blk/image.h).  The guest reads the backing file's bytes
# through the overlay, writes inside them (copy-on-write into the overlay) and
# beyond them (new clusters), and reads back; the driver is SIGKILLed between
# the two phases and its successor reopens the chain from the same fds.
# Afterwards `qemu-img check` finds the overlay clean, QEMU reads what the
# guest wrote, and the backing file is unchanged.  Bad images fail `axl
# create` with one line naming the problem and leave nothing behind: a
# truncated image, a backing chain that loops, a missing backing file, a raw
# file stated as qcow2, a compressed image.  After destroy and create the
# guest's writes are there.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed (apt-get install qemu-utils)"; exit 77; }
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
cd "$T_DIR"
"$TOOL" gen 7 8M >base.raw
qemu-img convert -q -O qcow2 -o cluster_size=65536 base.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 32M
base_sha=$(sha_of base.qcow2)
cat >guest.sh <<'SH'
echo "BASE $(dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "TAIL $(dd if=/dev/vda bs=1M skip=8 count=24 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "PHASE1"
sleep 3
axl-tool gen 11 256K | dd of=/dev/vda bs=64K seek=17 oflag=direct 2>/dev/null
axl-tool gen 12 1M | dd of=/dev/vda bs=64K seek=320 oflag=direct 2>/dev/null
echo "IN $(dd if=/dev/vda bs=64K skip=17 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "OUT $(dd if=/dev/vda bs=64K skip=320 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
SH
cat >guest.toml <<TOML
name = "qc"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "top.qcow2"
format = "qcow2"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
axl create "$T_DIR/guest.toml" >&2
value() { axl console qc --log | tr -d '\r' | sed -n "s/^$1 \([0-9a-f]\{64\}\).*/\1/p" | tail -n 1; }
for _ in $(seq 600); do console_has qc '^PHASE1' && break; sleep 0.1; done
console_has qc '^PHASE1' || die "the guest never read its disk"
[ "$(value BASE)" = "$(sha_of base.raw)" ] || die "the backing file's bytes read wrong through the overlay"
[ "$(value TAIL)" = "$(head -c 25165824 /dev/zero | sha256sum | cut -d' ' -f1)" ] ||
  die "the overlay beyond its backing file does not read as zeros"
pid=$(axl drivers | awk '$1=="blk0"{print $3}')
kill -KILL "$pid"
axl wait qc --timeout 300 >&2 || die "guest script failed"
[ "$(axl drivers | awk '$1=="blk0"{print $5}')" = 1 ] || die "blk0 was not restarted once"
[ "$(value IN)" = "$("$TOOL" gen 11 256K | sha256sum | cut -d' ' -f1)" ] || die "the write inside the backing data read back wrong"
[ "$(value OUT)" = "$("$TOOL" gen 12 1M | sha256sum | cut -d' ' -f1)" ] || die "the write beyond it read back wrong"
axl destroy qc >/dev/null 2>&1 || true
# The same overlay in a domain created again: what the guest wrote is there.
cat >guest2.sh <<'SH'
echo "AGAIN-IN $(dd if=/dev/vda bs=64K skip=17 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "AGAIN-OUT $(dd if=/dev/vda bs=64K skip=320 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
SH
sed 's/guest.sh/guest2.sh/' guest.toml >guest2.toml
axl create "$T_DIR/guest2.toml" >&2
axl wait qc --timeout 300 >&2 || die "the second guest's script failed"
[ "$(value AGAIN-IN)" = "$("$TOOL" gen 11 256K | sha256sum | cut -d' ' -f1)" ] &&
  [ "$(value AGAIN-OUT)" = "$("$TOOL" gen 12 1M | sha256sum | cut -d' ' -f1)" ] ||
  die "after destroy and create the guest's writes are not there"
axl destroy qc >/dev/null 2>&1 || true
qemu-img check -q top.qcow2 || die "qemu-img check finds the overlay damaged"
# What QEMU reads: the base with the two writes in it, zeros after.
qemu-img convert -O raw top.qcow2 view.raw
cp base.raw want.raw
truncate -s 32M want.raw
"$TOOL" gen 11 256K | dd of=want.raw bs=64K seek=17 conv=notrunc 2>/dev/null
"$TOOL" gen 12 1M | dd of=want.raw bs=64K seek=320 conv=notrunc 2>/dev/null
[ "$(sha_of view.raw)" = "$(sha_of want.raw)" ] || die "QEMU reads something else from the overlay"
[ "$(sha_of base.qcow2)" = "$base_sha" ] || die "the backing file was written"
log "qcow2 overlay served through a driver restart; qemu-img check clean; QEMU reads the same"

# Bad images: one line naming the problem, no domain, nothing written.
bad() {  # bad NAME FORMAT IMAGE EXPECTED-TEXT
  printf 'name = "%s"\nmemory_mib = 128\n[[disk]]\ndriver = "blk0"\nimage = "%s"\nformat = "%s"\n' \
    "$1" "$3" "$2" >"bad-$1.toml"
  local sha out
  sha=$(sha_of "$3")
  if out=$(axl create "$T_DIR/bad-$1.toml" 2>&1); then die "$1: a bad image was accepted"; fi
  [ "$(wc -l <<<"$out")" = 1 ] || die "$1: more than one line: $out"
  grep -q -- "$4" <<<"$out" || die "$1: the error does not say '$4': $out"
  axl list | grep -q "^$1 " && die "$1: the domain was left listed"
  [ "$(sha_of "$3")" = "$sha" ] || die "$1: the image was written"
  log "$1: $out"
}
cp top.qcow2 cut.qcow2 && truncate -s 300000 cut.qcow2
bad truncated qcow2 cut.qcow2 "truncated"
qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2
bad loop qcow2 b.qcow2 "loops"
qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
bad missing qcow2 orphan.qcow2 "gone.qcow2"
bad notqcow qcow2 base.raw "not one"
head -c 1048576 /dev/zero | tr '\0' a >pattern.raw
qemu-img convert -q -c -O qcow2 pattern.raw packed.qcow2
bad compressed qcow2 packed.qcow2 "compressed"
log "PASS"
