#!/usr/bin/env bash
# `axl attest` against a standalone axolotl-vtpm (command port, inside a
# network namespace of its own): PCR 8 and 9 are extended here with the
# digests of an event log written by `axl measure`, as the hypervisor would.
# The quote PASSes: EK chain, AK bound by credential activation, signature,
# nonce, PCR digest, log replay and golden values.  A changed initrd FAILs
# naming PCR 9; a log that does not replay, a foreign CA, an unreachable vTPM
# and a host that is not running fail too, each saying why.
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (network namespace)"; exit 77; fi
for t in ip tpm2_pcrextend tpm2_pcrread jq; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (scripts/setup)"; exit 77; }
done
make_ns

VTPM="$AXL_BIN/axolotl-vtpm"
PORT=2321
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
S="$T_DIR/vtpm" W="$T_DIR/w"
mkdir -p "$S" "$T_DIR/ca" "$W"
head -c 32 /dev/urandom >"$T_DIR/host.key"
VPID=
cd "$W"

start_vtpm() {  # a fresh power-on: PCRs all zero
  ip netns exec "$T_NS" "$VTPM" --state-dir "$S" --key-file "$T_DIR/host.key" --ca-dir "$T_DIR/ca" \
    --command-port $PORT --startup-clear 2>>"$T_DIR/vtpm.log" &
  VPID=$!
  track $VPID
  for _ in $(seq 100); do
    in_ns tpm2_pcrread sha256:0 >/dev/null 2>&1 && return 0
    kill -0 $VPID 2>/dev/null || break
    sleep 0.1
  done
  cat "$T_DIR/vtpm.log" >&2
  die "axolotl-vtpm did not come up"
}
stop_vtpm() {  # SIGTERM is a power-off: the next start has fresh PCRs
  kill $VPID
  wait $VPID 2>/dev/null || true
}
# measure NAME INITRD: event log NAME.log, boot record NAME.toml, output NAME.txt
measure() {
  "$AXL" measure --kernel kernel --initrd "$2" --cmdline "quiet" --config guest.toml --name img \
    --write-log "$1.log" --write-record "$1.toml" >"$1.txt"
}
extend() {  # extends PCR 8/9 with the events listed in NAME.txt
  awk '$1 == 8 || $1 == 9 {print $1, $2}' "$1.txt" | while read -r pcr d; do
    in_ns tpm2_pcrextend "$pcr:sha256=$d"
  done
}
CA="$T_DIR/ca/ca.crt"
attest() {  # attest LOG-NAME [args]: runs axl attest against the command port
  local n=$1
  shift
  in_ns "$AXL" --state-dir "$T_DIR/state" attest g1 --tpm tcp:127.0.0.1:$PORT --event-log "$n.log" \
    --boot-record "$n.toml" --ca "$CA" --policy golden.toml "$@"
}
row() { awk -v c="$1" 'index($0, c " ") == 1' "$2"; }  # row CHECK FILE

head -c 300000 /dev/urandom >kernel
head -c 200000 /dev/urandom >initrd
printf 'name = "g1"\nmemory_mib = 512\n' >guest.toml
measure good initrd
sed -n '/^\[\[image\]\]/,$p' good.txt >golden.toml
grep -q kernel_sha256 golden.toml || die "axl measure printed no policy entry"

start_vtpm
extend good
attest good >out.txt 2>err.txt || { cat out.txt err.txt >&2; die "attest did not PASS"; }
[ "$(tail -n 1 out.txt)" = PASS ] || die "last line is not PASS: $(tail -n 1 out.txt)"
for c in "EK chain" "AK binding" signature nonce "PCR digest" "PCR 8" "PCR 9"; do
  row "$c" out.txt | grep -q ' PASS ' || die "row '$c' did not pass: $(row "$c" out.txt)"
done
row "AK binding" out.txt | grep -q ActivateCredential || die "AK not bound by activation"
# The quoted PCR 9 is the vTPM's own value and the log's replay.
want9=$(sed -n 's/^PCR 9 (sha256) = //p' good.txt)
got9=$(in_ns tpm2_pcrread sha256:9 | awk '$1 == "9" {print tolower($NF)}')
[ "$got9" = "0x$want9" ] || die "PCR 9 is $got9, the log replays to $want9"
row "PCR 9" out.txt | grep -q "$want9" || die "PCR 9 row does not show $want9"
for i in 0 1 2 3 4 5 6 7; do row "PCR $i" out.txt | grep -q ' info ' || die "PCR $i not reported"; done

