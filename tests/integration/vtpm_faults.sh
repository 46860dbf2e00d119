#!/usr/bin/env bash
# Fault hooks in a vTPM domain (`axl inject --vtpm DOMAIN FAULT`, host config
# vtpm_fault_injection = true) while its guest reads PCR 9 in a loop:
# - die-in-command: the vTPM is killed in the middle of the guest's next
#   command; the supervisor restarts it and the successor runs the command
#   again and answers it;
# - crash: it aborts ("crash: killed by Aborted");
# - hang: its loop stops turning; 3 heartbeats go unanswered ("hang: ...").
# Each time the vTPM is replaced with its cause, and every PCR read in the
# guest returns the measured value.  Without vtpm_fault_injection the hooks
# are refused with one line.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

# A top-level key goes before the first [[driver]] table.
vtpm_host_toml "$T_DIR/drivers.toml"
{
  echo "vtpm_fault_injection = true"
  cat "$T_DIR/drivers.toml"
} >"$T_DIR/host.toml"
cat >"$T_DIR/guest.sh" <<'SH'
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "READING"
for i in $(seq 150); do
  echo "PCR9 $(cat $P/9)"
  sleep 0.1
done
echo "DONE"
SH
vtpm_guest_toml vf
vtpm_failure() { axl vtpms | awk -v n="$1" '$1==n{for (i=7; i<=NF; ++i) printf "%s%s", $i, (i<NF ? " " : ""); print ""}'; }

host_up "$T_DIR/host.toml"
axl create "$T_DIR/vf.toml" >&2
for _ in $(seq 600); do console_has vf '^READING' && break; sleep 0.1; done
console_has vf '^READING' || die "the guest never reached its TPM"

declare -A CAUSE=([die-in-command]="^crash: killed by Killed" [crash]="^crash: killed by Aborted"
  [hang]="^hang: [0-9]+ heartbeats missed")
n=0
for fault in die-in-command crash hang; do
  pid=$(vtpm_field vf 2)
  axl inject --vtpm vf "$fault" >&2
  np=""
  for _ in $(seq 150); do
    np=$(vtpm_field vf 2)
    [ "$(vtpm_field vf 3)" = running ] && [ -n "$np" ] && [ "$np" != "$pid" ] && [ "$np" -gt 0 ] && break
    sleep 0.1
  done
  [ -n "$np" ] && [ "$np" != "$pid" ] || die "$fault: the vTPM (pid $pid) was not replaced"
  n=$((n + 1))
  cause=$(vtpm_failure vf)
  log "$fault: vTPM pid $pid replaced by $np; last failure: $cause"
  grep -qE "${CAUSE[$fault]}" <<<"$cause" || die "$fault: last failure '$cause'"
  [ "$(vtpm_field vf 4)" = "$n" ] || die "$fault: expected $n restarts, axl vtpms shows $(vtpm_field vf 4)"
done
grep -q "answered the guest's command in flight at the kill: ran it again" "$T_STATE/vtpm-vf.log" ||
  die "the command in flight at die-in-command was not answered by the successor"
axl wait vf --timeout 300 >&2 || die "guest script failed"
want=$(expected_pcr9 vf)
reads=$(axl console vf --log | tr -d '\r' | sed -n 's/^PCR9 \([0-9a-fA-F]*\).*/\1/p' | tr 'A-F' 'a-f')
[ "$(wc -l <<<"$reads")" = 150 ] || die "the guest made $(wc -l <<<"$reads") PCR reads, not 150"
bad=$(grep -vcx "$want" <<<"$reads" || true)
[ "$bad" = 0 ] || die "$bad of the guest's PCR 9 reads were not the measured value $want"
axl host down >&2
T_UP=0

# Off by default: refused with one line, nothing restarted.
vtpm_host_toml "$T_DIR/host.toml"
host_up "$T_DIR/host.toml"
axl create "$T_DIR/vf.toml" --vtpm-state keep >&2
for _ in $(seq 600); do console_has vf '^READING' && break; sleep 0.1; done
pid=$(vtpm_field vf 2)
if axl inject --vtpm vf crash >"$T_DIR/out" 2>&1; then die "a vTPM fault was accepted with injection off"; fi
grep -qx "axl: fault injection is disabled for vTPM domains (set vtpm_fault_injection = true in the host config)" \
  "$T_DIR/out" || die "refusal: $(cat "$T_DIR/out")"
[ "$(vtpm_field vf 2)" = "$pid" ] && [ "$(vtpm_field vf 4)" = 0 ] || die "a refused fault changed the vTPM"
log "PASS"
