#!/usr/bin/env bash
# `axl campaign` end to end: 40 injections covering every campaign fault
# kind of the disk and NIC drivers, the vTPM and both host daemons, drawn
# from a seed, against a guest that streams TCP to the host, loops disk
# write/read-back rounds and reads a PCR of its vTPM.  The campaign passes
# (exit 0): every fault detected and recovered, no byte corrupted, no error
# the guest saw, no restart that no injection explains.  The JSON report's
# counts add up, both SVGs are well-formed XML with the expected series, and
# --plan with the same seed gives the sequence the campaign ran.  Bad
# campaign files get a one-line error.  Nothing is left running.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v python3 >/dev/null || { echo "SKIP: python3 not installed (it checks the report)"; exit 77; }
make_ns

campaign_host axlt40
faults=()
for t in disk nic; do
  for k in kill crash hang cpu-hog hog-memory leak hog-pids wild-write bogus-id bogus-len \
    dup-completion stall drop-completion slow; do
    faults+=("$t:$k")
  done
done
faults+=(vtpm:crash vtpm:hang vtpm:die-in-command supervisor:crash hv:crash)
campaign_file "$T_DIR/c.toml" 10.214.40 40 11 "$(campaign_faults "${faults[@]}")"

host_up "$T_DIR/host.toml"
in_ns ip addr add 10.214.40.1/24 dev axlt40

# Bad input: one line naming the problem, exit 1, nothing created.
out=$(axl campaign "$T_DIR/nope.toml" 2>&1) && die "a missing campaign file was accepted"
[ "$(wc -l <<<"$out")" = 1 ] || die "not one line: $out"
sed 's/^injections = 40/injections = 0/' "$T_DIR/c.toml" >"$T_DIR/bad.toml"
out=$(axl campaign "$T_DIR/bad.toml" 2>&1) && die "injections = 0 was accepted"
grep -q "bad.toml:.*'injections' must be an integer from 1" <<<"$out" || die "unexpected error: $out"
sed 's/kind = "leak"/kind = "escape"/' "$T_DIR/c.toml" >"$T_DIR/bad.toml"
out=$(axl campaign "$T_DIR/bad.toml" 2>&1) && die "an unknown fault was accepted"
grep -q "'escape' is not a campaign fault for target disk" <<<"$out" || die "unexpected error: $out"
[ -z "$(axl list | awk 'NR>1')" ] || die "a bad campaign left a domain: $(axl list)"

axl campaign "$T_DIR/c.toml" --plan >"$T_DIR/plan1"
axl campaign "$T_DIR/c.toml" --plan >"$T_DIR/plan2"
cmp -s "$T_DIR/plan1" "$T_DIR/plan2" || die "the same seed gave two sequences"
sed 's/^seed = 11/seed = 12/' "$T_DIR/c.toml" >"$T_DIR/c12.toml"
axl campaign "$T_DIR/c12.toml" --plan >"$T_DIR/plan12"
cmp -s "$T_DIR/plan1" "$T_DIR/plan12" && die "seeds 11 and 12 gave the same sequence"

rc=0
axl campaign "$T_DIR/c.toml" >"$T_DIR/out" 2>"$T_DIR/err" || rc=$?
cat "$T_DIR/out" >&2
((rc == 0)) || { tail -n 20 "$T_DIR/err" >&2; die "the campaign failed (exit $rc)"; }
R="$T_DIR/report"
for f in report.json report.txt outage.svg throughput.svg; do [ -s "$R/$f" ] || die "no $f"; done
grep -q '^PASSED$' "$R/report.txt" || die "report.txt does not say PASSED"
grep -q 'campaign: [0-9]*/40 injected' "$T_DIR/err" || die "no progress line on stderr"

python3 - "$R" "$T_DIR/plan1" "${faults[@]}" <<'PY' || die "the report does not add up"
import json, sys, xml.etree.ElementTree as ET
rdir, plan, faults = sys.argv[1], sys.argv[2], sys.argv[3:]
r = json.load(open(rdir + "/report.json"))
def need(c, what):
    if not c:
        sys.exit("report: " + what)
need(r["schema"] == "axolotl-campaign/1", "schema")
need(r["passed"] is True and r["interrupted"] is False, "not passed")
t, inj = r["totals"], r["injections"]
need(r["planned"] == 40 and t["injected"] == 40 and len(inj) == 40, "40 injections")
need(t["detected"] == 40 and t["recovered"] == 40 and t["failures"] == 0, "all detected and recovered")
need(t["corrupted_bytes"] == 0 and t["guest_visible_errors"] == 0, "nothing lost")
need(t["unexpected_restarts"] == 0 and r["unexpected_restarts"] == [], "no unexpected restart")
need(sum(i["detected"] for i in inj) == t["detected"], "detected sum")
need(sum(i["recovered"] for i in inj) == t["recovered"], "recovered sum")
need(sum(f["injected"] for f in r["faults"]) == 40, "per-fault injected sum")
need(sorted(f["fault"] for f in r["faults"]) == sorted(faults), "every fault kind injected")
for f in r["faults"]:
    need(f["detected"] == f["recovered"] == f["injected"], f["fault"] + " counts")
    o = f["outage_ms"]
    need(0 < o["p50"] <= o["p90"] <= o["p99"] <= o["max"], f["fault"] + " percentiles")
for i in inj:
    need(i["outage_ms"] > 0 and i["error"] is None, "injection %d" % i["index"])
    need((i["detect_ms"] is None) == (not i["expect_restart"]), "detect_ms of %d" % i["index"])
    if i["expect_restart"]:
        need(0 <= i["detect_ms"] <= i["outage_ms"], "detect before recovery in %d" % i["index"])
w = r["workload"]
need(w["stream_bytes"] > 0 and w["disk_rounds"] > 0 and w["pcr_reads"] > 0, "workload ran")
need(w["guest_kernel_errors"] == 0 and w["pcr_errors"] == 0, "guest saw no error")
need(len(r["throughput"]) > 0, "throughput samples")
ran = [i["fault"] for i in inj]
planned = [l.split()[1] for l in open(plan).read().splitlines()[1:]]
need(ran == planned, "the plan is the sequence run")
svg = "{http://www.w3.org/2000/svg}"
o = ET.parse(rdir + "/outage.svg").getroot()
need(o.tag == svg + "svg", "outage.svg root")
kinds = sorted(g.get("data-fault") for g in o.iter(svg + "g") if g.get("class") == "histogram")
need(kinds == sorted(faults), "a histogram per fault kind")
th = ET.parse(rdir + "/throughput.svg").getroot()
need(len([p for p in th.iter(svg + "polyline") if p.get("class") == "throughput"]) == 1, "throughput series")
need(len([l for l in th.iter(svg + "line") if l.get("class") == "injection"]) == 40, "40 injection marks")
PY

[ -z "$(axl list | awk 'NR>1')" ] || die "the campaign left its domain: $(axl list)"
every="$(driver_col blk0 3) $(driver_col net0 3) $(driver_col net0 8) $(cat "$T_STATE/hv.pid") $(cat "$T_STATE/supervisor.pid")"
axl host down >&2
T_UP=0
assert_gone $every
log "PASS: $(tail -n 2 "$R/report.txt" | head -n 1)"
