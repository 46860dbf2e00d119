#!/usr/bin/env bash
# Triggered faults and the fault kinds that go with them (`axl inject DRIVER
# FAULT --after N --probability P --seed S`), while a guest streams TCP to
# the host and loops disk write/read-back rounds:
# - crash armed --after 10^9 requests: the driver serves on, unreplaced;
#   armed again --after 50 (replacing the first), it aborts at a request and
#   is replaced ("crash: killed by Aborted");
# - drop-completion (one owed answer never sent), in net0 --after 30 and in
#   blk0 --probability 0.02 --seed 3: the hypervisor's progress watchdog
#   (io_timeout_ms) reports the stall and the supervisor replaces the driver;
# - leak (1 MiB every 10 ms): the cgroup's memory limit OOM-kills it and the
#   supervisor replaces it ("resource limit: memory");
# - cpu-hog in net0 --after 20: its loop spins, heartbeats go unanswered,
#   and the supervisor replaces it as hung;
# - slow (every answer 20 ms late): heartbeats are still answered, so the
#   driver is not replaced; the guest's I/O goes on, slower;
# - bad requests (a probability of 1.5, an unknown fault) get a one-line
#   error and change nothing.
# Every streamed byte and every disk round verifies and the guest's kernel
# logs no I/O or network error.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

workload_host axlt16 "fault_injection = true
restart_max = 20
io_timeout_ms = 1000
memory_max_mib = 64" "fault_injection = true
restart_max = 20
io_timeout_ms = 1000"
workload_script "$T_DIR/guest.sh" 10.214.16 116
workload_guest ft 52:54:00:12:16:01

host_up "$T_DIR/host.toml"
workload_start ft 10.214.16 axlt16
rounds() { workload_rounds ft; }

# progress N: the guest completes N more disk rounds and streams more bytes.
progress() {
  local r0 b0
  r0=$(rounds) b0=$(workload_bytes)
  for _ in $(seq 900); do
    (($(rounds) >= r0 + $1)) && (($(workload_bytes) > b0)) && return
    sleep 0.1
  done
  die "the guest made no progress ($(rounds) rounds, $(workload_bytes) bytes; was $r0, $b0)"
}
# replaced DRIVER PID CAUSE_REGEX: waits until DRIVER runs as a new instance
# whose predecessor's cause matches.
replaced() {
  local np=""
  for _ in $(seq 300); do
    np=$(driver_col "$1" 3)
    [ "$(driver_col "$1" 4)" = running ] && [ -n "$np" ] && [ "$np" != "$2" ] && break
    sleep 0.1
  done
  [ -n "$np" ] && [ "$np" != "$2" ] || die "$1 (pid $2) was not replaced"
  local cause
  cause=$(last_failure "$1")
  log "$1: pid $2 replaced by $np; last failure: $cause"
  grep -qE "$3" <<<"$cause" || die "$1: last failure '$cause' does not match '$3'"
}

# fault_replaces DRIVER CAUSE_REGEX INJECT_ARGS...: injects, waits for the
# driver's replacement with that cause, and for the guest to go on.
fault_replaces() {
  local drv=$1 cause=$2 pid
  shift 2
  pid=$(driver_col "$drv" 3)
  axl inject "$drv" "$@" >&2
  replaced "$drv" "$pid" "$cause"
  progress 2
}

# 1. A crash armed far ahead does not fire; armed again nearer, it does.
pid=$(driver_col blk0 3)
out=$(axl inject blk0 crash --after 1000000000)
[ "$out" = "armed fault crash in driver blk0: after 1000000000 requests, probability 0, seed 0" ] ||
  die "unexpected answer to an armed inject: '$out'"
progress 3
[ "$(driver_col blk0 3)" = "$pid" ] || die "blk0 was replaced although its fault was not due"
grep -q "fault hook: crash armed: after 1000000000 requests" "$T_STATE/driver-blk0.log" ||
  die "blk0 did not log the armed fault"
fault_replaces blk0 "^crash: killed by Aborted" crash --after 50

# 2. drop-completion: one answer the hypervisor waits for never comes.
stalled="^stalled: request [0-9]+ outstanding for [0-9]+ ms"
fault_replaces net0 "$stalled" drop-completion --after 30
fault_replaces blk0 "$stalled" drop-completion --probability 0.02 --seed 3

# 3. leak: steady growth until the cgroup's limit.
fault_replaces blk0 "^resource limit: memory" leak

# 4. cpu-hog: a spinning loop answers no heartbeat.
fault_replaces net0 "^hang: [0-9]+ heartbeats missed" cpu-hog --after 20

# 5. slow: late answers are not a failure the supervisor acts on.
pid=$(driver_col net0 3)
restarts=$(driver_col net0 5)
axl inject net0 slow >&2
progress 2
[ "$(driver_col net0 3)" = "$pid" ] || die "a slow net0 was replaced: $(last_failure net0)"
[ "$(driver_col net0 5)" = "$restarts" ] || die "a slow net0 was restarted"
grep -q "fault hook: slow" "$T_STATE/driver-net0.log" || die "net0 did not log the slow fault"

# 6. Bad requests: one line, non-zero, nothing changes.
pid=$(driver_col blk0 3)
if axl inject blk0 crash --probability 1.5 >"$T_DIR/out" 2>&1; then die "a probability of 1.5 was accepted"; fi
[ "$(wc -l <"$T_DIR/out")" = 1 ] && grep -q "probability" "$T_DIR/out" ||
  die "bad probability: expected one line naming it, got: $(cat "$T_DIR/out")"
if axl inject blk0 nosuch >"$T_DIR/out" 2>&1; then die "an unknown fault was accepted"; fi
grep -qx "axl: unknown fault 'nosuch'" "$T_DIR/out" || die "unknown fault: got: $(cat "$T_DIR/out")"
progress 1
[ "$(driver_col blk0 3)" = "$pid" ] || die "a refused inject changed blk0"

workload_finish ft 10.214.16 116
[ "$(driver_col blk0 5)" = 3 ] || die "blk0: expected 3 restarts, got $(driver_col blk0 5)"
[ "$(driver_col net0 5)" = 2 ] || die "net0: expected 2 restarts, got $(driver_col net0 5)"
log "PASS"
