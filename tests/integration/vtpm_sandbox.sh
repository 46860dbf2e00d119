#!/usr/bin/env bash
# The vTPM domain of a running guest is confined like a driver domain:
#  - its state dir was made by an older, unconfined version (owned by root)
#    and keeps its EK: the supervisor hands it to the sandbox uid;
#  - the serving vTPM runs as uid 65534 with no capabilities, no_new_privs
#    and a seccomp filter, in user, mount, pid, network, ipc and uts
#    namespaces of its own; its root holds its state dir and nothing else
#    (no CA key, no host key), and it holds no fd to either key or to a
#    directory other than that /state; it was given only the key derived
#    for its own id, and the host key itself does not open its state;
#  - in service under the filter: TPM2_CreatePrimary and a quote checked
#    against the AK (OpenSSL inside libtpms), checkpoints, CMD_GET/SET_STATEBLOB
#    with the TPM stopped and powered on again, on the TCP ports and Unix
#    sockets the supervisor bound and handed over;
#  - SIGKILLed, it is restarted (confined again) with the guest's PCRs
#    intact, and the guest's next TPM read works;
#  - the guest's end (CMD_SHUTDOWN) and SIGTERM stop it in order (exit 0:
#    nothing in its shutdown is refused by the filter).
. "$(dirname "$0")/lib.sh"
require_root_and_tools
for t in tpm2_pcrextend tpm2_pcrread tpm2_createprimary tpm2_quote tpm2_checkquote perl; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (tpm2-tools)"; exit 77; }
done
make_ns

PORT=2341
vtpm_host_toml "$T_DIR/host.toml"
# The guest reads its PCRs, leaves the TPM alone while the host works on it
# and kills the vTPM, then reads them again.
cat >"$T_DIR/guest.sh" <<'SH'
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "PCR0-A $(cat $P/0)"
echo "PCR9-A $(cat $P/9)"
echo "WAITING"
sleep 40
echo "PCR0-B $(cat $P/0)"
echo "PCR9-B $(cat $P/9)"
echo "PCR16-B $(cat $P/16)"
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "vs"
memory_mib = 256
[guest]
script = "guest.sh"
[vtpm]
enabled = true
command_port = $PORT
TOML

# A vTPM an older version made: provisioned by an unconfined instance as
# root, with the CA where the supervisor keeps it and the key the supervisor
# derives for this vTPM from the host key: HKDF-SHA256(host key, info =
# "axolotl-vtpm instance" NUL "vs") (vtpm/kdf.h), computed here by openssl.
V="$T_STATE/vtpm/vs"
mkdir -p "$V" "$T_STATE/vtpm-host/ca"
chmod 700 "$T_STATE/vtpm-host" "$T_STATE/vtpm-host/ca"
head -c 32 /dev/urandom >"$T_STATE/vtpm-host/key"
chmod 600 "$T_STATE/vtpm-host/key"
openssl kdf -keylen 32 -kdfopt digest:SHA256 \
  -kdfopt hexkey:"$(xxd -p "$T_STATE/vtpm-host/key" | tr -d '\n')" \
  -kdfopt hexinfo:"$(printf 'axolotl-vtpm instance\0vs' | xxd -p | tr -d '\n')" HKDF |
  tr -d ':\n' >"$T_DIR/vs.key"
"$AXL_BIN/axolotl-vtpm" --state-dir "$V" --key-file "$T_DIR/vs.key" --vtpm-id vs \
  --ca-dir "$T_STATE/vtpm-host/ca" --provision 2>"$T_DIR/provision.log" ||
  { cat "$T_DIR/provision.log" >&2; die "provisioning as an older version would failed"; }
[ "$(stat -c %u "$V/permanent.state")" = 0 ] || die "test setup: state not root's"
ek=$(sha_of "$V/ek.crt")
# The host key itself does not open it: a vTPM holds only its own key.
cp -a "$V" "$T_DIR/vs-copy"
rc=0
timeout 10 "$AXL_BIN/axolotl-vtpm" --state-dir "$T_DIR/vs-copy" --key-file "$T_STATE/vtpm-host/key" \
  --vtpm-id vs --command-socket "$T_DIR/vs-copy.sock" 2>"$T_DIR/hostkey.log" || rc=$?
