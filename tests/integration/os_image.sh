#!/usr/bin/env bash
# The Debian 12 image that scripts/build-os-image builds from Debian's
# packages boots to multi-user under BIOS (SeaBIOS) from a raw image and
# under UEFI (OVMF) from a qcow2 overlay on the built image, its disk on a
# blk driver domain and its NIC on a net driver domain.  Through the guest
# agent (`axl exec`): `systemctl is-system-running` says running, `uname -r`
# is the image's kernel, and 8 MiB cross the NIC each way with matching
# sha256.  The blk driver is SIGKILLed twice during the UEFI boot; the guest
# boots and its kernel logs no I/O error.  The overlay changes, its base does
# not.  BIOS also boots a qcow2 overlay.  `axl shutdown` powers the guest off
# (the kernel's "Power down" on the console; the next boot's journal shows
# the previous one reaching power-off); `axl shutdown --force` destroys a
# guest that ignores ACPI.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v mmdebstrap >/dev/null || { echo "SKIP: mmdebstrap not installed (scripts/setup)"; exit 77; }
[ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] || { echo "SKIP: OVMF not installed (scripts/setup)"; exit 77; }
top=$(cd "$(dirname "$0")/../.." && pwd)
os_dir=$AXL_BIN/../os
"$top/scripts/build-os-image" --out "$os_dir" >&2
kver=$(sed -n 's/^kernel=//p' "$os_dir/debian-12.info")
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt0"

