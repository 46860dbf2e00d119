#!/usr/bin/env bash
# QEMU's stock tpm-emulator backend against axolotl-vtpm's control socket:
# the guest's tpm_crb driver finds /dev/tpm0, and SeaBIOS' measurements
# (PCR 0) reach the vTPM.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
GUEST="${AXL_GUEST_DIR:-$AXL_BIN/../guest}"
command -v busybox >/dev/null || { echo "SKIP: busybox not installed"; exit 77; }

VTPM="$AXL_BIN/axolotl-vtpm"
S="$T_DIR/state"
mkdir -p "$S" "$T_DIR/ca" "$T_DIR/overlay/axl"
head -c 32 /dev/urandom >"$T_DIR/host.key"
CTRL="$T_DIR/tpm.sock"

"$VTPM" --state-dir "$S" --key-file "$T_DIR/host.key" --ca-dir "$T_DIR/ca" \
  --ctrl-socket "$CTRL" 2>"$T_DIR/vtpm.log" &
VPID=$!
track $VPID
for _ in $(seq 100); do [ -S "$CTRL" ] && break; sleep 0.1; done
[ -S "$CTRL" ] || { cat "$T_DIR/vtpm.log" >&2; die "no control socket"; }

cat >"$T_DIR/overlay/axl/script" <<'SH'
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "TPM-VERSION $(cat /sys/class/tpm/tpm0/tpm_version_major)"
echo "PCR0 $(cat /sys/class/tpm/tpm0/pcr-sha256/0)"
SH
cp "$GUEST/initrd.img" "$T_DIR/initrd.img"
# The kernel looks for a further archive only at a 4-byte aligned offset.
pad=$(( (4 - $(stat -c %s "$T_DIR/initrd.img") % 4) % 4 ))
head -c $pad /dev/zero >>"$T_DIR/initrd.img"
(cd "$T_DIR/overlay" && find . | sort | busybox cpio -o -H newc 2>/dev/null) >>"$T_DIR/initrd.img"

timeout 120 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -nodefaults \
  -machine q35 -serial stdio \
  -chardev socket,id=chrtpm,path="$CTRL" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-crb,tpmdev=tpm0 \
  -kernel "$GUEST/vmlinuz" -initrd "$T_DIR/initrd.img" \
  -append 'console=ttyS0 panic=-1' </dev/null >"$T_DIR/console.log" 2>&1 &
QPID=$!
track $QPID
wait $QPID || true
out=$(tr -d '\r' <"$T_DIR/console.log")
grep -q '^AXL-GUEST-EXIT 0' <<<"$out" || { tail -n 30 "$T_DIR/console.log" >&2; cat "$T_DIR/vtpm.log" >&2; die "guest found no TPM"; }
[ "$(sed -n 's/^TPM-VERSION //p' <<<"$out")" = 2 ] || die "guest's TPM is not TPM 2.0"
pcr0=$(sed -n 's/^PCR0 //p' <<<"$out")
[ ${#pcr0} = 64 ] || die "no PCR 0 value: '$pcr0'"
[ "$pcr0" != "$(printf '%064d' 0)" ] || die "PCR 0 is zero: the firmware's measurements never reached the vTPM"
# QEMU ends the emulator with CMD_SHUTDOWN when it exits; the vTPM went
# down cleanly, without a warning about its peer.
for _ in $(seq 50); do kill -0 $VPID 2>/dev/null || break; sleep 0.1; done
if kill -0 $VPID 2>/dev/null; then die "axolotl-vtpm still running after QEMU quit"; fi
wait $VPID || die "axolotl-vtpm exited with status $?"
if grep -q warn "$T_DIR/vtpm.log"; then cat "$T_DIR/vtpm.log" >&2; die "warnings in the vTPM log"; fi
[ ! -e "$S/volatile.ckpt" ] || die "volatile state left after an orderly shutdown"
log "PASS (PCR 0 = $pcr0)"
