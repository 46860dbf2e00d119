#!/usr/bin/env bash
# Hang detection without false alarms.  With heartbeat_ms = 5 and
# heartbeat_misses = 3, a host whose two cores are kept busy by a CPU hog
# delays a healthy driver's heartbeat answers far past 15 ms.  The supervisor
# must tell "runnable but not scheduled" from "hung": for 20 s of hog while the
# guest writes and reads back its disk and streams TCP through the net driver,
# neither driver may be restarted.  A SIGSTOPped driver is still found hung
# and replaced under the same load, and every byte verifies.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

driver_opts="heartbeat_ms = 5
heartbeat_misses = 3
restart_max = 20"
workload_host axlt8 "$driver_opts" "$driver_opts"
workload_script "$T_DIR/guest.sh" 10.214.8 81
workload_guest hl 52:54:00:12:08:01

host_up "$T_DIR/host.toml"
workload_start hl 10.214.8 axlt8
rounds() { workload_rounds hl; }

restarts() { axl drivers | awk -v d="$1" '$1==d{print $5}'; }
# The hog: six busy loops for two cores, at the drivers' own priority.
hogs=()
for _ in 1 2 3 4 5 6; do
  bash -c 'while :; do :; done' &
  hogs+=($!)
  track $!
done
r0=$(rounds)
s0=$(workload_bytes)
sleep 20
r1=$(rounds)
s1=$(workload_bytes)
log "20 s under a CPU hog: $((r1 - r0)) disk rounds, $(( (s1 - s0) / 1048576 )) MiB streamed"
axl drivers >&2
log "supervisor: $(grep -c 'starved, not hung' "$T_STATE/supervisor.log" || true) silences called starvation, not a hang"
((r1 > r0)) || die "the guest completed no disk round under the hog"
((s1 > s0)) || die "the stream made no progress under the hog"
[ "$(restarts blk0)" = 0 ] || die "blk0 restarted $(restarts blk0) times while serving requests under a CPU hog"
[ "$(restarts net0)" = 0 ] || die "net0 restarted $(restarts net0) times while serving requests under a CPU hog"

# A stopped driver is still a hang, hog or not.
for d in blk0 net0; do
  pid=$(axl drivers | awk -v d=$d '$1==d{print $3}')
  kill -STOP "$pid"
  for _ in $(seq 100); do [ "$(restarts $d)" = 1 ] && break; sleep 0.05; done
  [ "$(restarts $d)" = 1 ] || die "$d SIGSTOPped under the hog was not replaced"
  axl drivers | awk -v d=$d '$1==d' | grep -q 'hang: ' || die "$d replaced, but not for a hang"
  log "$d: SIGSTOPped pid $pid replaced: $(axl drivers | awk -v d=$d '$1==d{for (i=9; i<=NF; ++i) printf "%s ", $i}')"
done
for h in "${hogs[@]}"; do
  kill "$h"
  wait "$h" 2>/dev/null || true
  T_PIDS=("${T_PIDS[@]/$h}")
done
workload_finish hl 10.214.8 81
log "PASS"
