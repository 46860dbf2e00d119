#!/usr/bin/env bash
# A guest with [vtpm] enabled = true boots with a vTPM the supervisor started:
#  - measured boot: inside the guest, PCR 9 (kernel, initrd, overlay with the
#    guest script) and PCR 8 (kernel command line, domain config) equal both
#    the replay of the hypervisor's eventlog.bin (tpm2_eventlog) and values
#    computed here from the files themselves; boot-record.toml agrees;
#  - transparent restart: the vTPM gets SIGKILL while the guest runs; the
#    supervisor restarts it, handing it QEMU's connections; a PCR extended
#    from the host after the restart shows in the guest, which reads its PCRs
#    again unchanged;
#  - `axl destroy` stops the vTPM and keeps its state; creating the name
#    again asks for --vtpm-state keep (the same EK) or new (a new one);
#    `axl vtpm-delete` retires it, not while it runs;
#  - a vTPM that cannot start fails `axl create` with one line and leaves
#    nothing behind.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
for t in tpm2_eventlog tpm2_pcrextend xxd; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (tpm2-tools, xxd)"; exit 77; }
done
GUEST="${AXL_GUEST_DIR:-$AXL_BIN/../guest}"
make_ns

PORT=2321
# A host needs a driver domain; this guest uses none of its devices.
vtpm_host_toml "$T_DIR/host.toml"
# The guest reads its PCRs, then leaves the TPM alone while the host kills
# the vTPM (commands in flight at a kill: vtpm_inflight.sh),
# then reads them again once the host has extended PCR 16 through the
# restarted instance.
cat >"$T_DIR/guest.sh" <<'SH'
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "PCR9-A $(cat $P/9)"
echo "PCR8-A $(cat $P/8)"
echo "WAITING"
sleep 25
echo "PCR9-B $(cat $P/9)"
echo "PCR8-B $(cat $P/8)"
echo "PCR16-B $(cat $P/16)"
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "vb"
memory_mib = 256
cmdline = "quiet"
[guest]
script = "guest.sh"
[vtpm]
enabled = true
command_port = $PORT
TOML

host_up "$T_DIR/host.toml"
axl create "$T_DIR/guest.toml" >&2
D="$T_STATE/dom/vb"
[ -S "$D/vtpm.ctrl" ] || die "no vTPM control socket at $D/vtpm.ctrl"
[ -S "$D/vtpm.cmd" ] || die "no vTPM command socket at $D/vtpm.cmd"
[ -s "$D/eventlog.bin" ] || die "no event log"
[ -s "$T_STATE/vtpm-host/key" ] || die "no host vTPM key"
[ "$(stat -c %a "$T_STATE/vtpm-host/key")" = 600 ] || die "host key is not 0600"
[ -s "$T_STATE/vtpm-host/ca/ca.crt" ] || die "no host vTPM CA"
[ -s "$T_STATE/vtpm/vb/ek.crt" ] || die "the vTPM was not provisioned (no ek.crt)"
! ls "$T_STATE/vtpm/vb" | grep -q key || die "the vTPM's own dir holds a key"
vtpm_pid() { axl vtpms | awk '$1=="vb" && $3=="running"{print $2}'; }
pid1=$(vtpm_pid)
[ -n "$pid1" ] && [ "$pid1" -gt 0 ] || die "axl vtpms lists no running vTPM for vb"
grep -q -- "--measure-log" "/proc/$pid1/cmdline" || die "vTPM started without --measure-log"

# What the host expects, from the files themselves: PCR = SHA256(PCR || digest).
extend() { printf '%s%s' "$1" "$2" | xxd -r -p | sha256sum | cut -d' ' -f1; }
zero=$(printf '%064d' 0)
base_size=$(stat -c %s "$GUEST/initrd.img")
overlay_sha=$(tail -c +$((base_size + 1)) "$D/initrd.img" | sha256sum | cut -d' ' -f1)
cmp -s -n "$base_size" "$GUEST/initrd.img" "$D/initrd.img" || die "domain initrd does not start with the base initrd"
append="console=ttyS0 panic=-1 quiet"
pcr9=$(extend "$zero" "$(sha_of "$GUEST/vmlinuz")")
pcr9=$(extend "$pcr9" "$(sha_of "$GUEST/initrd.img")")
pcr9=$(extend "$pcr9" "$overlay_sha")
pcr8=$(extend "$zero" "$(printf '%s' "$append" | sha256sum | cut -d' ' -f1)")
pcr8=$(extend "$pcr8" "$(sha_of "$T_DIR/guest.toml")")
# The same from the event log, replayed by tpm2-tools.
tpm2_eventlog "$D/eventlog.bin" >"$T_DIR/eventlog.yaml" 2>"$T_DIR/eventlog.err" || die "tpm2_eventlog cannot read eventlog.bin"
! grep -q WARN "$T_DIR/eventlog.err" || die "tpm2_eventlog warns about eventlog.bin: $(grep WARN "$T_DIR/eventlog.err")"
log_pcr() { awk -v p="$1" '/sha256:/{s=1;next} s && $1==p{gsub("0x","",$3); print tolower($3); exit}' "$T_DIR/eventlog.yaml"; }
[ "$(log_pcr 9)" = "$pcr9" ] || die "event log replays PCR 9 to '$(log_pcr 9)', the files give $pcr9"
[ "$(log_pcr 8)" = "$pcr8" ] || die "event log replays PCR 8 to '$(log_pcr 8)', the files give $pcr8"
rec() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$D/boot-record.toml"; }
[ "$(rec cmdline)" = "$append" ] || die "boot-record cmdline is '$(rec cmdline)'"
[ "$(rec kernel)" = "$GUEST/vmlinuz" ] || [ "$(readlink -f "$(rec kernel)")" = "$(readlink -f "$GUEST/vmlinuz")" ] || die "boot-record kernel is '$(rec kernel)'"
[ "$(rec initrd_overlay_sha256)" = "$overlay_sha" ] || die "boot-record overlay digest differs"
[ "$(rec config_sha256)" = "$(sha_of "$T_DIR/guest.toml")" ] || die "boot-record config digest differs"
[ "$(rec cmdline_sha256)" = "$(printf '%s' "$append" | sha256sum | cut -d' ' -f1)" ] || die "boot-record cmdline digest differs"

