#!/usr/bin/env bash
# A driver domain is untrusted: a connection that sends a malformed hello is
# closed with one log line naming why, and a driver that answers attach with
# garbage fails that attach and loses its connection; the hypervisor keeps
# running, answers `axl list`, and a guest on a real driver is served on.
# The bad drivers are tests/integration/fake_driver.py on the driver socket.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
make_ns
FAKE="$(dirname "$0")/fake_driver.py"

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
"$TOOL" gen 21 8M >"$T_DIR/disk.img"
disk_sha=$(sha_of "$T_DIR/disk.img")
# The guest reads its disk twice: once while the bad drivers below are at
# work, once after them.
cat >"$T_DIR/guest.sh" <<'SH'
set -e
echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
sleep 5
echo DISK-SHA256-AGAIN $(sha256sum /dev/vda | cut -d' ' -f1)
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "md1"
memory_mib = 256
vcpus = 1
[[disk]]
driver = "blk0"
image = "disk.img"
[guest]
script = "guest.sh"
TOML

host_up "$T_DIR/host.toml"
hv_pid=$(cat "$T_STATE/hv.pid")
sock="$T_STATE/drivers.sock"
axl create "$T_DIR/guest.toml" >&2

# Each bad first message: the hypervisor closes that connection (the fake
# exits 0 only then) and logs why.
declare -A reason=(
  [not-aligned]="message not word aligned"
  [bad-pointer]="malformed hello: undecodable hello"
  [bad-name]="is not a valid driver name"
  [zero-pid]="hello pid 0 is out of range"
  [bad-kind]="hello kind 9 is neither net nor blk"
  [not-hello]="first message is attached, not hello"
  [garbage]=""
)
for c in not-aligned bad-pointer bad-name zero-pid bad-kind not-hello garbage; do
  timeout 20 python3 "$FAKE" "$sock" hello "$c" || die "hello case $c: connection not closed"
  kill -0 "$hv_pid" 2>/dev/null || die "the hypervisor died on hello case $c"
  if [ -n "${reason[$c]}" ]; then
    grep -qF -- "${reason[$c]}" "$T_STATE/hv.log" || die "hv.log does not say '${reason[$c]}'"
  fi
  log "ok: bad hello '$c' refused"
done

# A fake driver says a good hello, then answers attach with garbage: the
# attach (here: `axl create` of a guest on it) fails, the connection is
# dropped, and the hypervisor serves on.
fake_attach() {  # fake_attach NAME CASE
  local name=$1 c=$2
  coproc FAKE_ATTACH { timeout 60 python3 "$FAKE" "$sock" attach "$name" "$c"; }
  local fpid=$FAKE_ATTACH_PID
  track "$fpid"
  local line
  read -r -t 20 line <&"${FAKE_ATTACH[0]}" || die "fake driver $name did not start"
  [ "$line" = READY ] || die "fake driver $name said '$line'"
  # The hypervisor knows the driver once it has read the hello.
  for _ in $(seq 100); do grep -qF "driver '$name' (blk) connected" "$T_STATE/hv.log" && break
    sleep 0.1; done
  printf 'name = "%s"\nmemory_mib = 256\n[[disk]]\ndriver = "%s"\nimage = "disk2.img"\n' \
    "g-$name" "$name" >"$T_DIR/g-$name.toml"
  local err rc=0
  err=$(axl create "$T_DIR/g-$name.toml" 2>&1 >/dev/null) || rc=$?
  ((rc != 0)) || die "a guest was created on fake driver $name ($c)"
  [[ "$err" == *"answered attach with a malformed message"* ||
     "$err" == *"did not answer attach"* ]] || die "create on $name said: $err"
  wait "$fpid" || die "fake driver $name ($c): its connection was not dropped"
  T_PIDS=("${T_PIDS[@]/$fpid}")
  kill -0 "$hv_pid" 2>/dev/null || die "the hypervisor died on attach case $c"
  axl list >/dev/null || die "axl list failed after attach case $c"
  if axl list | grep -qw "g-$name"; then die "a half-created guest g-$name is listed"; fi
  log "ok: garbage attach answer '$c' ($err)"
}
"$TOOL" gen 22 1M >"$T_DIR/disk2.img"
fake_attach fake0 garbage-words
fake_attach fake1 wrong-id
fake_attach fake2 not-aligned
grep -qF "dropping its connection" "$T_STATE/hv.log" ||
  die "hv.log does not say a driver was dropped"

axl list >&2 || die "axl list failed"
axl drivers >&2
axl drivers | grep -qw blk0 || die "the real driver blk0 is gone"
axl wait md1 --timeout 300 >&2 || die "guest script failed (status $?)"
[ "$(console_value md1 DISK-SHA256)" = "$disk_sha" ] || die "guest read a different disk"
[ "$(console_value md1 DISK-SHA256-AGAIN)" = "$disk_sha" ] ||
  die "guest read a different disk later"
kill -0 "$hv_pid" 2>/dev/null || die "the hypervisor is gone"
log "PASS"