[ $rc = 1 ] && grep -q "authentication failed" "$T_DIR/hostkey.log" ||
  die "the host key opened a vTPM's state (rc=$rc): $(cat "$T_DIR/hostkey.log")"

host_up "$T_DIR/host.toml"
axl create --vtpm-state keep "$T_DIR/guest.toml" >&2
sup=$(cat "$T_STATE/supervisor.pid")
vtpm_pid() { axl vtpms | awk '$1=="vs" && $3=="running"{print $2}'; }
pid1=$(vtpm_pid)
[ -n "$pid1" ] && [ "$pid1" -gt 0 ] || die "axl vtpms lists no running vTPM for vs"
[ "$(sha_of "$V/ek.crt")" = "$ek" ] || die "the older version's vTPM was made again (EK changed)"

# The state dir and everything in it belong to the sandbox uid now.
[ "$(stat -c '%u %g %a' "$V")" = "65534 65534 700" ] || die "state dir is $(stat -c '%u %g %a' "$V")"
for f in "$V"/* "$V"/.[!.]*; do
  [ -e "$f" ] || continue
  [ "$(stat -c %u "$f")" = 65534 ] || die "$f is owned by uid $(stat -c %u "$f")"
done

check_confined() {  # check_confined PID
  local p=$1 ns f target
  grep -q '^Uid:[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534$' "/proc/$p/status" ||
    die "vTPM (pid $p) runs as $(grep '^Uid:' "/proc/$p/status")"
  grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$p/status" || die "vTPM (pid $p) lacks no_new_privs"
  grep -q '^Seccomp:[[:space:]]*2$' "/proc/$p/status" || die "vTPM (pid $p) has no seccomp filter"
  grep -q '^CapEff:[[:space:]]*0*$' "/proc/$p/status" || die "vTPM (pid $p) kept capabilities"
  for ns in user mnt pid net ipc uts; do
    [ "$(readlink "/proc/$p/ns/$ns")" != "$(readlink "/proc/$sup/ns/$ns")" ] ||
      die "vTPM (pid $p) shares the supervisor's $ns namespace"
  done
  [ "$(ls -A "/proc/$p/root/")" = state ] || die "vTPM (pid $p) root holds: $(ls -A "/proc/$p/root/" | tr '\n' ' ')"
  [ "$(stat -c %i "/proc/$p/root/state")" = "$(stat -c %i "$V")" ] || die "vTPM (pid $p) /state is not its state dir"
  [ "$(stat -c %i "/proc/$p/root/state/..")" = "$(stat -c %i "/proc/$p/root/")" ] || die "/state/.. leads out"
  ! ls -A "/proc/$p/root/state/" | grep -qv '^permanent\.state$\|^volatile\.ckpt$\|^ek\.crt$' ||
    die "vTPM (pid $p) state dir holds: $(ls -A "/proc/$p/root/state/" | tr '\n' ' ')"
  [ -z "$(find "/proc/$p/root/" -name 'key' -o -name 'ca.key' -o -name 'ca.crt')" ] || die "a key is reachable"
  for f in /proc/"$p"/fd/*; do
    target=$(readlink "$f" || true)
    # The one directory it may hold is /state as its own root has it (the
    # state store's); one into the host's tree would let `..` lead out.
    [ ! -d "$f" ] || [ "$target" = /state ] || die "vTPM (pid $p) holds a directory fd: $f -> $target"
    case "$target" in
      *vtpm-host*|*/key) die "vTPM (pid $p) holds $target" ;;
    esac
  done
  tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- '--sandbox' || die "vTPM (pid $p) started without --sandbox"
  ! tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- '--ca-dir\|--key-file' || die "vTPM (pid $p) was given a path to a key"
}
check_confined "$pid1"
log "vTPM pid $pid1: uid 65534, own namespaces, no_new_privs, seccomp, root holds only its state dir"