# The guest's "KEY <hex>" lines (sysfs prints PCRs in upper case).
guest_pcr() {
  axl console vb --log | tr -d '\r' | sed -n "s/^$1 \([0-9a-fA-F]\{64\}\).*/\1/p" | tail -n 1 |
    tr 'A-F' 'a-f'
}
for _ in $(seq 600); do axl console vb --log | grep -q '^WAITING' && break; sleep 0.1; done
axl console vb --log | grep -q '^WAITING' || die "guest never read its PCRs"
[ "$(guest_pcr PCR9-A)" = "$pcr9" ] || die "guest PCR 9 is '$(guest_pcr PCR9-A)', expected $pcr9"
[ "$(guest_pcr PCR8-A)" = "$pcr8" ] || die "guest PCR 8 is '$(guest_pcr PCR8-A)', expected $pcr8"
log "measured boot: guest PCR 9 = $pcr9, PCR 8 = $pcr8"

# Transparent restart.
kill -KILL "$pid1"
for _ in $(seq 200); do
  pid2=$(vtpm_pid)
  [ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && break
  sleep 0.05
done
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] || die "vTPM was not restarted after SIGKILL"
axl vtpms >&2
[ "$(axl vtpms | awk '$1=="vb"{print $4}')" = 1 ] || die "axl vtpms does not count the restart"
grep -q -- "--ctrl-fd" "/proc/$pid2/cmdline" || die "restarted vTPM did not get QEMU's control connection"
grep -q -- "--data-fd" "/proc/$pid2/cmdline" || die "restarted vTPM did not get QEMU's data channel"
# Through the restarted instance, from the host: the guest must see it.
digest=$(printf 'axolotl vtpm restart' | sha256sum | cut -d' ' -f1)
in_ns tpm2_pcrextend -T "swtpm:host=127.0.0.1,port=$PORT" "16:sha256=$digest" ||
  die "tpm2_pcrextend through the restarted vTPM failed"
pcr16=$(extend "$zero" "$digest")
# The host tools' socket (vtpm.cmd, raw TPM commands) reaches the same TPM:
# TPM2_PCR_Read(sha256: PCR 9); the digest is the response's last 32 bytes.
tpm_cmd() {  # tpm_cmd SOCKET HEX -> response HEX (perl-base is always there)
  perl -MIO::Socket::UNIX -e '
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!\n";
    print $s pack("H*", $ARGV[1]); $s->flush;
    my $h = ""; while (length($h) < 10) { sysread($s, $h, 10 - length($h), length($h)) or die "short\n" }
    my $n = unpack("x2 N", $h); my $b = "";
    while (length($b) < $n - 10) { sysread($s, $b, $n - 10 - length($b), length($b)) or die "short\n" }
    print unpack("H*", $h . $b), "\n";' "$1" "$2"
}
rsp=$(tpm_cmd "$D/vtpm.cmd" 8001000000140000017e00000001000b03000200) || die "no answer on vtpm.cmd"
[ "${rsp:12:8}" = 00000000 ] || die "TPM2_PCR_Read on vtpm.cmd failed: $rsp"
[ "${rsp: -64}" = "$pcr9" ] || die "PCR 9 read on vtpm.cmd is ${rsp: -64}, expected $pcr9"
# And tpm2-tools on it, without TCP or a control channel: `axl vtpm-pipe`
# under the cmd TCTI.
got=$(in_ns tpm2_pcrread -T "cmd:$AXL --state-dir $T_STATE vtpm-pipe vb" sha256:9 |
  awk '/9 :/{print tolower($3)}')
