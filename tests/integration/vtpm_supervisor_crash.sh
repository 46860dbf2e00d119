#!/usr/bin/env bash
# A guest's vTPM outlives the supervisor: the supervisor is SIGKILLed while
# the guest uses its TPM, and the vTPM serves on (same pid); the successor
# the monitor starts adopts it (its health channel, its handover socket, its
# listening sockets and QEMU's channels came back from the monitor's fd
# store), so a vTPM SIGKILLed afterwards is restarted on QEMU's channels.
# Then the supervisor is killed with its monitor held stopped, the vTPM is
# killed while no supervisor runs, and the successor restarts it.  The
# guest reads PCR 9 right after each event; every read is the boot's
# measurement.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v xxd >/dev/null || { echo "SKIP: xxd not installed"; exit 77; }
make_ns

vtpm_host_toml "$T_DIR/host.toml"
# The guest reads PCR 9 every 100 ms, 400 times.
cat >"$T_DIR/guest.sh" <<'SH'
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
i=0
while [ $i -lt 400 ]; do
  v=$(cat $P/9) || { echo "PCR-READ-FAILED $i"; exit 1; }
  echo "PCR9 $i $v"
  i=$((i + 1))
  sleep 0.1
done
SH
vtpm_guest_toml vs
reads() { axl console vs --log | tr -d '\r' | grep -c '^PCR9 ' || true; }
vtpm_pid() { axl vtpms | awk '$1=="vs"{print $2}'; }
sup_pid() { cat "$T_STATE/supervisor.pid" 2>/dev/null || true; }
# more_reads: the guest's TPM answers again (5 more reads than now).
more_reads() {
  local r0
  r0=$(reads)
  for _ in $(seq 300); do (($(reads) > r0 + 5)) && return 0; sleep 0.1; done
  die "the guest's TPM reads stopped after $1"
}
new_supervisor() {  # new_supervisor OLD-PID
  local new
  for _ in $(seq 200); do
    new=$(sup_pid)
    [ -n "$new" ] && [ "$new" != "$1" ] && axl vtpms >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "no new supervisor after $1"
}

host_up "$T_DIR/host.toml"
axl create "$T_DIR/vs.toml" >&2
for _ in $(seq 600); do (($(reads) > 3)) && break; sleep 0.1; done
(($(reads) > 3)) || die "the guest never read its PCRs"
v1=$(vtpm_pid)

old=$(sup_pid)
kill -KILL "$old"
more_reads "the supervisor's crash"
new_supervisor "$old"
[ "$(vtpm_pid)" = "$v1" ] || die "the vTPM was not adopted: pid $v1 -> '$(vtpm_pid)' ($(axl vtpms))"
grep -q "vTPM of domain vs: adopted its instance, pid $v1" "$T_STATE/supervisor.log" ||
  die "the supervisor's log does not tell of the adoption"
log "supervisor $old killed; vTPM $v1 served on and was adopted"

kill -KILL "$v1"
for _ in $(seq 200); do
  v2=$(vtpm_pid)
  [ -n "$v2" ] && [ "$v2" != "$v1" ] && [ "$v2" -gt 0 ] && break
  sleep 0.05
done
[ -n "$v2" ] && [ "$v2" != "$v1" ] && [ "$v2" -gt 0 ] || die "the adopted vTPM was not restarted"
more_reads "the adopted vTPM's restart"
log "adopted vTPM $v1 killed; $v2 serves"

mon=$(cat "$T_STATE/supervisor-monitor.pid")
kill -STOP "$mon"
old=$(sup_pid)
kill -KILL "$old"
kill -KILL "$v2"
sleep 1
kill -CONT "$mon"
new_supervisor "$old"
for _ in $(seq 200); do
  v3=$(vtpm_pid)
  [ -n "$v3" ] && [ "$v3" != "$v2" ] && [ "$v3" -gt 0 ] && break
  sleep 0.05
done
[ -n "$v3" ] && [ "$v3" != "$v2" ] && [ "$v3" -gt 0 ] ||
  die "the vTPM killed while no supervisor ran was not restarted: $(axl vtpms)"
axl vtpms | grep -q "exited while no supervisor ran" || die "no cause for its restart: $(axl vtpms)"
more_reads "the vTPM's death while no supervisor ran"
log "vTPM $v2 died while no supervisor ran; $v3 serves"

axl wait vs --timeout 300 >&2 || die "guest script failed"
want=$(expected_pcr9 vs)
bad=$(axl console vs --log | tr -d '\r' | awk -v w="$want" '$1=="PCR9" && tolower($3)!=w' | head -n 3)
[ -z "$bad" ] || die "PCR 9 reads differ from the boot's measurement $want: $bad"
log "$(reads) PCR reads, every one the boot's measurement"
axl host down >&2
T_UP=0
assert_gone "$v3" "$mon"
log "PASS"
