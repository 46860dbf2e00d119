#!/usr/bin/env bash
# Firmware-measured boot of the Debian image (scripts/build-os-image) under
# UEFI with a vTPM: OVMF measures into PCRs 0-7 and GRUB into 8 and 9; the
# hypervisor measures nothing.  `axl measure --image` computes PCRs 4, 8 and
# 9 from the image file alone, and they equal what the boot logged and the
# quote holds.  The guest's own `tpm2_pcrread` (through the agent) equals the
# PCRs of the quote `axl attest` verifies; `axl attest --golden` passes 4, 8
# and 9 against the image's golden values and fails the others until a
# reference boot is recorded, PASSes after `--record`, and again after the
# guest is created anew.  With the kernel command line in the image's
# grub.cfg changed it FAILs naming PCR 8 (GRUB's command and kernel_cmdline
# events); with the kernel file changed it FAILs naming PCR 9 and passes 8.  The image is edited without mounts (debugfs at the root
# partition's offset).
. "$(dirname "$0")/lib.sh"
require_root_and_tools
for t in mmdebstrap debugfs jq; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (scripts/setup)"; exit 77; }
done
[ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] || { echo "SKIP: OVMF not installed (scripts/setup)"; exit 77; }
command -v swtpm >/dev/null || { echo "SKIP: swtpm not installed (scripts/setup)"; exit 77; }
top=$(cd "$(dirname "$0")/../.." && pwd)
os_dir=$AXL_BIN/../os
"$top/scripts/build-os-image" --out "$os_dir" >&2
kver=$(sed -n 's/^kernel=//p' "$os_dir/debian-12.info")
root_off=$(sed -n 's/^root_offset=//p' "$os_dir/debian-12.info")
make_ns

vtpm_host_toml "$T_DIR/host.toml"
cp --sparse=always "$os_dir/debian-12.raw" "$T_DIR/mb.raw"
cat >"$T_DIR/mb.toml" <<TOML
name = "mb"
memory_mib = 1024
firmware = "uefi"
[[disk]]
driver = "blk0"
image = "mb.raw"
format = "raw"
boot = true
[vtpm]
enabled = true
TOML
fs="$T_DIR/mb.raw?offset=$root_off"
# put_file LOCAL PATH: replaces PATH in the image's root file system.
put_file() {
  debugfs -w -R "rm $2" "$fs" >/dev/null 2>&1
  debugfs -w -R "write $1 $2" "$fs" >/dev/null 2>&1
}
"$AXL" measure --image "$T_DIR/mb.raw" --write-golden "$T_DIR/golden.bin" >"$T_DIR/measure.out" ||
  die "axl measure --image failed: $(cat "$T_DIR/measure.out")"
"$AXL" measure --image "$os_dir/debian-12.qcow2" --format qcow2 >"$T_DIR/measure-qcow2.out"
cmp -s "$T_DIR/measure.out" "$T_DIR/measure-qcow2.out" || die "raw and qcow2 measure differently"
golden() { awk -v p="PCR $1" '$1" "$2==p {print $3}' "$T_DIR/measure.out"; }

boot() {
  axl create --vtpm-state keep "$T_DIR/mb.toml" >&2  # booted again: the same vTPM
  for _ in $(seq 120); do
    axl exec mb --timeout 5 -- true >/dev/null 2>&1 && return 0
    axl list | awk '$1=="mb"{print $5}' | grep -qx running || die "mb stopped: $(axl list)"
  done
  die "the guest agent never answered: $(axl console mb --log | tail -c 600)"
}
halt() {
  axl shutdown mb --timeout 120 --force >&2
  axl destroy mb >&2 || true
}
# attest_json ARGS...: `axl attest mb --json ARGS`, its status in $ATTEST_RC.
attest_json() {
  set +e
  axl attest mb --json "$@" >"$T_DIR/attest.json" 2>"$T_DIR/attest.err"
  ATTEST_RC=$?
  set -e
  jq -e . "$T_DIR/attest.json" >/dev/null || die "attest printed no JSON: $(cat "$T_DIR/attest.err")"
}
row() { jq -r --arg c "$1" ".checks[] | select(.check == \$c) | .$2" "$T_DIR/attest.json"; }
failed_pcrs() { jq -r '[.checks[] | select(.verdict == "FAIL") | .check] | join(",")' "$T_DIR/attest.json"; }

host_up "$T_DIR/host.toml"
boot
[ -s "$T_STATE/dom/mb/eventlog.bin" ] && die "the hypervisor wrote an event log for a firmware-booted guest"