[[driver]]
name = "blk0"
kind = "blk"
TOML
cp --sparse=always "$os_dir/debian-12.raw" "$T_DIR/bios.raw"
qemu-img create -q -f qcow2 -b "$os_dir/debian-12.qcow2" -F qcow2 "$T_DIR/uefi.qcow2"
base_sha=$(sha_of "$os_dir/debian-12.qcow2")
overlay_sha=$(sha_of "$T_DIR/uefi.qcow2")
guest_toml() {  # guest_toml NAME FIRMWARE IMAGE FORMAT MAC
  cat >"$T_DIR/$1.toml" <<TOML
name = "$1"
memory_mib = 1024
vcpus = 1
firmware = "$2"
[[disk]]
driver = "blk0"
image = "$3"
format = "$4"
boot = true
[[nic]]
driver = "net0"
mac = "$5"
TOML
}
# wait_agent NAME: until the guest's agent answers (the guest booted far enough).
wait_agent() {
  for _ in $(seq 120); do
    axl exec "$1" --timeout 5 -- true >/dev/null 2>&1 && return 0
    axl list | awk -v n="$1" '$1==n{print $5}' | grep -qx running || die "$1 stopped: $(axl list)"
  done
  die "the guest agent of $1 never answered: $(axl console "$1" --log | tail -c 600)"
}
# check_guest NAME ADDR: multi-user, the image's kernel, 8 MiB each way.
check_guest() {
  local state
  state=$(axl exec "$1" --timeout 300 -- systemctl is-system-running --wait) ||
    die "$1 is not running: $state; failed units: $(axl exec "$1" -- systemctl --failed --no-legend)"
  [ "$state" = running ] || die "$1: systemctl is-system-running says '$state'"
  [ "$(axl exec "$1" -- uname -r)" = "$kver" ] || die "$1 runs another kernel than the image's $kver"
  ip netns exec "$T_NS" "$TOOL" recv 10.215.0.1 5002 --timeout 120 >"$T_DIR/from-$1" &
  local rx=$!
  track $rx
  "$TOOL" gen 21 8M >"$T_DIR/to-$1"
  ip netns exec "$T_NS" "$TOOL" serve 10.215.0.1 5003 --timeout 120 <"$T_DIR/to-$1" 2>/dev/null &
  local tx=$!
  track $tx
  local guest_sums
  guest_sums=$(axl exec "$1" --timeout 120 -- bash -c "
    set -e
    ip link set \$(ls /sys/class/net | grep -v '^lo\$' | head -1) up
    ip addr add $2/24 dev \$(ls /sys/class/net | grep -v '^lo\$' | head -1)
    head -c 8M /dev/urandom > /tmp/out
    sha256sum /tmp/out | cut -d' ' -f1
    for i in \$(seq 50); do (cat /tmp/out > /dev/tcp/10.215.0.1/5002) 2>/dev/null && break; sleep 0.2; done
    for i in \$(seq 50); do (cat < /dev/tcp/10.215.0.1/5003 > /tmp/in) 2>/dev/null && break; sleep 0.2; done
    sha256sum /tmp/in | cut -d' ' -f1") || die "$1: the transfer in the guest failed: $guest_sums"
  wait $rx || die "$1: the host's receiver failed"
  wait $tx || die "$1: the host's sender failed"
  T_PIDS=()
  [ "$(sed -n 1p <<<"$guest_sums")" = "$(sha_of "$T_DIR/from-$1")" ] ||
    die "$1: the 8 MiB from the guest arrived changed"
  [ "$(sed -n 2p <<<"$guest_sums")" = "$(sha_of "$T_DIR/to-$1")" ] ||
    die "$1: the 8 MiB to the guest arrived changed"
}

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.215.0.1/24 dev axlt0

# BIOS, raw.
guest_toml osb bios bios.raw raw 52:54:00:12:01:01
axl create "$T_DIR/osb.toml" >&2
wait_agent osb
check_guest osb 10.215.0.2
log "BIOS boot of the Debian image (raw) to multi-user; 8 MiB each way over the NIC"

# Errors from exec: an unknown domain, a command the guest lacks, an exit status.
out=$(axl exec nosuch -- true 2>&1) && die "exec in an unknown domain succeeded"
[ "$(wc -l <<<"$out")" = 1 ] && grep -q "no domain named 'nosuch'" <<<"$out" || die "unclear error: $out"
set +e
out=$(axl exec osb -- /no/such/program 2>&1)
rc=$?
axl exec osb -- bash -c 'echo out; echo err >&2; exit 7' >"$T_DIR/o" 2>"$T_DIR/e"
rc7=$?
set -e
[ "$rc" = 255 ] && [ "$(wc -l <<<"$out")" = 1 ] || die "a missing program in the guest: rc $rc, '$out'"
[ "$rc7" = 7 ] && [ "$(cat "$T_DIR/o")" = out ] && [ "$(cat "$T_DIR/e")" = err ] ||
  die "exit status and output not carried: rc $rc7, '$(cat "$T_DIR/o")' '$(cat "$T_DIR/e")'"
log "axl exec: errors in one line, exit status and both streams carried"

axl shutdown osb --timeout 120 >&2 || die "axl shutdown failed"
axl list | awk '$1=="osb"{print $5}' | grep -qx shutoff || die "osb is not shut off: $(axl list)"
console_has osb 'reboot: Power down' || die "osb did not power down cleanly: $(axl console osb --log | tail -c 400)"
axl destroy osb >&2
# The next boot of the same disk: its journal's previous boot ended in a
# clean power-off.
axl create "$T_DIR/osb.toml" >&2
wait_agent osb
prev=$(axl exec osb -- journalctl -b -1 --no-pager -o cat) || die "no journal of the previous boot"
grep -q "Reached target.*Power-Off\|System Power Off" <<<"$prev" ||
  die "the previous boot's journal shows no clean power-off: $(tail -n 5 <<<"$prev")"
axl shutdown osb --timeout 120 >&2
axl destroy osb >&2
log "axl shutdown: the guest powered itself off (console and journal)"

# BIOS from a qcow2 overlay too.
qemu-img create -q -f qcow2 -b "$os_dir/debian-12.qcow2" -F qcow2 "$T_DIR/bios.qcow2"
guest_toml osq bios bios.qcow2 qcow2 52:54:00:12:01:03
axl create "$T_DIR/osq.toml" >&2
wait_agent osq
state=$(axl exec osq --timeout 300 -- systemctl is-system-running --wait) || true
[ "$state" = running ] || die "osq: systemctl is-system-running says '$state'"
axl shutdown osq --timeout 120 >&2
axl destroy osq >&2
log "BIOS boot of the Debian image from a qcow2 overlay to multi-user"

# UEFI, a qcow2 overlay, two driver kills during the boot.
guest_toml osu uefi uefi.qcow2 qcow2 52:54:00:12:01:02
axl create "$T_DIR/osu.toml" >&2
p1=$(driver_col blk0 3)
sleep 2
kill -KILL "$p1"
for _ in $(seq 200); do [ "$(driver_col blk0 3)" != "$p1" ] && [ "$(driver_col blk0 4)" = running ] && break; sleep 0.05; done
for _ in $(seq 600); do console_has osu 'Linux version' && break; sleep 0.05; done
p2=$(driver_col blk0 3)
kill -KILL "$p2"
wait_agent osu
check_guest osu 10.215.0.3
[ "$(driver_col blk0 5)" = 2 ] || die "blk0 restarted $(driver_col blk0 5) times, expected 2"
errors=$(axl exec osu -- bash -c "journalctl -k -b --no-pager | grep -ciE 'I/O error|blk_update_request|Buffer I/O' || true")
[ "$errors" = 0 ] || die "the guest's kernel logged $errors I/O errors"
axl exec osu -- sync
axl shutdown osu --timeout 120 >&2 || die "axl shutdown of osu failed"
axl destroy osu >&2
[ "$(sha_of "$os_dir/debian-12.qcow2")" = "$base_sha" ] || die "the base image changed"
[ "$(sha_of "$T_DIR/uefi.qcow2")" != "$overlay_sha" ] || die "the overlay did not change"
log "UEFI boot of the Debian image (qcow2 overlay) through 2 driver kills ($p1, $p2); the base is untouched"

# A guest that ignores the power button: the bundled one has no ACPI daemon.
printf 'sleep 600\n' >"$T_DIR/idle.sh"
printf 'name = "idle"\nmemory_mib = 256\n[guest]\nscript = "idle.sh"\n' >"$T_DIR/idle.toml"
axl create "$T_DIR/idle.toml" >&2
out=$(axl shutdown idle --timeout 3 2>&1) && die "a guest that ignores ACPI reported off: $out"
grep -q "did not power off within 3 s" <<<"$out" || die "unclear error: $out"
axl list | awk '$1=="idle"{print $5}' | grep -qx running || die "idle is not running any more"
out=$(axl shutdown idle --timeout 3 --force 2>&1) || die "axl shutdown --force failed: $out"
grep -q "destroyed" <<<"$out" || die "--force did not say it destroyed: $out"
axl list | grep -q '^idle ' && die "idle is still listed after --force"
log "PASS"
