#!/usr/bin/env bash
# The access policy (docs/policy.md), tried through every door:
# - `axl policy check` names file:line:column for a malformed policy;
# - with a policy in force, each permission it denies fails through `axl`
#   (create, attach_blk, bind_channel, destroy, console, exec, attest,
#   vtpm_access, kill, restart, inject_fault; shutdown needs destroy) and
#   through D-Bus (CreateDomain, DestroyDomain, KillDriver, RestartDriver),
#   each with one line naming the rule, and nothing changes: no domain
#   appears, the guest keeps running, the driver keeps its pid;
# - every decision is audited in the daemons' logs and counted on D-Bus;
# - `axl policy reload` to a stricter policy takes effect for the running
#   guest at once; a malformed one is refused with file:line:column, and a
#   policy the running guest would break is refused whole: the old one stays;
# - over D-Bus a name whose vTPM state remains needs CreateDomainWithVtpmState.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns
start_bus

P="$T_DIR/policy.toml"
# Rules go before the first [[table]] (TOML); lines are counted below.
cat >"$P" <<'TOML'
rules = [
  "allow admin -> * : *",
  "deny admin -> locked : destroy, attest, exec",
  "deny admin -> forbidden : create",
  "deny admin -> blk : kill, restart, inject_fault",
  "deny admin -> tpms : vtpm_access",
  "allow guests -> drivers : attach_net, attach_blk",
  "deny isolated -> blk : attach_blk",
  "allow drivers -> guests : bind_channel",
  "deny blk -> unserved : bind_channel",
]

[[operator]]
label = "admin"
uid = 0

[[guest]]
label = "locked"
names = ["web"]

[[guest]]
label = "forbidden"
names = ["forbidden*"]

[[guest]]
label = "isolated"
names = ["isolated*"]

[[guest]]
label = "unserved"
names = ["unserved*"]

[[guest]]
label = "guests"
names = ["*"]

[[driver]]
label = "blk"
names = ["blk0"]

[[driver]]
label = "drivers"
names = ["*"]

[[vtpm]]
label = "tpms"
names = ["*"]
TOML

# axl policy check: ok, and a malformed copy names where.
axl policy check "$P" >/dev/null || die "axl policy check refused a good policy"
sed 's/attach_blk",$/attach_bkl",/' "$P" >"$T_DIR/typo.toml"
out=$(axl policy check "$T_DIR/typo.toml" 2>&1) && die "axl policy check accepted a typo"
[ "$out" = "axl: $T_DIR/typo.toml:7:42: unknown permission 'attach_bkl'" ] || die "policy check said: $out"

cat >"$T_DIR/host.toml" <<TOML
policy = "policy.toml"
[[driver]]
name = "blk0"
kind = "blk"
fault_injection = true
TOML
"$TOOL" gen 12 4M >"$T_DIR/disk.img"
printf 'echo UP\nsleep 600\n' >"$T_DIR/g.sh"
guest_toml() {  # guest_toml NAME: a guest with a disk on blk0 and a vTPM
  printf 'name = "%s"\nmemory_mib = 256\n[[disk]]\ndriver = "blk0"\nimage = "disk.img"\nreadonly = true\n[vtpm]\nenabled = true\n[guest]\nscript = "g.sh"\n' "$1" >"$T_DIR/$1.toml"
}
for g in web forbidden1 isolated1 unserved1; do guest_toml $g; done
axl host up --config "$T_DIR/host.toml" --bus "$BUS" >&2
T_UP=1
axl create "$T_DIR/web.toml" >&2
for _ in $(seq 600); do console_has web UP && break; sleep 0.1; done
console_has web UP || die "web did not boot"
IN_FORCE=$P
blk_pid=$(axl drivers | awk '$1 == "blk0" {print $3}')
[ -n "$blk_pid" ] || die "no pid for blk0: $(axl drivers)"

