#!/usr/bin/env bash
# The supervisor's org.axolotl.Manager1 API on a private dbus-daemon, driven
# by busctl: drivers are listed, a domain is created over the bus, and a
# driver that crashes at every start is given up after its budget with a
# DriverFailed signal that a bus client sees, while the hypervisor and the
# guest on another driver keep running and reading their disk.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns
start_bus

# Every Manager1 signal, from before the host is up.
busctl --address="$BUS" monitor --match="type='signal',interface='org.axolotl.Manager1'" \
  >"$T_DIR/signals.txt" 2>&1 &
track $!
for _ in $(seq 100); do
  bus list 2>/dev/null | grep -q busctl && break
  sleep 0.05
done

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
[[driver]]
name = "bad0"
kind = "blk"
fault_injection = true
fault_at_start = "crash"
restart_max = 2
restart_window_s = 60
backoff_ms = 10
TOML
"$TOOL" gen 11 8M >"$T_DIR/disk.img"
# Reads the disk, waits while the host fails a driver, reads it again.
cat >"$T_DIR/guest.sh" <<'SH'
i=0
while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo FIRST-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
i=0
while [ ! -e /tmp/never ] && [ $i -lt 80 ]; do sleep 0.1; i=$((i + 1)); done
echo 3 >/proc/sys/vm/drop_caches
echo SECOND-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "dbg"
memory_mib = 256
[[disk]]
driver = "blk0"
image = "disk.img"
# A vTPM makes the hypervisor call back into the supervisor while it
# creates the domain: the D-Bus call must not hold the supervisor's loop.
[vtpm]
enabled = true
[guest]
script = "guest.sh"
TOML

# An unreachable bus that was asked for is an error, and nothing is left.
out=$(axl host up --config "$T_DIR/host.toml" --bus "unix:path=$T_DIR/no-bus" 2>&1) &&
  die "host up succeeded without its bus"
echo "$out" | grep -q "D-Bus" || die "unclear error for a missing bus: $out"
[ ! -e "$T_STATE/hv.pid" ] || die "host up left a pid file behind: $(ls "$T_STATE")"

axl host up --config "$T_DIR/host.toml" --bus "$BUS" >&2
T_UP=1
grep -q "D-Bus API org.axolotl.Manager1 on $BUS" "$T_STATE/supervisor.log" ||
  die "supervisor does not say it serves the API"

# The real client lists the drivers; bad0 has used up its budget already.
drivers=$(manager call ListDrivers)
log "ListDrivers: $drivers"
echo "$drivers" | grep -q '"blk0" "blk" [0-9]* "running"' || die "blk0 not listed running: $drivers"
echo "$drivers" | grep -q '"bad0" "blk" -1 "failed" 2 ' || die "bad0 not listed failed: $drivers"
for _ in $(seq 100); do grep -q 'Member=DriverFailed' "$T_DIR/signals.txt" && break; sleep 0.05; done
grep -A3 'Member=DriverFailed' "$T_DIR/signals.txt" | grep -q '"bad0"' ||
  die "no DriverFailed for bad0 seen by busctl monitor: $(cat "$T_DIR/signals.txt")"
[ "$(bus get-property org.axolotl /org/axolotl/Driver/bad0 org.axolotl.Driver1 State)" = 's "failed"' ] ||
  die "bad0's State property is not failed"
bus get-property org.axolotl /org/axolotl/Driver/bad0 org.axolotl.Driver1 LastFailure | grep -q "crash: killed by Aborted" ||
  die "bad0's LastFailure does not name the crash"

# A domain created over the bus.
[ "$(manager call CreateDomain s "$T_DIR/guest.toml")" = 's "dbg"' ] || die "CreateDomain failed"
manager call ListDomains | grep -q '"dbg" [0-9]* "running"' || die "dbg not listed: $(manager call ListDomains)"
[ "$(axl vtpms | awk '$1=="dbg"{print $3}')" = running ] || die "dbg's vTPM is not running: $(axl vtpms)"
for _ in $(seq 600); do
  console_has dbg FIRST-SHA256 && break
  sleep 0.05
done
console_has dbg FIRST-SHA256 || die "guest did not read its disk"

# Methods that change state hand their caller to the access policy, on this
# private bus too: under the built-in policy uid 65534 may read, not create,
# destroy, kill or restart (AccessDenied naming why), and nothing changes.
chmod 0711 "$T_DIR"
nobody_bus() {  # METHOD ARGS... as dbus-send takes them; prints the reply or the error
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    dbus-send --bus="$BUS" --print-reply --dest=org.axolotl /org/axolotl/Manager1 \
    "org.axolotl.Manager1.$1" "${@:2}" 2>&1
}
nobody_bus ListDomains | grep -q '"dbg"' || die "uid 65534 cannot read the domains"
for call in "DestroyDomain string:dbg" "KillDriver string:blk0 string:KILL" \
  "RestartDriver string:blk0" "CreateDomain string:$T_DIR/guest.toml"; do
  # shellcheck disable=SC2086
  err=$(nobody_bus $call) && die "uid 65534 was allowed $call: $err"
  grep -q "AccessDenied: denied by policy: uid 65534 over D-Bus may not .* (no rule allows it: default deny)" <<<"$err" ||
    die "$call by uid 65534: $err"