# Before any reference: the quote checks out, PCRs 4, 8 and 9 match the
# image's golden values, the others wait for a reference.
attest_json --golden "$T_DIR/golden.bin"
[ "$ATTEST_RC" = 1 ] || die "attest without a reference did not fail (rc $ATTEST_RC)"
for c in "EK chain" "AK binding" signature nonce "PCR digest"; do
  [ "$(row "$c" verdict)" = PASS ] || die "$c: $(row "$c" detail)"
done
for i in 4 8 9; do
  [ "$(row "PCR $i" verdict)" = PASS ] && [ "$(row "PCR $i" value)" = "$(golden $i)" ] ||
    die "PCR $i: $(row "PCR $i" value) vs the image's $(golden $i): $(row "PCR $i" detail)"
done
grep -q "no reference boot recorded" <<<"$(row "PCR 0" detail)" || die "PCR 0: $(row "PCR 0" detail)"
log "PCRs 4, 8, 9 of the boot equal axl measure --image of the image file"
# The guest's own reading of its TPM equals the quoted PCRs.
pcrread=$(axl exec mb -- tpm2_pcrread sha256:0,1,2,3,4,5,6,7,8,9)
for i in $(seq 0 9); do
  guest=$(awk -v i="$i" '$1==i && $2==":" {print tolower(substr($3,3))}' <<<"$pcrread")
  [ -n "$guest" ] && [ "$guest" = "$(row "PCR $i" value)" ] ||
    die "PCR $i: the guest reads '$guest', the quote has $(row "PCR $i" value)"
done
[ "$(row "PCR 8" value)" != "$(printf '0%.0s' $(seq 64))" ] || die "GRUB measured nothing into PCR 8"
log "the guest's tpm2_pcrread equals the quote's PCRs 0-9"

attest_json --record --golden "$T_DIR/golden.bin"
[ "$ATTEST_RC" = 0 ] || die "attest --record did not pass: $(failed_pcrs) $(cat "$T_DIR/attest.err")"
[ -s "$T_STATE/attest/mb.reference" ] || die "no reference recorded"
halt
boot
attest_json --golden "$T_DIR/golden.bin"
[ "$ATTEST_RC" = 0 ] || die "the next boot does not match its reference: $(failed_pcrs): $(row "PCR $(failed_pcrs | cut -d, -f1 | tr -dc 0-9)" detail)"
halt
log "attest PASSes after --record, and on the next boot"

# The kernel command line in grub.cfg changed.
debugfs -R "cat /boot/grub/grub.cfg" "$fs" 2>/dev/null >"$T_DIR/grub.cfg"
grep -q "linuxefi .*console=ttyS0" "$T_DIR/grub.cfg" || die "unexpected grub.cfg: $(cat "$T_DIR/grub.cfg")"
sed 's/\(linuxefi .*console=ttyS0\)/\1 quiet/' "$T_DIR/grub.cfg" >"$T_DIR/grub-changed.cfg"
put_file "$T_DIR/grub-changed.cfg" "/boot/grub/grub.cfg"
boot
attest_json --golden "$T_DIR/golden.bin"
[ "$ATTEST_RC" = 1 ] || die "a changed kernel command line passed attestation"
[ "$(row "PCR 8" verdict)" = FAIL ] || die "PCR 8 passed with a changed command line"
grep -q "kernel_cmdline\|grub_cmd: linuxefi" <<<"$(row "PCR 8" detail)" ||
  die "PCR 8 does not name the command line: $(row "PCR 8" detail)"
log "changed command line: FAIL $(failed_pcrs); PCR 8: $(row "PCR 8" detail)"
halt
put_file "$T_DIR/grub.cfg" "/boot/grub/grub.cfg"

# The kernel file changed (the same kernel with bytes appended: it boots).
debugfs -R "cat /boot/vmlinuz-$kver" "$fs" 2>/dev/null >"$T_DIR/vmlinuz"
[ -s "$T_DIR/vmlinuz" ] || die "cannot read the kernel from the image"
head -c 4096 /dev/zero >>"$T_DIR/vmlinuz"
put_file "$T_DIR/vmlinuz" "/boot/vmlinuz-$kver"
boot
attest_json --golden "$T_DIR/golden.bin"
[ "$ATTEST_RC" = 1 ] || die "a changed kernel passed attestation"
[ "$(row "PCR 9" verdict)" = FAIL ] || die "PCR 9 passed with a changed kernel"
grep -q "vmlinuz-$kver" <<<"$(row "PCR 9" detail)" || die "PCR 9 does not name the kernel: $(row "PCR 9" detail)"
[ "$(row "PCR 8" verdict)" = PASS ] || die "PCR 8 failed with only the kernel changed: $(row "PCR 8" detail)"
log "changed kernel: FAIL $(failed_pcrs); PCR 9: $(row "PCR 9" detail)"
halt
log "PASS"