# JSON, with a nonce of our own; the same verdict.
attest good --json --nonce 0011223344556677 >out.json || die "attest --json did not PASS"
[ "$(jq -r .verdict out.json)" = PASS ] || die "JSON verdict: $(jq -r .verdict out.json)"
[ "$(jq -r '.checks[] | select(.check == "nonce") | .value' out.json)" = 0011223344556677 ] ||
  die "JSON nonce row"
[ "$(jq -r '.checks[] | select(.pcr == 9) | .value' out.json)" = "$want9" ] || die "JSON PCR 9 value"
[ "$(jq '[.checks[] | select(.verdict == "FAIL")] | length' out.json)" = 0 ] || die "JSON has FAIL rows"

# A log that is not what was extended (another cmdline): PCR 8 does not replay.
"$AXL" measure --kernel kernel --initrd initrd --cmdline "single" --config guest.toml \
  --write-log other.log --write-record other.toml >/dev/null
if attest other >out.txt 2>err.txt; then die "attest PASSed a log that does not replay"; fi
row "PCR 8" out.txt | grep -q "FAIL .*differs from the event log's replay" ||
  die "PCR 8 row: $(row "PCR 8" out.txt)"
[ "$(tail -n 1 out.txt)" = "FAIL: PCR 8" ] || die "verdict line: $(tail -n 1 out.txt)"

# A CA that did not issue the EK certificate.
mkdir ca2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca2/ca.key \
  -out ca2/ca.crt -subj /CN=other -days 2 2>/dev/null
CA=ca2/ca.crt
if attest good >out.txt 2>err.txt; then die "attest PASSed with a foreign CA"; fi
row "EK chain" out.txt | grep -q "FAIL .*does not chain to the host CA" ||
  die "EK chain row: $(row "EK chain" out.txt) $(cat err.txt)"
CA="$T_DIR/ca/ca.crt"

# Reboot with one byte of the initrd changed: FAIL, naming PCR 9 (and the initrd).
stop_vtpm
cp initrd initrd.bad
printf '\x5a' | dd of=initrd.bad bs=1 seek=1000 conv=notrunc status=none
cmp -s initrd initrd.bad && printf '\xa5' | dd of=initrd.bad bs=1 seek=1000 conv=notrunc status=none
measure bad initrd.bad
start_vtpm
extend bad
if attest bad >out.txt 2>err.txt; then die "attest PASSed a changed initrd"; fi
[ "$(tail -n 1 out.txt)" = "FAIL: PCR 9" ] || die "verdict line: $(tail -n 1 out.txt)"
row "PCR 9" out.txt | grep -q "FAIL .*initrd is" || die "PCR 9 row: $(row "PCR 9" out.txt)"
row "PCR 8" out.txt | grep -q ' PASS ' || die "PCR 8 row: $(row "PCR 8" out.txt)"
row "signature" out.txt | grep -q ' PASS ' || die "signature row: $(row "signature" out.txt)"

# An unreachable vTPM, a missing domain, a bad nonce: one line each.
stop_vtpm
rc=0
attest good >out.txt 2>err.txt || rc=$?
[ $rc = 1 ] && [ "$(wc -l <err.txt)" = 1 ] && grep -q "cannot connect to the vTPM" err.txt ||
  die "unreachable vTPM: rc=$rc $(cat err.txt)"
[ ! -s out.txt ] || die "unreachable vTPM printed a verdict"
# A domain's vTPM is reached through the supervisor (after the access
# policy): no host, no vTPM, said in one line.  (A missing domain on a
# running host: integration.policy.)
mkdir -p "$T_DIR/state/dom/plain"
rc=0
"$AXL" --state-dir "$T_DIR/state" attest plain 2>err.txt || rc=$?
[ $rc = 1 ] && [ "$(cat err.txt)" = "axl: cannot connect to $T_DIR/state/supervisor.sock: No such file or directory" ] ||
  die "no host: rc=$rc $(cat err.txt)"
rc=0
"$AXL" --state-dir "$T_DIR/state" attest plain --nonce 0g 2>err.txt || rc=$?
[ $rc = 2 ] && [ "$(wc -l <err.txt)" = 1 ] || die "bad nonce: rc=$rc $(cat err.txt)"
log "PASS"