# denied RULE_LINE CMD...: CMD fails with one line naming the rule at
# line RULE_LINE, column 3 of the policy in force ($IN_FORCE).
denied() {
  local line=$1 out
  shift
  out=$("$@" 2>&1 </dev/null) && die "allowed: $*: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || die "$*: more than one line: $out"
  grep -q "denied by policy: .* (deny at $IN_FORCE:$line:3)" <<<"$out" || die "$*: $out"
  log "refused: $*: $out"
}
denied 3 axl destroy web
denied 3 axl shutdown web --timeout 5
denied 3 axl attest web
denied 3 axl exec web -- true
denied 4 axl create "$T_DIR/forbidden1.toml"
denied 5 axl driver-kill blk0
denied 5 axl driver-restart blk0
denied 5 axl inject blk0 crash
denied 6 axl vtpm-pipe web
denied 8 axl create "$T_DIR/isolated1.toml"
denied 10 axl create "$T_DIR/unserved1.toml"
# Through D-Bus: AccessDenied, naming the rule.
# (dbus-send prints the error's message; busctl only its name.)
dbus_denied() {  # dbus_denied RULE_LINE METHOD ARGS... as dbus-send takes them
  local line=$1 out
  shift
  out=$(dbus-send --bus="$BUS" --print-reply --dest=org.axolotl /org/axolotl/Manager1 \
    "org.axolotl.Manager1.$1" "${@:2}" 2>&1) && die "D-Bus allowed $*: $out"
  grep -q "AccessDenied: denied by policy: uid 0 over D-Bus (admin) may not .* (deny at $P:$line:3)" <<<"$out" ||
    die "D-Bus $*: $out"
  log "refused over D-Bus: $*: $out"
}
dbus_denied 3 DestroyDomain string:web
dbus_denied 5 KillDriver string:blk0 string:KILL
dbus_denied 5 RestartDriver string:blk0
dbus_denied 4 CreateDomain "string:$T_DIR/forbidden1.toml"
# Nothing changed.
[ "$(axl list | awk 'NR > 1 {print $1}' | sort | tr '\n' ' ')" = "web " ] || die "domains now: $(axl list)"
axl list | grep -q "^web .*running" || die "web is not running: $(axl list)"
for g in forbidden1 isolated1 unserved1; do [ ! -e "$T_STATE/dom/$g" ] || die "a refused create left $T_STATE/dom/$g"; done
[ "$(axl drivers | awk '$1 == "blk0" {print $3}')" = "$blk_pid" ] || die "blk0 changed: $(axl drivers)"
out=$(axl attest nosuch 2>&1) && die "attest of a missing domain passed"
[ "$out" = "axl: no domain 'nosuch'" ] || die "attest of a missing domain: $out"
# What is allowed still works.
console_has web UP || die "axl console web --log refused under a policy that allows it"

# Every decision audited, and counted.
grep -q 'audit daemon=hv subject="uid 0" object="guest web" permission=destroy verdict=deny rule="'"$P"':3:3"' "$T_STATE/hv.log" ||
  die "the hypervisor did not audit the refused destroy"
grep -q 'audit daemon=supervisor subject="uid 0" object="driver blk0" permission=kill verdict=deny' "$T_STATE/supervisor.log" ||
  die "the supervisor did not audit the refused kill"
grep -q 'audit daemon=hv subject="uid 0" object="guest web" permission=console verdict=allow rule="'"$P"':2:3"' "$T_STATE/hv.log" ||
  die "the hypervisor did not audit the allowed console"
policy_count_at_least PolicyDenied 15 "15 refusals"

# Reload to a stricter policy: the console of the running guest is refused
# from now on.
sed 's/"deny admin -> locked : destroy, attest, exec",/"deny admin -> locked : destroy, attest, console",/' "$P" >"$T_DIR/strict.toml"
axl policy reload "$T_DIR/strict.toml" >&2 || die "reload to a stricter policy refused"
IN_FORCE=$T_DIR/strict.toml
denied 3 axl console web --log
# A malformed policy is refused whole, naming where; the strict one stays.
sed 's/"allow admin -> \* : \*",/"allow admin -> * : *"/' "$T_DIR/strict.toml" >"$T_DIR/broken.toml"
out=$(axl policy reload "$T_DIR/broken.toml" 2>&1) && die "a malformed policy was put in force"
grep -q "^axl: $T_DIR/broken.toml:3:3: " <<<"$out" || die "malformed reload said: $out"
denied 3 axl console web --log
# A policy the running guest would break (its disk could no longer attach)
# is refused whole too.
sed 's/names = \["isolated\*"\]/names = ["isolated*", "web"]/' "$T_DIR/strict.toml" >"$T_DIR/breaks.toml"
out=$(axl policy reload "$T_DIR/breaks.toml" 2>&1) && die "a policy that web breaks was put in force"
grep -q "running domain web: denied by policy: guest web (locked, isolated, guests) may not attach_blk driver blk0" <<<"$out" ||
  die "reload that breaks web said: $out"
denied 3 axl console web --log
# The daemons load the policy in force when they restart: the hypervisor,
# killed, comes back under the strict policy.
hv_pid=$(cat "$T_STATE/hv.pid")
kill -KILL "$hv_pid"
for _ in $(seq 200); do
  new=$(cat "$T_STATE/hv.pid" 2>/dev/null)
  [ -n "$new" ] && [ "$new" != "$hv_pid" ] && axl list >/dev/null 2>&1 && break
  sleep 0.05
done
denied 3 axl console web --log
log "reload: stricter in force at once and after a restart; malformed and breaking ones refused whole"

# Over D-Bus, a name whose vTPM state remains is refused without a choice,
# and created with CreateDomainWithVtpmState(path, "keep") on its old vTPM.
guest_toml kept
axl create "$T_DIR/kept.toml" >&2
ek=$(sha_of "$T_STATE/vtpm/kept/ek.crt")
axl destroy kept >&2
out=$(manager call CreateDomain s "$T_DIR/kept.toml" 2>&1) && die "D-Bus created kept without a choice"
grep -q "had a vTPM before" <<<"$out" || die "CreateDomain of kept said: $out"
[ "$(manager call CreateDomainWithVtpmState ss "$T_DIR/kept.toml" keep)" = 's "kept"' ] ||
  die "CreateDomainWithVtpmState keep failed"
[ "$(sha_of "$T_STATE/vtpm/kept/ek.crt")" = "$ek" ] || die "kept's vTPM changed"
log "D-Bus: a name with an old vTPM needs a choice; keep boots the same vTPM"
