#!/usr/bin/env bash
# Bad input gets a one-line error naming the problem, a non-zero exit, and
# leaves no process and no half-created domain behind.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

# expect_fail NEEDLE CMD...: CMD must fail with exactly one stderr line containing NEEDLE.
expect_fail() {
  local needle=$1
  shift
  local err rc=0
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  ((rc != 0)) || die "'$*' succeeded; expected an error about '$needle'"
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || die "'$*' printed more than one line: $err"
  [[ "$err" == *"$needle"* ]] || die "'$*' said '$err', expected '$needle'"
  log "ok: $needle"
}

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt2"
[[driver]]
name = "blk0"
kind = "blk"
TOML
printf '[[driver]]\nname = "x"\nkind = "net"\ntap = "t"\ncolour = "red"\n' >"$T_DIR/unknown-key.toml"
printf '[[driver]\nname = \n' >"$T_DIR/malformed.toml"

expect_fail "unknown key 'driver.colour'" axl host up --config "$T_DIR/unknown-key.toml"
expect_fail "malformed.toml:1" axl host up --config "$T_DIR/malformed.toml"
expect_fail "cannot read" axl host up --config "$T_DIR/absent.toml"
[ ! -e "$T_STATE/hv.pid" ] || die "a failed host up left a pid file"

# A stale state dir: a pid file whose process is gone.
mkdir -p "$T_STATE"
echo 999999 >"$T_STATE/hv.pid"
expect_fail "stale state dir" axl host up --config "$T_DIR/host.toml"
axl host down >/dev/null
[ ! -e "$T_STATE/hv.pid" ] || die "host down did not clean the stale state dir"

host_up "$T_DIR/host.toml"
expect_fail "already running" axl host up --config "$T_DIR/host.toml"

guest() {  # guest FILE NAME EXTRA
  printf 'name = "%s"\nmemory_mib = 256\n%s\n' "$2" "$3" >"$T_DIR/$1"
}
"$TOOL" gen 3 1M >"$T_DIR/ok.img"
guest missing-image.toml g1 $'[[disk]]\ndriver = "blk0"\nimage = "nope.img"'
guest unknown-driver.toml g2 $'[[disk]]\ndriver = "blk9"\nimage = "ok.img"'
guest wrong-kind.toml g3 $'[[nic]]\ndriver = "blk0"\nmac = "52:54:00:00:00:01"'
guest bad-key.toml g4 'sound = "ac97"'
guest good.toml g5 $'[[disk]]\ndriver = "blk0"\nimage = "ok.img"'

expect_fail "cannot open image" axl create "$T_DIR/missing-image.toml"
expect_fail "unknown driver 'blk9'" axl create "$T_DIR/unknown-driver.toml"
expect_fail "driver 'blk0' is a blk driver, not net" axl create "$T_DIR/wrong-kind.toml"
expect_fail "unknown key 'sound'" axl create "$T_DIR/bad-key.toml"
expect_fail "no domain named 'ghost'" axl destroy ghost
[ "$(axl list | wc -l)" = 1 ] || die "a failed create left a domain: $(axl list)"
[ -z "$(ls "$T_STATE/dom" 2>/dev/null)" ] || die "a failed create left files: $(ls "$T_STATE/dom")"

axl create "$T_DIR/good.toml" >&2
expect_fail "domain 'g5' already exists" axl create "$T_DIR/good.toml"
[ "$(axl list | awk '$1=="g5"{print $5}')" = running ] || die "the first g5 did not survive the duplicate"
qemu_pid=$(axl list | awk '$1=="g5"{print $7}')
axl destroy g5 >&2
assert_gone "$qemu_pid"

# QEMU missing at host up.
axl host down >/dev/null
T_UP=0
expect_fail "QEMU not found" env PATH=/nonexistent "$AXL" --state-dir "$T_STATE" host up --config "$T_DIR/host.toml"
log "PASS"