[ "$got" = "0x$pcr9" ] || die "PCR 9 through axl vtpm-pipe is '$got', expected 0x$pcr9"
axl console vb --log | grep -q '^PCR9-B' && die "guest read its PCRs again before the restart was done (schedule too tight)"
axl wait vb --timeout 300 >&2 || die "guest script failed"
[ "$(guest_pcr PCR9-B)" = "$pcr9" ] || die "PCR 9 after the restart is '$(guest_pcr PCR9-B)'"
[ "$(guest_pcr PCR8-B)" = "$pcr8" ] || die "PCR 8 after the restart is '$(guest_pcr PCR8-B)'"
[ "$(guest_pcr PCR16-B)" = "$pcr16" ] || die "guest PCR 16 is '$(guest_pcr PCR16-B)', expected $pcr16"
log "restart: pid $pid1 -> $pid2, guest PCRs unchanged, PCR 16 extended through the new instance"

# The guest is gone (QEMU ended the vTPM with CMD_SHUTDOWN); destroy forgets it.
axl destroy vb >&2
assert_gone "$pid2"
[ -z "$(axl vtpms | awk '$1=="vb"')" ] || die "axl vtpms still lists vb after destroy"
[ -s "$T_STATE/vtpm/vb/permanent.state" ] || die "the vTPM's state went with the domain"
ek1=$(sha_of "$T_STATE/vtpm/vb/ek.crt")

# Created again: the name had a vTPM, and the operator must say whether to
# keep it; kept, it is the same vTPM (same EK); it cannot be retired while
# it runs; destroyed while running, it is stopped by PID.
sed -i 's/^sleep 25$/sleep 600/' "$T_DIR/guest.sh"
out=$(axl create "$T_DIR/guest.toml" 2>&1) && die "a name with an old vTPM was created without a choice"
[ "$out" = "axl: domain vb had a vTPM before (its EK and sealed state are kept): create it with --vtpm-state keep to boot with that vTPM, or --vtpm-state new to retire it and make a new one" ] ||
  die "create without a choice said: $out"
[ -z "$(axl list | awk '$1=="vb"')" ] && [ ! -e "$D" ] || die "the refused create left a domain"
axl create --vtpm-state keep "$T_DIR/guest.toml" >&2
pid3=$(vtpm_pid)
[ -n "$pid3" ] || die "no vTPM on the second create"
[ "$(sha_of "$T_STATE/vtpm/vb/ek.crt")" = "$ek1" ] || die "the EK changed across destroy/create"
out=$(axl vtpm-delete vb 2>&1) && die "a running vTPM was retired"
grep -q "the vTPM of domain vb is running: destroy the domain first" <<<"$out" || die "vtpm-delete while running: $out"
[ "$(sha_of "$T_STATE/vtpm/vb/ek.crt")" = "$ek1" ] || die "a refused vtpm-delete changed the vTPM"
axl destroy vb >&2
assert_gone "$pid3"
[ ! -e "$D" ] || die "domain dir left after destroy: $(ls -la "$D" 2>&1 | tr "\n" " ")"
# --vtpm-state new: the old vTPM retired, a new one (a new EK).
axl create --vtpm-state new "$T_DIR/guest.toml" >&2
ek2=$(sha_of "$T_STATE/vtpm/vb/ek.crt")
[ "$ek2" != "$ek1" ] || die "--vtpm-state new kept the old EK"
axl destroy vb >&2
# axl vtpm-delete: retired for good; the next create needs no choice and
# gets a new vTPM.
axl vtpm-delete vb >&2
[ ! -e "$T_STATE/vtpm/vb" ] || die "vtpm-delete left $T_STATE/vtpm/vb"
out=$(axl vtpm-delete vb 2>&1) && die "a second vtpm-delete succeeded"
[ "$out" = "axl: domain vb has no vTPM state" ] || die "second vtpm-delete said: $out"
axl create "$T_DIR/guest.toml" >&2
[ "$(sha_of "$T_STATE/vtpm/vb/ek.crt")" != "$ek2" ] || die "the vTPM was not made anew after vtpm-delete"
axl destroy vb >&2
log "a name's old vTPM: kept only when asked (same EK), or retired (new EK)"

# A vTPM that cannot start: its sealed state is garbage.
mkdir -p "$T_STATE/vtpm/bad"
head -c 200 /dev/urandom >"$T_STATE/vtpm/bad/permanent.state"
sed 's/^name = "vb"/name = "bad"/' "$T_DIR/guest.toml" >"$T_DIR/bad.toml"
set +e
err=$(axl create --vtpm-state keep "$T_DIR/bad.toml" 2>&1 >/dev/null)
rc=$?
set -e
((rc != 0)) || die "axl create succeeded with a broken vTPM"
[ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || die "error is not one line: $err"
grep -q "vTPM" <<<"$err" || die "error does not name the vTPM: $err"
log "bad vTPM refused: $err"
[ ! -e "$T_STATE/dom/bad" ] || die "domain dir of the failed create left behind"
[ -z "$(axl list | awk '$1=="bad"')" ] || die "failed domain listed"
[ -z "$(axl vtpms | awk '$1=="bad"')" ] || die "failed vTPM listed"
for p in $(pgrep -f "axolotl-vtpm --state-dir $T_STATE/vtpm/bad" || true); do die "vTPM process $p left behind"; done
log "PASS"
