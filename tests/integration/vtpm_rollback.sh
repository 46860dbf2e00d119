#!/usr/bin/env bash
# Rollback protection of a vTPM's state (docs/architecture.md, "vTPM
# state"): every save of the permanent state is one generation newer, sealed
# into its header; the supervisor keeps the newest generation its instances
# reported outside the state dir (STATE/vtpm-host/counters/NAME) and starts
# each instance with it as a floor.
# - A guest's vTPM state is copied aside; then PCR 16 is extended and an NV
#   counter defined and incremented through tpm2-tools (axl vtpm-pipe); the
#   domain is destroyed.
# - The old copy put back, `axl create --vtpm-state keep` fails with one line
#   naming the rollback, and the files are left exactly as found.
# - The newer state put back, the domain boots with its vTPM again: the same
#   EK, the NV counter at the value it reached.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
for t in tpm2_nvdefine tpm2_nvincrement tpm2_nvread tpm2_pcrextend; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (tpm2-tools)"; exit 77; }
done
make_ns

vtpm_host_toml "$T_DIR/host.toml"
printf 'echo UP\nsleep 600\n' >"$T_DIR/g.sh"
printf 'name = "rb"\nmemory_mib = 256\n[vtpm]\nenabled = true\n[guest]\nscript = "g.sh"\n' >"$T_DIR/rb.toml"
host_up "$T_DIR/host.toml"
V="$T_STATE/vtpm/rb"
COUNTER="$T_STATE/vtpm-host/counters/rb"
boot() {  # boot [CREATE FLAGS...]
  axl create "$@" "$T_DIR/rb.toml" >&2
  for _ in $(seq 600); do console_has rb UP && return 0; sleep 0.1; done
  die "rb did not boot"
}
tpm() { in_ns env TPM2TOOLS_TCTI="cmd:$AXL --state-dir $T_STATE vtpm-pipe rb" "$@"; }

boot
ek=$(sha_of "$V/ek.crt")
cp -a "$V" "$T_DIR/old"
tpm tpm2_pcrextend 16:sha256=0000000000000000000000000000000000000000000000000000000000000016 ||
  die "tpm2_pcrextend failed"
tpm tpm2_nvdefine 0x01500016 -C o -s 8 -a "ownerread|ownerwrite|nt=counter|authread|authwrite" >/dev/null ||
  die "tpm2_nvdefine failed"
tpm tpm2_nvincrement 0x01500016 -C o || die "tpm2_nvincrement failed"
tpm tpm2_nvincrement 0x01500016 -C o || die "tpm2_nvincrement failed"
nv=$(tpm tpm2_nvread 0x01500016 -C o | xxd -p)
axl destroy rb >&2
[ -s "$COUNTER" ] || die "the supervisor recorded no generation for rb"
gen_new=$(cat "$COUNTER")
old_gen=$(od -An -tu1 -j12 -N4 "$T_DIR/old/permanent.state" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
((old_gen < gen_new)) || die "the NV writes did not advance the generation ($old_gen -> $gen_new)"
log "generations: $old_gen when copied aside, $gen_new after the NV writes"

# The old copy put back: refused, one line naming the rollback, files untouched.
mv "$V" "$T_DIR/new"
cp -a "$T_DIR/old" "$V"
before=$(cd "$V" && sha256sum permanent.state ek.crt)
out=$(axl create --vtpm-state keep "$T_DIR/rb.toml" 2>&1) && die "a rolled-back vTPM state was accepted"
[ "$(wc -l <<<"$out")" = 1 ] || die "the refusal is not one line: $out"
grep -q "rollback refused: .*permanent.state is generation $old_gen, older than generation $gen_new the host recorded" <<<"$out" ||
  die "the refusal does not name the rollback: $out"
[ "$(cd "$V" && sha256sum permanent.state ek.crt)" = "$before" ] || die "the refused state was changed"
[ "$(cat "$COUNTER")" = "$gen_new" ] || die "the refusal changed the host's counter: $(cat "$COUNTER")"
[ -z "$(axl list | awk '$1=="rb"')" ] || die "the refused domain is listed"
log "refused: $out"

# The newer state put back: it boots, nothing of it lost.
rm -rf "$V"
mv "$T_DIR/new" "$V"
boot --vtpm-state keep
[ "$(sha_of "$V/ek.crt")" = "$ek" ] || die "the EK changed"
[ "$(tpm tpm2_nvread 0x01500016 -C o | xxd -p)" = "$nv" ] || die "the NV counter lost its value"
axl destroy rb >&2
log "the newer state boots again: same EK, NV counter at $nv"