done
chmod 0700 "$T_DIR"
manager call ListDomains | grep -q '"dbg" [0-9]* "running"' || die "dbg changed: $(manager call ListDomains)"
grep -q 'audit daemon=supervisor subject="uid 65534 over D-Bus" object="driver blk0" permission=kill verdict=deny rule="default deny"' "$T_STATE/supervisor.log" ||
  die "refusal not audited by the supervisor"
grep -q 'audit daemon=hv subject="uid 65534 over D-Bus" object="guest dbg" permission=destroy verdict=deny' "$T_STATE/hv.log" ||
  die "refusal not audited by the hypervisor"
# ...and counted, the hypervisor's decisions with the supervisor's.
policy_count_at_least PolicyDenied 4 "4 refusals"
policy_count_at_least PolicyAllowed 1 "CreateDomain by root"

# axl itself as a client of the API.
abus() { "$AXL" --bus "$BUS" "$@"; }
abus drivers | grep -q "^bad0 .* failed .*crash: killed by Aborted" || die "axl --bus drivers: $(abus drivers)"
abus list | grep -q "^dbg .* running" || die "axl --bus list: $(abus list)"
err=$(abus driver-restart nosuch 2>&1) && die "axl --bus driver-restart of an unknown driver succeeded"
[ "$(echo "$err" | wc -l)" = 1 ] && echo "$err" | grep -q "nosuch" || die "unclear error: $err"
err=$("$AXL" --bus "unix:path=$T_DIR/no-bus" drivers 2>&1) && die "axl on a missing bus succeeded"
echo "$err" | grep -q "cannot connect" || die "unclear error for a missing bus: $err"

# An operator restart gives bad0 a fresh budget; it crashes through it again
# while the guest runs, and a second DriverFailed goes out.
abus driver-restart bad0 >&2
for _ in $(seq 200); do
  [ "$(grep -c 'Member=DriverFailed' "$T_DIR/signals.txt")" -ge 2 ] && break
  sleep 0.05
done
[ "$(grep -c 'Member=DriverFailed' "$T_DIR/signals.txt")" -ge 2 ] ||
  die "no second DriverFailed: $(cat "$T_DIR/signals.txt")"
grep -q 'Member=DriverRestarted' "$T_DIR/signals.txt" || die "no DriverRestarted signal"
# Outage records: 3 crashes before the first give-up (start + 2 restarts), 2
# after the operator restart (it + 1 restart).
n=$(abus drivers --stats | awk '/^Driver +Detect/ {t=1; next} t && $1=="bad0" && /crash: killed by Aborted/' | wc -l)
[ "$n" = 5 ] || die "axl --bus drivers --stats lists $n of bad0's 5 failures: $(abus drivers --stats)"
manager call ListDrivers | grep -q '"bad0" "blk" -1 "failed" 4 ' ||
  die "bad0 not failed after 4 restarts: $(manager call ListDrivers)"
axl list | grep -q "dbg.*running" || die "guest not running after the failure: $(axl list)"

axl wait dbg --timeout 120 >&2 || die "guest script failed"
want=$(sha_of "$T_DIR/disk.img")
[ "$(console_value dbg FIRST-SHA256)" = "$want" ] || die "first read wrong"
[ "$(console_value dbg SECOND-SHA256)" = "$want" ] || die "second read wrong"

# Every state change is signalled, whoever caused it: the D-Bus create above,
# the guest powering off by itself, a destroy over the bus, and `axl create`
# and `axl destroy` on the hypervisor's own socket.
# state_changes: "NAME STATE" per DomainStateChanged signal, in order.
state_changes() {
  awk '/Member=DomainStateChanged/ {m = 1; n = ""; next}
       m && /STRING "/ {v = $0; sub(/^[^"]*"/, "", v); sub(/".*$/, "", v)
                        if (n == "") n = v; else {print n, v; m = 0}}' "$T_DIR/signals.txt"
}
await_change() {  # await_change NAME STATE
  for _ in $(seq 200); do state_changes | grep -qx "$1 $2" && return 0; sleep 0.05; done
  die "no DomainStateChanged($1, $2) seen by busctl monitor: $(state_changes | tr '\n' ',')"
}
await_change dbg running
await_change dbg shutoff
manager call DestroyDomain s dbg
await_change dbg destroyed
cat >"$T_DIR/short.sh" <<'SH'
echo SHORT-DONE
SH
cat >"$T_DIR/short.toml" <<TOML
name = "dsc"
memory_mib = 256
[guest]
script = "short.sh"
TOML
axl create "$T_DIR/short.toml" >&2
await_change dsc running
axl wait dsc --timeout 120 >&2 || die "short guest failed"
await_change dsc shutoff
axl destroy dsc >&2
await_change dsc destroyed
want="dbg preparing,dbg vtpm-starting,dbg attaching,dbg starting,dbg running,dbg shutoff,dbg destroyed,"
want+="dsc preparing,dsc attaching,dsc starting,dsc running,dsc shutoff,dsc destroyed,"
[ "$(state_changes | tr '\n' ,)" = "$want" ] ||
  die "DomainStateChanged signals out of order, missing or repeated: $(state_changes | tr '\n' ,)"
# Bad input over the bus: an error reply naming the problem.
err=$(manager call DestroyDomain s nosuch 2>&1) && die "destroying an unknown domain succeeded"
log "unknown domain: $err"
err=$(manager call KillDriver ss nosuch KILL 2>&1) && die "killing an unknown driver succeeded"
echo "$err" | grep -q nosuch || die "unclear error: $err"
log "PASS"
