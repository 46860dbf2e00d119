#!/usr/bin/env bash
# A driver that allocates memory without bound is killed by its cgroup limit
# and replaced; so is one that forks without bound.  The guest using the
# memory-hogging driver's disk keeps working.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
memory_max_mib = 96
fault_injection = true
[[driver]]
name = "blk1"
kind = "blk"
pids_max = 8
fault_injection = true
TOML
"$TOOL" gen 7 8M >"$T_DIR/disk.img"
cat >"$T_DIR/guest.sh" <<'SH'
i=0
while [ ! -e /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "rl"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
[guest]
script = "guest.sh"
TOML
host_up "$T_DIR/host.toml"
grep -q "without resource limits" "$T_STATE/supervisor.log" &&
  { echo "SKIP: no usable cgroups: $(grep 'without resource limits' "$T_STATE/supervisor.log")"; exit 77; }
axl create "$T_DIR/guest.toml" >&2

wait_failure() {  # wait_failure DRIVER NEEDLE
  for _ in $(seq 300); do
    axl drivers | awk -v d="$1" '$1==d' | grep -q "$2" && return 0
    sleep 0.05
  done
  axl drivers >&2
  die "driver $1 was not killed for '$2'"
}
axl inject blk0 hog-memory >&2
wait_failure blk0 "resource limit: memory"
axl inject blk1 hog-pids >&2
wait_failure blk1 "resource limit: pids"
for d in blk0 blk1; do
  for _ in $(seq 100); do [ "$(axl drivers | awk -v d=$d '$1==d{print $4}')" = running ] && break; sleep 0.05; done
  [ "$(axl drivers | awk -v d=$d '$1==d{print $4, $5}')" = "running 1" ] || die "$d not replaced: $(axl drivers)"
done
axl wait rl --timeout 120 >&2 || die "guest script failed"
[ "$(console_value rl DISK-SHA256)" = "$(sha_of "$T_DIR/disk.img")" ] || die "guest read a wrong disk"
axl drivers --stats >&2
log "PASS"
