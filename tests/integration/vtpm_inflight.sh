#!/usr/bin/env bash
# A guest TPM command in flight when its vTPM domain dies is answered by the
# restarted instance; QEMU, which waits for that answer, never notices:
#  - killed after the command ran and its checkpoint was taken (a PCR_Event
#    the guest sends through /dev/tpm0; nothing else in the boot uses that
#    command): the successor sends the recorded response, and the PCR holds
#    the event exactly once;
#  - killed in the middle of a command, before its checkpoint (the first
#    PCR_Read): the successor runs it again and answers; the guest's PCR 9
#    reads as measured.
# The kill comes from the vTPM's test hook AXL_VTPM_FAULT, which only the
# first instance of each vTPM obeys.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v xxd >/dev/null || { echo "SKIP: xxd not installed"; exit 77; }
make_ns

vtpm_host_toml "$T_DIR/host.toml"
zero=$(printf '%064d' 0)
event='axolotl in flight'
digest=$(printf '%s' "$event" | sha256sum | cut -d' ' -f1)
# TPM2_PCR_Event(PCR 16, password session, eventData) as printf octal escapes.
cmd_hex="800200000$(printf '%03x' $((10 + 4 + 4 + 9 + 2 + ${#event})))0000013c0000001000000009400000090000000000"
cmd_hex+="$(printf '%04x' ${#event})$(printf '%s' "$event" | xxd -p | tr -d '\n')"
cmd_oct=$(printf '%s' "$cmd_hex" | sed 's/../& /g' | xargs -n1 | while read -r b; do printf '\\%03o' $((16#$b)); done)
cat >"$T_DIR/guest.sh" <<SH
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "PCR9 \$(cat \$P/9)"
exec 3<>/dev/tpm0
printf '$cmd_oct' >&3
echo "EVENT-RSP \$(dd bs=4096 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \n')"
exec 3>&-
echo "PCR16 \$(cat \$P/16)"
SH

guest_value() {  # guest_value NAME KEY: the hex printed as "KEY <hex>"
  axl console "$1" --log | tr -d '\r' | sed -n "s/^$2 \([0-9a-fA-F]*\).*/\1/p" | tail -n 1 | tr 'A-F' 'a-f'
}
boot() {  # boot NAME FAULT: a host whose vTPMs get AXL_VTPM_FAULT=FAULT, one guest
  vtpm_guest_toml "$1"
  AXL_VTPM_FAULT=$2 host_up "$T_DIR/host.toml"
  axl create "$T_DIR/$1.toml" >&2
  axl wait "$1" --timeout 300 >&2 || die "$1: guest script failed"
  [ "$(grep -c "vTPM of domain $1 restarted" "$T_STATE/supervisor.log")" = 1 ] ||
    die "$1: the vTPM was not killed and restarted exactly once"
  [ -z "$(axl console "$1" --log | tr -d '\r' | grep -Ei 'tpm.*(timeout|timed out|error)' || true)" ] ||
    die "$1: the guest's kernel logged a TPM error"
  pcr9=$(expected_pcr9 "$1")
  [ "$(guest_value "$1" PCR9)" = "$pcr9" ] || die "$1: guest PCR 9 is '$(guest_value "$1" PCR9)', expected $pcr9"
  rsp=$(guest_value "$1" EVENT-RSP)
  [ "${rsp:12:8}" = 00000000 ] || die "$1: the guest's PCR_Event got '$rsp'"
  [ "$(guest_value "$1" PCR16)" = "$(pcr_extend "$zero" "$digest")" ] ||
    die "$1: guest PCR 16 is '$(guest_value "$1" PCR16)': not the one event it recorded"
}

boot fa die-after-checkpoint:0x13c
grep -q "answered the guest's command in flight at the kill: its recorded response" \
  "$T_STATE/vtpm-fa.log" || die "fa: no recorded response was sent: $(tail -n 5 "$T_STATE/vtpm-fa.log")"
axl host down >&2
T_UP=0

boot fb die-in-command:0x17e
grep -q "answered the guest's command in flight at the kill: ran it again" \
  "$T_STATE/vtpm-fb.log" || die "fb: the command in flight was not run again: $(tail -n 5 "$T_STATE/vtpm-fb.log")"
log "in-flight guest TPM commands answered after both kinds of kill"
