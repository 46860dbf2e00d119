#!/usr/bin/env bash
# A guest booted by UEFI firmware (OVMF) from its own disk image, the disk
# served by a blk driver domain: scripts/build-boot-image makes a GPT image
# with GRUB on an EFI system partition; the firmware reads GRUB, GRUB reads
# the kernel and initramfs, all through the driver domain.  The driver is
# SIGKILLed twice while that boot reads the disk, and the guest still boots
# (its script runs, its kernel logs no I/O error).  The same image as qcow2
# boots too; the domain's UEFI variable store is its own, in the state dir,
# and outlives the domain.  A firmware config without a boot disk, or with a
# kernel, is refused with one line.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
for t in sfdisk mformat grub-mkimage; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (scripts/setup)"; exit 77; }
done
[ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] || { echo "SKIP: OVMF not installed (apt-get install ovmf)"; exit 77; }
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
cat >"$T_DIR/guest.sh" <<'SH'
echo "FW-GUEST-OK $(uname -r)"
echo "IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)')"
SH
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/scripts/build-boot-image" "$T_DIR/boot.img" --script "$T_DIR/guest.sh" >&2
"$top/scripts/build-boot-image" "$T_DIR/boot.qcow2" --script "$T_DIR/guest.sh" --format qcow2 >&2
guest_toml() {  # guest_toml NAME IMAGE FORMAT
  cat >"$T_DIR/$1.toml" <<TOML
name = "$1"
memory_mib = 512
firmware = "uefi"
[[disk]]
driver = "blk0"
image = "$2"
format = "$3"
boot = true
TOML
}

host_up "$T_DIR/host.toml"

# Raw, with two driver kills while the firmware and GRUB read the disk.
guest_toml fw boot.img raw
axl create "$T_DIR/fw.toml" >&2
sleep 1
p1=$(driver_col blk0 3)
kill -KILL "$p1"
for _ in $(seq 600); do console_has fw 'AXL-GRUB loading' && break; sleep 0.05; done
console_has fw 'AXL-GRUB loading' || die "GRUB never ran: $(axl console fw --log | tail -c 300)"
for _ in $(seq 100); do [ "$(driver_col blk0 3)" != "$p1" ] && [ "$(driver_col blk0 4)" = running ] && break; sleep 0.05; done
p2=$(driver_col blk0 3)
kill -KILL "$p2"
axl wait fw --timeout 300 >&2 || die "the firmware-booted guest's script failed"
console_has fw '^FW-GUEST-OK ' || die "the guest's script did not run"
console_has fw '^IO-ERRORS 0' || die "the guest's kernel logged I/O errors: $(axl console fw --log | grep IO-ERRORS)"
[ "$(driver_col blk0 5)" = 2 ] || die "blk0 restarted $(driver_col blk0 5) times, expected 2"
[ -s "$T_STATE/nvram/fw.fd" ] || die "no UEFI variable store for fw in the state dir"
grep -q "pflash" "$T_STATE/dom/fw/qemu.log" 2>/dev/null && die "QEMU complained about its flash: $(cat "$T_STATE/dom/fw/qemu.log")"
axl destroy fw >&2
[ -s "$T_STATE/nvram/fw.fd" ] || die "the variable store went with the domain"
log "UEFI boot from a driver-domain disk through 2 driver kills ($p1, $p2)"

# qcow2.
guest_toml fq boot.qcow2 qcow2
axl create "$T_DIR/fq.toml" >&2
axl wait fq --timeout 300 >&2 || die "the qcow2 guest's script failed"
console_has fq '^FW-GUEST-OK ' || die "the qcow2 guest's script did not run"
axl destroy fq >&2
log "UEFI boot from a qcow2 image"

# Refused configs.
printf 'name = "nb"\nfirmware = "uefi"\n[[disk]]\ndriver = "blk0"\nimage = "boot.img"\n' >"$T_DIR/nb.toml"
out=$(axl create "$T_DIR/nb.toml" 2>&1) && die "a firmware guest without a boot disk was accepted"
grep -q "needs exactly one \[\[disk\]\] with boot = true" <<<"$out" || die "unclear error: $out"
printf 'name = "nk"\nfirmware = "uefi"\nkernel = "k"\n[[disk]]\ndriver = "blk0"\nimage = "boot.img"\nboot = true\n' >"$T_DIR/nk.toml"
out=$(axl create "$T_DIR/nk.toml" 2>&1) && die "a firmware guest with a kernel was accepted"
grep -q "'kernel' does not apply" <<<"$out" || die "unclear error: $out"
log "PASS"