# The guest booted with it (SeaBIOS' and the hypervisor's measurements).
guest_pcr() {
  axl console vs --log | tr -d '\r' | sed -n "s/^$1 \([0-9a-fA-F]\{64\}\).*/\1/p" | tail -n 1 | tr 'A-F' 'a-f'
}
for _ in $(seq 600); do axl console vs --log | grep -q '^WAITING' && break; sleep 0.1; done
axl console vs --log | grep -q '^WAITING' || die "guest never read its PCRs: $(axl console vs --log | tail -n 5)"
pcr0=$(guest_pcr PCR0-A)
pcr9=$(guest_pcr PCR9-A)
[ -n "$pcr9" ] && [ "$pcr9" != "$(printf '%064d' 0)" ] || die "guest PCR 9 is '$pcr9'"

# Host tools through the TCP port the supervisor bound: keys and a quote.
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
host_pcr() {  # host_pcr N: sha256 PCR N read from the host, lower-case hex
  in_ns tpm2_pcrread "sha256:$1" | awk -v n="$1" '$1 == n || $1 == n ":" {sub(/^0x/, "", $NF); print tolower($NF)}'
}
cd "$T_DIR"
in_ns tpm2_createprimary -C o -G ecc256 -c prim.ctx -Q || die "TPM2_CreatePrimary failed"
in_ns tpm2_flushcontext -t
in_ns tpm2_readpublic -c 0x81000002 -f pem -o ak.pem -Q
in_ns tpm2_quote -c 0x81000002 -l sha256:0,9 -q 5a5a -m q.msg -s q.sig -o q.pcrs -g sha256 -Q ||
  die "TPM2_Quote failed"
in_ns tpm2_checkquote -u ak.pem -m q.msg -s q.sig -f q.pcrs -g sha256 -q 5a5a >/dev/null ||
  die "the quote does not verify"

# The full control channel (vtpm.ctrl, root's; the TCP port + 1 refuses
# these): both state blobs out while it runs, then stopped, both blobs back
# in, powered on again (resuming the volatile one).
cat >ctrl.pl <<'PL'
use IO::Socket::UNIX;
my ($path, $op, $type, $file) = @ARGV;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or die "connect: $!\n";
sub rd { my $n = shift; my $b = ""; while (length($b) < $n) { sysread($s, $b, $n - length($b), length($b)) or die "short read\n" } $b }
if ($op eq "get") {  # CMD_GET_STATEBLOB
  print $s pack("NNNN", 0x0c, 0, $type, 0); $s->flush;
  my ($rc, $flags, $total, $len) = unpack("NNNN", rd(16));
  die "CMD_GET_STATEBLOB $type: result $rc\n" if $rc;
  open(my $f, ">", $file) or die; binmode $f; print $f rd($len); close $f;
} elsif ($op eq "set") {  # CMD_SET_STATEBLOB
  open(my $f, "<", $file) or die; binmode $f; local $/; my $d = <$f>; close $f;
  print $s pack("NNNN", 0x0d, 0, $type, length($d)) . $d; $s->flush;
  my ($rc) = unpack("N", rd(4)); die "CMD_SET_STATEBLOB $type: result $rc\n" if $rc;
} else {  # CMD_STOP, CMD_INIT
  my %code = (stop => 0x0e, init => 0x02);
  print $s pack("N", $code{$op}) . ($op eq "init" ? pack("N", 0) : ""); $s->flush;
  my ($rc) = unpack("N", rd(4)); die "CMD_\U$op\E: result $rc\n" if $rc;
}
PL
ctrl() { perl ctrl.pl "$T_STATE/dom/vs/vtpm.ctrl" "$@"; }
ctrl get 1 perm.blob || die "CMD_GET_STATEBLOB (permanent) failed"
ctrl get 2 vol.blob || die "CMD_GET_STATEBLOB (volatile) failed"
[ -s perm.blob ] && [ -s vol.blob ] || die "empty state blobs"
ctrl stop || die "CMD_STOP failed"
ctrl set 1 perm.blob || die "CMD_SET_STATEBLOB (permanent) failed"
ctrl set 2 vol.blob || die "CMD_SET_STATEBLOB (volatile) failed"
ctrl init || die "CMD_INIT failed"
[ "$(host_pcr 9)" = "$pcr9" ] || die "PCR 9 after the state blob round trip: $(host_pcr 9)"
[ "$(vtpm_pid)" = "$pid1" ] || die "the vTPM died in service under its filter: $(axl vtpms)"
log "in service under the filter: CreatePrimary, a verified quote, GET/SET_STATEBLOB, STOP and INIT"

