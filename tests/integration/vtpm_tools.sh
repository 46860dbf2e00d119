#!/usr/bin/env bash
# axolotl-vtpm as tpm2-tools see it (swtpm TCTI on the command port, inside
# a network namespace of its own): random numbers, PCRs, keys, quotes; state
# that survives kill -9; sealed state files that hold no plaintext and that
# refuse tampering, and another vTPM, without being overwritten; a control
# channel that answers bad input with errors and lives on, and that on the
# TCP port refuses whatever would read or change the TPM's state.
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (network namespace)"; exit 77; fi
for t in ip tpm2_getrandom tpm2_quote tpm2_checkquote openssl od; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (scripts/setup)"; exit 77; }
done
make_ns

VTPM="$AXL_BIN/axolotl-vtpm"
PORT=2321
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
S="$T_DIR/state"
mkdir -p "$S" "$T_DIR/ca" "$T_DIR/w"
head -c 32 /dev/urandom >"$T_DIR/host.key"
VPID=

start_vtpm() {  # [STATE-DIR [MORE-FLAGS...]]
  local dir=${1:-$S}
  (($# == 0)) || shift
  # ip netns exec execs the daemon, so $! is the daemon's own PID.
  ip netns exec "$T_NS" "$VTPM" --state-dir "$dir" --key-file "$T_DIR/host.key" --ca-dir "$T_DIR/ca" \
    --command-port $PORT --startup-clear "$@" 2>>"$T_DIR/vtpm.log" &
  VPID=$!
  track $VPID
  for _ in $(seq 100); do
    in_ns tpm2_getcap properties-fixed >/dev/null 2>&1 && return 0
    kill -0 $VPID 2>/dev/null || break
    sleep 0.1
  done
  cat "$T_DIR/vtpm.log" >&2
  die "axolotl-vtpm did not come up"
}
t2() { in_ns "$@"; }
pcr16() { t2 tpm2_pcrread sha256:16 | awk '/16:/{print $2}'; }

start_vtpm
cd "$T_DIR/w"

# Provisioning: the EK certificate in NV verifies against the host CA, and
# certifies the public key of the persisted EK.
t2 tpm2_nvread -C o 0x01c0000a -o ek.der 2>/dev/null
openssl x509 -inform der -in ek.der -out ek.pem
openssl verify -CAfile "$T_DIR/ca/ca.crt" ek.pem >&2 || die "EK certificate does not verify"
t2 tpm2_readpublic -c 0x81010002 -f pem -o ekpub.pem >/dev/null
[ "$(openssl x509 -in ek.pem -noout -pubkey)" = "$(cat ekpub.pem)" ] || die "EK certificate is for another key"
cmp -s ek.pem "$S/ek.crt" || die "state dir ek.crt differs from NV"

# Random numbers.
a=$(t2 tpm2_getrandom --hex 32)
b=$(t2 tpm2_getrandom --hex 32)
[ ${#a} = 64 ] && [ "$a" != "$b" ] || die "tpm2_getrandom: '$a' '$b'"

# PCRs.
[ "$(pcr16)" = 0x0000000000000000000000000000000000000000000000000000000000000000 ] || die "PCR 16 not zero"
t2 tpm2_pcrextend 16:sha256=$(printf axolotl | sha256sum | cut -d' ' -f1)
unhex() { printf "$(sed 's/../\\x&/g')"; }
want=$( (printf '%064d' 0; printf axolotl | sha256sum | cut -d' ' -f1) | tr -d '\n' | unhex | sha256sum | cut -d' ' -f1)
[ "$(pcr16 | tr A-F a-f)" = "0x$want" ] || die "PCR 16 after extend: $(pcr16), want 0x$want"

# Keys: primary, child, load (without a resource manager, transient objects
# stay loaded until flushed, as on a hardware TPM).
t2 tpm2_createprimary -C o -c prim.ctx -Q
t2 tpm2_flushcontext -t
t2 tpm2_create -C prim.ctx -u key.pub -r key.priv -Q
t2 tpm2_flushcontext -t
t2 tpm2_load -C prim.ctx -u key.pub -r key.priv -c key.ctx -Q
loaded=$(t2 tpm2_getcap handles-transient | awk '{print $2}' | tail -n 1)
[ -n "$loaded" ] || die "no transient object after tpm2_load"

# Quote with the provisioned AK, checked with its public key.
t2 tpm2_readpublic -c 0x81000002 -f pem -o ak.pem -Q
t2 tpm2_quote -c 0x81000002 -l sha256:0,16 -q 11223344 -m q.msg -s q.sig -o q.pcrs -g sha256 -Q
t2 tpm2_checkquote -u ak.pem -m q.msg -s q.sig -f q.pcrs -g sha256 -q 11223344 >/dev/null ||
  die "tpm2_checkquote rejected the quote"
if t2 tpm2_checkquote -u ak.pem -m q.msg -s q.sig -f q.pcrs -g sha256 -q 11223345 >/dev/null 2>&1; then
  die "tpm2_checkquote accepted a wrong nonce"
fi

# A known NV value never reaches the disk in plaintext.
secret=AXOLOTL-NV-SECRET-1b9e7d55c0aa42
t2 tpm2_nvdefine 0x01500016 -C o -s ${#secret} -a "ownerread|ownerwrite" >/dev/null
printf %s "$secret" | t2 tpm2_nvwrite 0x01500016 -C o -i -
[ "$(t2 tpm2_nvread 0x01500016 -C o)" = "$secret" ] || die "NV read-back differs"

# kill -9, restart: PCRs and the loaded object are as they were.  The last
# extends are in the checkpoint's journal only, so the restart replays them.
t2 tpm2_pcrextend 16:sha256=$(printf one | sha256sum | cut -d' ' -f1)
t2 tpm2_pcrextend 16:sha256=$(printf two | sha256sum | cut -d' ' -f1)
before=$(pcr16)
kill -9 $VPID
wait $VPID 2>/dev/null || true
if grep -r -a -q -F "$secret" "$S"; then die "NV plaintext found in $S"; fi
start_vtpm
grep -q "resumed the volatile state" "$T_DIR/vtpm.log" || die "restart did not resume"
grep -Eq "\(2 journal records replayed\)" "$T_DIR/vtpm.log" ||
  die "restart did not replay the two journaled extends: $(grep resumed "$T_DIR/vtpm.log")"
[ "$(pcr16)" = "$before" ] || die "PCR 16 after kill -9 and restart: $(pcr16), was $before"
t2 tpm2_getcap handles-transient | grep -q "$loaded" || die "loaded object $loaded lost"
t2 tpm2_readpublic -c "$loaded" -Q || die "loaded object $loaded unusable after restart"
[ "$(t2 tpm2_nvread 0x01500016 -C o)" = "$secret" ] || die "NV lost across restart"

# Bad control-channel input: an error response each time, and the TPM lives.
ctrl() {  # ctrl HEX-REQUEST RESPONSE-BYTES: prints the response as hex
  in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$((PORT + 1)); printf '$1' >&3;
                 timeout 5 head -c $2 <&3 | od -An -tx1 | tr -d ' \n'"
}
[ "$(ctrl '\x00\x01' 4)" = 00000003 ] || die "short control request not refused"
[ "$(ctrl '\x00\x00\x00\xff\x01\x02' 4)" = 0000000a ] || die "unknown control command not refused"
[ "$(ctrl '\x00\x00\x00\x0d\x00\x00\x00\x00\x00\x00\x00\x01\x7f\xff\xff\xff' 4)" = 00000003 ] ||
  die "oversized state blob not refused"
[ "$(ctrl '\x00\x00\x00\x11\x00\x10' 16)" = 00000003000000000000000000000000 ] ||
  die "short SET_BUFFERSIZE not refused"
[ "$(ctrl '\x00\x00\x00\x01' 8)" != "" ] || die "GET_CAPABILITY unanswered"
# Any local user reaches the TCP ports: the control port neither reveals nor
# changes the TPM's state (TPM_BAD_ORDINAL, 0x0a), and a no-op locality is
# all it sets.
pcr_before=$(pcr16)
for req in '\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00' \
  '\x00\x00\x00\x03' '\x00\x00\x00\x05\x03' '\x00\x00\x00\x02\x00\x00\x00\x00' \
  '\x00\x00\x00\x0e' '\x00\x00\x00\x10' '\x00\x00\x00\x0a'; do
  [ "$(ctrl "$req" 4)" = 0000000a ] || die "control request $req answered on the TCP port: $(ctrl "$req" 4)"
done
[ "$(ctrl '\x00\x00\x00\x05\x00' 4)" = 00000000 ] || die "the no-op SET_LOCALITY 0 was refused"
[ "$(pcr16)" = "$pcr_before" ] || die "PCR 16 changed under refused control requests"
grep -q "TCP control port: CMD_GET_STATEBLOB refused" "$T_DIR/vtpm.log" || die "the refusal is not logged"
# A TPM command claiming 1 MiB is refused with TPM_RC_COMMAND_SIZE.
rsp=$(in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; printf '\x80\x01\x00\x10\x00\x00\x00\x00\x01\x7b' >&3;
                     timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n'")
[ "$rsp" = 80010000000a00000142 ] || die "oversized TPM command: '$rsp'"
kill -0 $VPID || die "axolotl-vtpm died on bad input"
t2 tpm2_getrandom 8 >/dev/null || die "TPM unusable after bad input"
grep -q "unknown control command 0x000000ff" "$T_DIR/vtpm.log" || die "bad input not logged"

# Tampering: stop cleanly, flip one byte; the vTPM refuses to start, says
# why, and leaves every file as it was.
kill $VPID
wait $VPID 2>/dev/null || true
[ ! -e "$S/volatile.ckpt" ] || die "orderly stop left volatile state"
cp "$S/permanent.state" good.state
python_free_flip() {  # flips the byte at offset $2 of file $1
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 0x20)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
python_free_flip "$S/permanent.state" 200
cp "$S/permanent.state" bad.state
if in_ns "$VTPM" --state-dir "$S" --key-file "$T_DIR/host.key" --command-port $PORT 2>err.txt; then
  die "axolotl-vtpm started on a tampered state file"
fi
grep -q "authentication failed" err.txt || die "unclear refusal: $(cat err.txt)"
[ "$(wc -l <err.txt)" = 1 ] || die "refusal is not one line: $(cat err.txt)"
cmp -s "$S/permanent.state" bad.state || die "refused state file was changed"
[ ! -e "$S/volatile.ckpt" ] || die "refusal wrote volatile state"
ls -a "$S" | grep -q tmp && die "refusal left a temporary file"
# A wrong key is refused the same way.
head -c 32 /dev/urandom >"$T_DIR/other.key"
cp good.state "$S/permanent.state"
if in_ns "$VTPM" --state-dir "$S" --key-file "$T_DIR/other.key" --command-port $PORT 2>err.txt; then
  die "axolotl-vtpm started with the wrong key"
fi
grep -q "authentication failed" err.txt || die "unclear wrong-key refusal: $(cat err.txt)"
cmp -s "$S/permanent.state" good.state || die "wrong-key refusal changed the file"
# Another vTPM's state: this one's permanent.state copied into a second
# state dir would give that vTPM this one's EK and seeds.  Under the same
# host key but another id it is refused, with one line naming the file, and
# nothing there is changed.
S2="$T_DIR/state2"
mkdir "$S2"
cp good.state "$S2/permanent.state"
refused_in_s2() {  # [--vtpm-id ID]
  local rc=0
  # A vTPM that accepted the state would serve on: timeout ends it.
  in_ns timeout 10 "$VTPM" --state-dir "$S2" "$@" --key-file "$T_DIR/host.key" \
    --command-port $PORT 2>err.txt || rc=$?
  [ $rc = 1 ] ||
    die "a second vTPM (${*:-no --vtpm-id}) took the first one's state (exit $rc): $(cat err.txt)"
  grep -q "sealed for another vTPM" err.txt || die "unclear refusal of another vTPM's state: $(cat err.txt)"
  grep -qF "$S2/permanent.state" err.txt || die "the refusal does not name the file: $(cat err.txt)"
  [ "$(wc -l <err.txt)" = 1 ] || die "refusal is not one line: $(cat err.txt)"
  cmp -s "$S2/permanent.state" good.state || die "another vTPM's refusal changed the file"
  [ "$(ls -A "$S2")" = permanent.state ] || die "the refusal wrote to $S2: $(ls -A "$S2")"
}
refused_in_s2 --vtpm-id other
refused_in_s2  # no --vtpm-id: the id is the dir's name, state2
# The binding is to the vTPM's id, not to the path: under its own id (the
# first dir's name) the copy is the same vTPM, NV value and all.
start_vtpm "$S2" --vtpm-id state
[ "$(t2 tpm2_nvread 0x01500016 -C o)" = "$secret" ] || die "the vTPM's own state refused under its id"
kill $VPID
wait $VPID 2>/dev/null || true
# The intact file still works, with the NV value in it.
start_vtpm
[ "$(t2 tpm2_nvread 0x01500016 -C o)" = "$secret" ] || die "NV lost after refusals"
log "PASS"
