#!/usr/bin/env bash
# Ctrl-C in the middle of `axl campaign`: SIGINT after a few of its 1000
# injections stops it between steps; it exits non-zero (130), writes the
# partial report (interrupted, not passed, the injections so far), and
# destroys its workload domain: its QEMU and vTPM are gone, no domain is
# listed.  Then `axl host down` leaves no process behind (and the test's
# cleanup removes the namespace and its TAP).
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v python3 >/dev/null || { echo "SKIP: python3 not installed (it checks the report)"; exit 77; }
make_ns

campaign_host axlt41
campaign_file "$T_DIR/c.toml" 10.214.41 1000 5 "$(campaign_faults disk:crash nic:kill vtpm:crash)"
host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.41.1/24 dev axlt41

ip netns exec "$T_NS" "$AXL" --state-dir "$T_STATE" campaign "$T_DIR/c.toml" >"$T_DIR/out" 2>"$T_DIR/err" &
camp=$!
track $camp
injected() { sed -n 's/.*campaign: \([0-9]*\)\/1000 injected.*/\1/p' "$T_DIR/err" | tail -n 1; }
for _ in $(seq 600); do
  (($(injected || echo 0) + 0 >= 3)) && break
  kill -0 $camp 2>/dev/null || die "the campaign ended early: $(tail -n 5 "$T_DIR/err")"
  sleep 0.5
done
(($(injected) >= 3)) || die "the campaign made no progress: $(tail -n 5 "$T_DIR/err")"
qemu=$(axl list | awk '$1=="camp"{print $7}')
vtpm=$(vtpm_field camp 2)
[ -n "$qemu" ] && [ -n "$vtpm" ] || die "no workload domain: $(axl list)"

kill -INT $camp
rc=0
wait $camp || rc=$?
T_PIDS=("${T_PIDS[@]/$camp}")
((rc == 130)) || die "the interrupted campaign exited $rc, not 130: $(tail -n 5 "$T_DIR/err")"
grep -q 'interrupted; the partial report is written' "$T_DIR/err" || die "no word of the interruption"
python3 - "$T_DIR/report/report.json" <<'PY' || die "the partial report is wrong"
import json, sys
r = json.load(open(sys.argv[1]))
n = r["totals"]["injected"]
if not (r["interrupted"] is True and r["passed"] is False and r["planned"] == 1000):
    sys.exit("not marked interrupted and failed")
if not (3 <= n < 1000 and len(r["injections"]) == n):
    sys.exit("injections: %d" % n)
PY
grep -q '^FAILED$' "$T_DIR/report/report.txt" || die "report.txt does not say FAILED"
[ -z "$(axl list | awk 'NR>1')" ] || die "the campaign left its domain: $(axl list)"
assert_gone "$qemu" "$vtpm"

every="$(driver_col blk0 3) $(driver_col net0 3) $(cat "$T_STATE/hv.pid") $(cat "$T_STATE/supervisor.pid")"
axl host down >&2
T_UP=0
assert_gone $every
log "PASS: stopped after $(injected) injections"
