#!/usr/bin/env bash
# End to end: a guest boots with a vTPM ([vtpm] enabled = true); the
# hypervisor measures kernel, initrd (+ overlay) into PCR 9 and the command
# line and config into PCR 8; `axl attest` PASSes against the golden values
# of the bundled image, and the PCR 9 it verified is the one the guest sees.
# Booted again with one byte of the initrd changed (the gzip header's
# MTIME, so it still boots), `axl attest` FAILs naming PCR 9.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
GUEST="${AXL_GUEST_DIR:-$AXL_BIN/../guest}"
[ -r "$GUEST/golden.toml" ] || { echo "SKIP: guest image has no golden.toml (scripts/setup)"; exit 77; }
make_ns

vtpm_host_toml "$T_DIR/host.toml"
cat >"$T_DIR/guest.sh" <<'SH'
i=0
while [ ! -r /sys/class/tpm/tpm0/pcr-sha256/9 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "PCR9 $(cat /sys/class/tpm/tpm0/pcr-sha256/9 | tr A-F a-f)"
sleep 3600
SH
guest_config() {  # guest_config [INITRD]
  {
    printf 'name = "g1"\nmemory_mib = 512\n'
    [ -z "${1:-}" ] || printf 'initrd = "%s"\n' "$1"
    printf '[guest]\nscript = "guest.sh"\n[vtpm]\nenabled = true\n'
  } >"$T_DIR/guest.toml"
}
boot() {  # boots g1 and waits for the guest's PCR 9 line
  local rc=0
  # Booted again later: the same vTPM (same EK), as an attestation expects.
  axl create --vtpm-state keep "$T_DIR/guest.toml" >"$T_DIR/create.out" 2>&1 || rc=$?
  if [ $rc != 0 ]; then
    if grep -q "unknown key 'vtpm'" "$T_DIR/create.out"; then
      echo "SKIP: vTPM wiring not present (no [vtpm] support in axl create)"
      exit 77
    fi
    cat "$T_DIR/create.out" >&2
    die "axl create failed"
  fi
  for _ in $(seq 600); do
    [ -n "$(console_value g1 PCR9)" ] && return 0
    sleep 0.2
  done
  axl console g1 --log >&2
  die "the guest never printed its PCR 9"
}
pcr9_row() { awk '$1 == "PCR" && $2 == "9" {print $3, $4}' "$1"; }

host_up "$T_DIR/host.toml"
guest_config
boot
[ -S "$T_STATE/dom/g1/vtpm.cmd" ] || die "no vtpm.cmd for g1"
axl attest g1 >"$T_DIR/out1.txt" 2>"$T_DIR/err1.txt" ||
  { cat "$T_DIR/out1.txt" "$T_DIR/err1.txt" >&2; die "axl attest did not PASS"; }
[ "$(tail -n 1 "$T_DIR/out1.txt")" = PASS ] || die "verdict: $(tail -n 1 "$T_DIR/out1.txt")"
guest9=$(console_value g1 PCR9)
[ "$(pcr9_row "$T_DIR/out1.txt")" = "$guest9 PASS" ] ||
  die "attest's PCR 9 '$(pcr9_row "$T_DIR/out1.txt")' is not the guest's $guest9"
axl attest g1 --json >"$T_DIR/out1.json" || die "axl attest --json did not PASS"
[ "$(jq -r .verdict "$T_DIR/out1.json")" = PASS ] || die "JSON verdict"
axl destroy g1 >&2

# One byte of the initrd changed (gzip MTIME: the kernel ignores it).
cp "$GUEST/initrd.img" "$T_DIR/initrd.img"
[ "$(od -An -tx1 -N2 "$T_DIR/initrd.img" | tr -d ' ')" = 1f8b ] || die "bundled initrd is not gzip"
b=$(od -An -tu1 -j 4 -N1 "$T_DIR/initrd.img" | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 0x01)))" | dd of="$T_DIR/initrd.img" bs=1 seek=4 conv=notrunc status=none
cmp -s "$GUEST/initrd.img" "$T_DIR/initrd.img" && die "initrd copy unchanged"
guest_config "$T_DIR/initrd.img"
boot
rc=0
axl attest g1 >"$T_DIR/out2.txt" 2>"$T_DIR/err2.txt" || rc=$?
cat "$T_DIR/out2.txt" >&2
[ $rc = 1 ] || die "axl attest exit status $rc for a changed initrd, want 1"
[ "$(tail -n 1 "$T_DIR/out2.txt")" = "FAIL: PCR 9" ] || die "verdict: $(tail -n 1 "$T_DIR/out2.txt")"
awk '$1 == "PCR" && $2 == "9"' "$T_DIR/out2.txt" | grep -q "FAIL .*initrd is" || die "PCR 9 row does not name the initrd"
[ "$(pcr9_row "$T_DIR/out2.txt")" = "$(console_value g1 PCR9) FAIL" ] || die "PCR 9 is not the guest's"
axl destroy g1 >&2
log "PASS"
