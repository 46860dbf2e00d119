#!/usr/bin/env bash
# A campaign cannot hide a loss: with the test-only corrupt-read hook (a
# build with AXL_TEST_HOOKS) the disk driver flips one byte of one read.
# The guest's disk round sees it, the report counts one corrupted byte and
# one guest-visible error, says FAILED, and the campaign exits 1.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v python3 >/dev/null || { echo "SKIP: python3 not installed (it checks the report)"; exit 77; }
grep -q '^AXL_TEST_HOOKS:BOOL=ON' "$AXL_BIN/../CMakeCache.txt" 2>/dev/null ||
  { echo "SKIP: this build has no test hooks (configure with -DAXL_TEST_HOOKS=ON)"; exit 77; }
make_ns

campaign_host axlt42
campaign_file "$T_DIR/c.toml" 10.214.42 3 9 "$(campaign_faults disk:corrupt-read nic:crash)"
sed -i 's/^vtpm = true/vtpm = false/' "$T_DIR/c.toml"
host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.42.1/24 dev axlt42

rc=0
axl campaign "$T_DIR/c.toml" >"$T_DIR/out" 2>"$T_DIR/err" || rc=$?
cat "$T_DIR/out" >&2
((rc == 1)) || die "a campaign with a corrupted byte exited $rc, not 1: $(tail -n 5 "$T_DIR/err")"
grep -q '^FAILED$' "$T_DIR/report/report.txt" || die "report.txt does not say FAILED"
python3 - "$T_DIR/report/report.json" <<'PY' || die "the report hides the loss"
import json, sys
r = json.load(open(sys.argv[1]))
w, t = r["workload"], r["totals"]
n = sum(1 for i in r["injections"] if i["fault"] == "disk:corrupt-read")
if n < 1:
    sys.exit("no corrupt-read injected")
if r["passed"] is not False:
    sys.exit("passed")
if w["disk_corrupted_bytes"] != n or w["disk_mismatched_rounds"] != n:
    sys.exit("disk corruption: %r (want %d)" % (w, n))
if t["corrupted_bytes"] != n or t["guest_visible_errors"] < n:
    sys.exit("totals: %r" % t)
PY
[ -z "$(axl list | awk 'NR>1')" ] || die "the campaign left its domain: $(axl list)"
every="$(driver_col blk0 3) $(driver_col net0 3) $(cat "$T_STATE/hv.pid") $(cat "$T_STATE/supervisor.pid")"
axl host down >&2
T_UP=0
assert_gone $every
log "PASS: $(grep -o '[0-9]* corrupted bytes' "$T_DIR/report/report.txt")"
