#!/usr/bin/env bash
# A control plane that never blocks: a guest whose vTPM takes 8 s to start
# (test hook AXL_VTPM_START_DELAY_MS) is listed as vtpm-starting while `axl
# list`, `axl drivers`, `axl vtpms` and D-Bus ListDomains all answer, and a
# second guest is created and runs its script to the end meanwhile.  The slow
# guest then runs too.  A third slow guest destroyed while its vTPM starts
# fails its create with a one-line reason and leaves no vTPM behind.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns
start_bus

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
"$TOOL" gen 21 4M >"$T_DIR/disk.img"
cat >"$T_DIR/read.sh" <<'SH'
i=0
while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
SH
cat >"$T_DIR/idle.sh" <<'SH'
sleep 3600
SH
for n in slow doomed; do
  cat >"$T_DIR/$n.toml" <<TOML
name = "$n"
memory_mib = 256
[vtpm]
enabled = true
[guest]
script = "idle.sh"
TOML
done
cat >"$T_DIR/fast.toml" <<TOML
name = "fast"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
[guest]
script = "read.sh"
TOML

export AXL_VTPM_START_DELAY_MS=8000
in_ns "$AXL" --state-dir "$T_STATE" host up --config "$T_DIR/host.toml" --bus "$BUS" >&2
T_UP=1
state_of() { axl list | awk -v d="$1" '$1==d{print $5}'; }

axl create "$T_DIR/slow.toml" >"$T_DIR/slow.out" 2>&1 &
slow_create=$!
track $slow_create
for _ in $(seq 100); do [ "$(state_of slow)" = vtpm-starting ] && break; sleep 0.05; done
[ "$(state_of slow)" = vtpm-starting ] || die "slow not listed as vtpm-starting: $(axl list)"

# Everyone answers while the vTPM starts.
manager call ListDomains | grep -q '"slow" [0-9]* "vtpm-starting"' ||
  die "D-Bus ListDomains does not show slow starting: $(manager call ListDomains)"
axl drivers | grep -q '^blk0 .* running' || die "axl drivers: $(axl drivers)"
axl vtpms | grep -q '^slow .* starting' || die "axl vtpms does not show slow starting: $(axl vtpms)"

# A second guest is created and runs to its end meanwhile.
axl create "$T_DIR/fast.toml" >&2
axl wait fast --timeout 120 >&2 || die "fast guest failed"
[ "$(console_value fast DISK-SHA256)" = "$(sha_of "$T_DIR/disk.img")" ] || die "fast guest read its disk wrong"
kill -0 $slow_create 2>/dev/null || die "slow's create finished before fast ran: the test proves nothing"
[ "$(state_of slow)" = vtpm-starting ] || die "slow left vtpm-starting early: $(axl list)"
log "fast created and ran to its end while slow's vTPM started"

wait $slow_create || die "slow's create failed: $(cat "$T_DIR/slow.out")"
T_PIDS=("${T_PIDS[@]/$slow_create}")
[ "$(state_of slow)" = running ] || die "slow is not running: $(axl list)"
axl vtpms | grep -q '^slow .* running' || die "slow's vTPM is not running: $(axl vtpms)"

# Destroyed while its vTPM starts: the create fails with the reason, no vTPM stays.
axl create "$T_DIR/doomed.toml" >"$T_DIR/doomed.out" 2>&1 &
doomed_create=$!
track $doomed_create
for _ in $(seq 100); do [ "$(state_of doomed)" = vtpm-starting ] && break; sleep 0.05; done
[ "$(state_of doomed)" = vtpm-starting ] || die "doomed not listed as vtpm-starting: $(axl list)"
axl destroy doomed >&2
wait $doomed_create && die "doomed's create succeeded after a destroy"
T_PIDS=("${T_PIDS[@]/$doomed_create}")
[ "$(wc -l <"$T_DIR/doomed.out")" = 1 ] && grep -q "destroyed while vtpm-starting" "$T_DIR/doomed.out" ||
  die "unclear error for a create cut short: $(cat "$T_DIR/doomed.out")"
for _ in $(seq 200); do axl vtpms | grep -q '^doomed ' || break; sleep 0.05; done
axl vtpms | grep -q '^doomed ' && die "doomed's vTPM is still listed: $(axl vtpms)"
axl list | grep -q '^doomed ' && die "doomed is still listed: $(axl list)"
axl destroy slow >&2
axl destroy fast >&2
log "PASS"
