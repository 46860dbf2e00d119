#!/usr/bin/env bash
# vTPM domains are supervised like driver domains:
#  - a hang: the vTPM is stopped (SIGSTOP) while the guest runs; it misses
#    its heartbeats, the supervisor kills it with that cause and restarts
#    it, and the guest's next TPM read is right;
#  - a hog: each instance lives in a cgroup of its own with memory and pids
#    limits; one that allocates without end (AXL_VTPM_FAULT=hog-memory at the
#    guest's first PCR_Read) is OOM-killed, named as such, restarted, and the
#    command it was in the middle of is answered.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v xxd >/dev/null || { echo "SKIP: xxd not installed"; exit 77; }
make_ns

vtpm_host_toml "$T_DIR/host.toml"
cat >"$T_DIR/guest.sh" <<'SH'
P=/sys/class/tpm/tpm0/pcr-sha256
[ -c /dev/tpm0 ] || { echo "NO-TPM0"; exit 1; }
echo "PCR9-A $(cat $P/9)"
echo "WAITING"
sleep "$(cat /proc/cmdline | sed -n 's/.*axl_wait=\([0-9]*\).*/\1/p')"
echo "PCR9-B $(cat $P/9)"
SH
guest_value() {
  axl console "$1" --log | tr -d '\r' | sed -n "s/^$2 \([0-9a-fA-F]*\).*/\1/p" | tail -n 1 | tr 'A-F' 'a-f'
}
guest_toml() { vtpm_guest_toml "$1" "cmdline = \"axl_wait=$2\""; }  # guest_toml NAME SECONDS-TO-WAIT

# A hang.
host_up "$T_DIR/host.toml"
cgroups=0
grep -q "resource limits through" "$T_STATE/supervisor.log" && cgroups=1
guest_toml ha 12
axl create "$T_DIR/ha.toml" >&2
for _ in $(seq 600); do console_has ha '^WAITING' && break; sleep 0.1; done
console_has ha '^WAITING' || die "ha: the guest never read its PCRs"
pid1=$(vtpm_field ha 2)
[ -n "$pid1" ] && [ "$pid1" -gt 0 ] || die "ha: no running vTPM"
if ((cgroups)); then
  # The limits as the kernel holds them, cgroup v2 or v1 (one hierarchy per controller).
  limit() {  # limit PID CONTROLLER V2-FILE V1-FILE
    local path mnt
    path=$(awk -F: -v c="$2" '$2 ~ "(^|,)" c "(,|$)" {v1=$3} $1=="0" {v2=$3}
                               END{print (v1 != "" ? v1 : v2)}' "/proc/$1/cgroup")
    case "$path" in */vtpm-ha-*) ;; *) die "ha: the vTPM is not in a $2 cgroup of its own: '$path'" ;; esac
    if mnt=$(awk -v c="$2" '$3=="cgroup" && $4 ~ "(^|,)" c "(,|$)" {print $2; exit}' /proc/mounts) && [ -n "$mnt" ]; then
      cat "$mnt$path/$4"
    else
      mnt=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)
      cat "$mnt$path/$3"
    fi
  }
  [ "$(limit "$pid1" memory memory.max memory.limit_in_bytes)" = 268435456 ] ||
    die "ha: the vTPM's memory limit is '$(limit "$pid1" memory memory.max memory.limit_in_bytes)'"
  [ "$(limit "$pid1" pids pids.max pids.max)" = 64 ] ||
    die "ha: the vTPM's pids limit is '$(limit "$pid1" pids pids.max pids.max)'"
fi
kill -STOP "$pid1"
stopped=$(date +%s%N)
for _ in $(seq 100); do
  pid2=$(vtpm_field ha 2)
  [ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && [ "$pid2" -gt 0 ] && break
  sleep 0.1
done
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && [ "$pid2" -gt 0 ] || die "ha: a stopped vTPM was not replaced"
log "ha: stopped vTPM $pid1 replaced by $pid2 after $((($(date +%s%N) - stopped) / 1000000)) ms"
axl vtpms >&2
axl vtpms | grep -q "hang: 3 heartbeats missed" || die "ha: the failure is not named a hang"
axl wait ha --timeout 300 >&2 || die "ha: guest script failed"
want=$(expected_pcr9 ha)
[ "$(guest_value ha PCR9-A)" = "$want" ] || die "ha: PCR 9 before: '$(guest_value ha PCR9-A)'"
[ "$(guest_value ha PCR9-B)" = "$want" ] || die "ha: PCR 9 after the hang: '$(guest_value ha PCR9-B)'"
axl host down >&2
T_UP=0

# A hog.
if ((!cgroups)); then
  log "SKIP of the hog half: the host has no usable cgroups (the supervisor log says no resource limits)"
  exit 0
fi
AXL_VTPM_FAULT=hog-memory:0x17e host_up "$T_DIR/host.toml"
guest_toml hb 0
axl create "$T_DIR/hb.toml" >&2
axl wait hb --timeout 300 >&2 || die "hb: guest script failed"
grep -q "vTPM of domain hb failed: resource limit: memory (OOM kill)" "$T_STATE/supervisor.log" ||
  die "hb: the failure is not named an OOM kill: $(grep 'domain hb' "$T_STATE/supervisor.log" | tail -n 3)"
[ "$(grep -c "vTPM of domain hb restarted" "$T_STATE/supervisor.log")" = 1 ] || die "hb: not restarted once"
grep -q "answered the guest's command in flight at the kill: ran it again" "$T_STATE/vtpm-hb.log" ||
  die "hb: the command in flight was not answered"
want=$(expected_pcr9 hb)
[ "$(guest_value hb PCR9-A)" = "$want" ] || die "hb: PCR 9: '$(guest_value hb PCR9-A)'"
log "a hung vTPM and a memory hog were each killed with their cause and replaced; the guests read on"