# SIGKILL: restarted, confined again, PCRs intact.
kill -KILL "$pid1"
for _ in $(seq 200); do
  pid2=$(vtpm_pid)
  [ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && break
  sleep 0.05
done
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] || die "vTPM was not restarted after SIGKILL: $(axl vtpms)"
check_confined "$pid2"
[ "$(host_pcr 9)" = "$pcr9" ] || die "PCR 9 after the restart: $(host_pcr 9)"
digest=$(printf 'axolotl vtpm sandbox' | sha256sum | cut -d' ' -f1)
in_ns tpm2_pcrextend "16:sha256=$digest" || die "tpm2_pcrextend through the restarted vTPM failed"
pcr16=$(printf '%064d%s' 0 "$digest" | perl -ne 'print pack("H*", $_)' | sha256sum | cut -d' ' -f1)
log "SIGKILL: pid $pid1 -> $pid2, confined again, PCR 9 intact"

axl console vs --log | grep -q '^PCR9-B' && die "guest read its PCRs again too early (schedule too tight)"
axl wait vs --timeout 300 >&2 || die "guest script failed: $(axl console vs --log | tail -n 5)"
[ "$(guest_pcr PCR0-B)" = "$pcr0" ] || die "guest PCR 0 after the restart is '$(guest_pcr PCR0-B)', was $pcr0"
[ "$(guest_pcr PCR9-B)" = "$pcr9" ] || die "guest PCR 9 after the restart is '$(guest_pcr PCR9-B)', was $pcr9"
[ "$(guest_pcr PCR16-B)" = "$pcr16" ] || die "guest PCR 16 is '$(guest_pcr PCR16-B)', expected $pcr16"
# The guest is gone: QEMU's CMD_SHUTDOWN ended the vTPM in order (exit 0,
# the supervisor says "stopped"; a filter kill would be a crash and a restart).
stopped_lines() { grep -c 'vTPM of domain vs stopped$' "$T_STATE/supervisor.log" || true; }
for _ in $(seq 100); do [ "$(stopped_lines)" = 1 ] && break; sleep 0.05; done
[ "$(stopped_lines)" = 1 ] || die "vTPM did not stop in order at the guest's end: $(tail -n 3 "$T_STATE/supervisor.log")"
assert_gone "$pid2"
axl destroy vs >&2
[ ! -e "$T_STATE/dom/vs/vtpm.ctrl" ] || die "vtpm.ctrl left after destroy"

# Created again (the same vTPM), then SIGTERM: an orderly power-off.
sed -i 's/^sleep 40$/sleep 600/' "$T_DIR/guest.sh"
axl create --vtpm-state keep "$T_DIR/guest.toml" >&2
pid3=$(vtpm_pid)
[ -n "$pid3" ] || die "no vTPM on the second create"
check_confined "$pid3"
[ "$(sha_of "$V/ek.crt")" = "$ek" ] || die "the EK changed across destroy/create"
for _ in $(seq 600); do [ "$(axl console vs --log | grep -c '^WAITING')" = 1 ] && break; sleep 0.1; done
kill -TERM "$pid3"
for _ in $(seq 100); do [ "$(stopped_lines)" = 2 ] && break; sleep 0.05; done
[ "$(stopped_lines)" = 2 ] || die "SIGTERM did not stop the vTPM in order: $(tail -n 3 "$T_STATE/supervisor.log")"
assert_gone "$pid3"
[ "$(grep -c 'sandboxed:' "$T_STATE/vtpm-vs.log")" = 3 ] || die "expected three confined instances in the log"
[ "$(grep -c 'stopped: commands=' "$T_STATE/vtpm-vs.log")" = 2 ] || die "an orderly stop did not finish"
! grep -q 'Bad system call' "$T_STATE/supervisor.log" || die "a vTPM was killed by its filter"
axl destroy vs >&2
[ "$(stat -c %u "$V/permanent.state")" = 65534 ] || die "state changed hands"
log "the guest's PCRs survived the kill; the guest's end and SIGTERM stopped it in order; PASS"
