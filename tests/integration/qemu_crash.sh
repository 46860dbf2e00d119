#!/usr/bin/env bash
# A domain whose QEMU crashes (SIGKILL here) is marked crashed with the cause,
# and its on_crash decides what follows:
#  - restart: it boots again from its config with its disk and its vTPM (the
#    guest reads the same disk and its PCR 9 shows this boot's measurements);
#  - preserve: it stays listed as crashed with its vTPM until `axl destroy`,
#    and `axl wait` says how it ended;
#  - destroy (the default): it is gone.
# A guest that powers off is shut off, not crashed. A hypervisor killed
# under its monitor comes back and adopts the running QEMU, and a guest that
# powers off under the adopted hypervisor is still shut off (its monitor
# reaped QEMU and says how it ended).  `axl host down` then leaves none of
# the processes behind, not even a QEMU whose hypervisor was killed with no
# monitor left to restart it.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns
vtpm_host_toml "$T_DIR/host.toml"
"$TOOL" gen 33 4M >"$T_DIR/disk.img"
cat >"$T_DIR/boot.sh" <<'SH'
i=0
while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
echo PCR9 $(tr A-F a-f </sys/class/tpm/tpm0/pcr-sha256/9)
echo BOOTED
sleep 3600
SH
printf 'echo BOOTED\nsleep 3600\n' >"$T_DIR/idle.sh"
printf 'echo BYE\n' >"$T_DIR/bye.sh"
cat >"$T_DIR/again.toml" <<TOML
name = "again"
memory_mib = 256
on_crash = "restart"
[[disk]]
driver = "blk0"
image = "disk.img"
[guest]
script = "boot.sh"
[vtpm]
enabled = true
TOML
for n in kept gone; do
  printf 'name = "%s"\nmemory_mib = 256\n[guest]\nscript = "idle.sh"\n' "$n" >"$T_DIR/$n.toml"
done
sed -i '2a on_crash = "preserve"\n[vtpm]\nenabled = true' "$T_DIR/kept.toml"
printf 'name = "bye"\nmemory_mib = 256\n[guest]\nscript = "bye.sh"\n' >"$T_DIR/bye.toml"
# Powers off a few seconds after it booted: time for the hypervisor to be
# killed and to come back first.
printf 'echo BOOTED\nsleep 4\n' >"$T_DIR/bye2.sh"
printf 'name = "bye2"\nmemory_mib = 256\n[guest]\nscript = "bye2.sh"\n' >"$T_DIR/bye2.toml"

host_up "$T_DIR/host.toml"
field() { axl list | awk -v d="$1" -v c="$2" '$1==d{print $c}'; }  # 5: state, 7: QEMU pid
running_again() {  # running_again NAME OLD_QEMU_PID: running on another QEMU (one listing)
  local row
  row=$(axl list | awk -v d="$1" '$1==d{print $5, $7}')
  [ "${row%% *}" = running ] && [ "${row##* }" -gt 0 ] && [ "${row##* }" != "$2" ]
}
wait_console() {  # wait_console NAME REGEX
  for _ in $(seq 600); do console_has "$1" "$2" && return; sleep 0.1; done
  die "$1 never printed $2: $(axl console "$1" --log | tail -n 5)"
}
seen_pids=()

# restart: boots again with its disk and its vTPM.
axl create "$T_DIR/again.toml" >&2
wait_console again BOOTED
qemu=$(field again 7)
seen_pids+=("$qemu" "$(axl vtpms | awk '$1=="again"{print $2}')")
kill -KILL "$qemu"
for _ in $(seq 300); do running_again again "$qemu" && break; sleep 0.1; done
running_again again "$qemu" || die "again was not restarted after its QEMU crashed: $(axl list)"
grep -q "domain again crashed: QEMU killed by Killed; on_crash = restart" "$T_STATE/hv.log" ||
  die "the crash's cause is not logged"
wait_console again BOOTED
[ "$(console_value again DISK-SHA256)" = "$(sha_of "$T_DIR/disk.img")" ] || die "again read its disk wrong after the restart"
[ "$(console_value again PCR9)" = "$(expected_pcr9 again)" ] ||
  die "PCR 9 after the restart is not this boot's measurement"
axl vtpms | grep -q '^again .* running' || die "again's vTPM is not running: $(axl vtpms)"
seen_pids+=("$(field again 7)" "$(axl vtpms | awk '$1=="again"{print $2}')")
log "restart: booted again with its disk and vTPM"

# preserve: listed as crashed with the cause until destroyed.
axl create "$T_DIR/kept.toml" >&2
wait_console kept BOOTED
qemu=$(field kept 7)
seen_pids+=("$qemu" "$(axl vtpms | awk '$1=="kept"{print $2}')")
kill -KILL "$qemu"
for _ in $(seq 100); do [ "$(field kept 5)" = crashed ] && break; sleep 0.1; done
[ "$(field kept 5)" = crashed ] || die "kept is not listed as crashed: $(axl list)"
axl vtpms | grep -q '^kept .* running' || die "a preserved domain's vTPM went: $(axl vtpms)"
out=$(axl wait kept --timeout 5 2>&1) && die "axl wait succeeded on a crashed domain"
[ "$out" = "axl: domain kept crashed: QEMU killed by Killed" ] || die "axl wait said: $out"
axl destroy kept >&2
[ -z "$(field kept 5)" ] || die "kept is still listed after destroy"
for _ in $(seq 100); do axl vtpms | grep -q '^kept ' || break; sleep 0.1; done
axl vtpms | grep -q '^kept ' && die "kept's vTPM outlived its destroy: $(axl vtpms)"
log "preserve: listed as crashed until destroyed"

# destroy (the default): gone.
axl create "$T_DIR/gone.toml" >&2
wait_console gone BOOTED
qemu=$(field gone 7)
seen_pids+=("$qemu")
kill -KILL "$qemu"
for _ in $(seq 100); do [ -z "$(field gone 5)" ] && break; sleep 0.1; done
[ -z "$(field gone 5)" ] || die "gone is still listed after its crash: $(axl list)"
log "destroy: gone after its crash"

# A guest that powers off is shut off, not crashed.
axl create "$T_DIR/bye.toml" >&2
axl wait bye --timeout 120 >&2 || die "bye did not shut off cleanly"
[ "$(field bye 5)" = shutoff ] || die "bye is $(field bye 5), not shutoff"

# The hypervisor killed: its successor adopts the QEMU, and a guest that
# powers off then is shut off, not crashed.
axl create "$T_DIR/bye2.toml" >&2
wait_console bye2 BOOTED
qemu=$(field bye2 7)
hv=$(cat "$T_STATE/hv.pid")
kill -KILL "$hv"
for _ in $(seq 100); do
  [ "$(cat "$T_STATE/hv.pid" 2>/dev/null)" != "$hv" ] && [ "$(field bye2 7)" = "$qemu" ] && break
  sleep 0.1
done
[ "$(field bye2 7)" = "$qemu" ] || die "bye2's QEMU was not adopted: $(axl list)"
axl wait bye2 --timeout 120 >&2 || die "bye2 did not shut off cleanly under an adopted hypervisor"
[ "$(field bye2 5)" = shutoff ] || die "bye2 is $(field bye2 5), not shutoff"
log "adopted: a guest that powers off is shut off"

# The hypervisor and its monitor killed: its QEMU runs on, and host down stops it.
axl create "$T_DIR/gone.toml" >&2
wait_console gone BOOTED
qemu=$(field gone 7)
seen_pids+=("$qemu" $(axl drivers | awk 'NR>1{print $3}') "$(cat "$T_STATE/supervisor.pid")")
kill -KILL "$(cat "$T_STATE/hv-monitor.pid")"
kill -KILL "$(cat "$T_STATE/hv.pid")"
sleep 0.5
kill -0 "$qemu" 2>/dev/null || die "QEMU did not outlive its hypervisor: the test proves nothing"
out=$(axl host down 2>&1) || die "host down failed: $out"
T_UP=0
grep -q "stopped QEMU pid $qemu of domain gone, left behind by its hypervisor" <<<"$out" ||
  die "host down did not say it stopped the QEMU left behind: $out"
assert_gone "${seen_pids[@]}"
log "PASS"
