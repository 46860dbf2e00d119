# Shared helpers for Axolotl's integration tests (bash).  Every test runs in a
# network namespace it creates, with a state dir of its own, and cleans up
# what it started even when it fails: the host stack (by `axl host down`,
# which stops daemons by their recorded PIDs), helper processes by PID, the
# namespace and the temp dir.
set -euo pipefail

: "${AXL_BIN:?AXL_BIN must point at the bin dir of a build}"
AXL="$AXL_BIN/axl"
TOOL="$AXL_BIN/axl-tool"

T_NAME=$(basename "$0" .sh)
T_DIR=$(mktemp -d "/tmp/axl-${T_NAME}.XXXXXX")
T_NS="axl-${T_NAME:0:12}-$$"
T_STATE="$T_DIR/state"
T_PIDS=()
T_UP=0

log() { printf '[%s] %s\n' "$T_NAME" "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}

in_ns() { ip netns exec "$T_NS" "$@"; }
axl() { in_ns "$AXL" --state-dir "$T_STATE" "$@"; }

t_cleanup() {
  local rc=$?
  set +e
  for p in "${T_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if ((T_UP)); then
    if ((rc != 0)); then
      for f in "$T_STATE"/*.log "$T_STATE"/dom/*/console.log "$T_STATE"/dom/*/qemu.log; do
        # Allowed requests' audit lines (one per console read) would crowd
        # out what tells why.
        [ -f "$f" ] && { echo "----- $f (tail, allowed requests left out)"; grep -av 'verdict=allow' "$f" | tail -n 60; } >&2
      done
    fi
    "$AXL" --state-dir "$T_STATE" host down >/dev/null 2>&1
  fi
  ip netns del "$T_NS" 2>/dev/null
  rm -rf "$T_DIR"
  exit $rc
}
trap t_cleanup EXIT
trap 'exit 130' INT TERM

require_root_and_tools() {
  if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (network namespaces, TAP)"; exit 77; fi
  for t in ip qemu-system-x86_64 sha256sum; do
    command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
  done
  [ -r "${AXL_GUEST_DIR:-$AXL_BIN/../guest}/vmlinuz" ] ||
    { echo "SKIP: guest image not built (scripts/setup)"; exit 77; }
}

make_ns() {
  ip netns add "$T_NS"
  in_ns ip link set lo up
}

host_up() {  # host_up CONFIG
  axl host up --config "$1" >&2
  T_UP=1
}

# Records a background PID for cleanup.  Start such a process with `ip netns
# exec "$T_NS" CMD &`, not through in_ns: a backgrounded function is a
# subshell, and killing it would leave CMD running (holding ctest's pipe).
track() { T_PIDS+=("$1"); }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# driver_col NAME COLUMN: a column of NAME's row in `axl drivers` (3 pid,
# 4 state, 5 restarts, 8 standby); driver_pid NAME: its pid while running.
driver_col() { axl drivers | awk -v d="$1" -v c="$2" '$1==d{print $c}'; }
driver_pid() { axl drivers | awk -v d="$1" '$1==d && $4=="running"{print $3}'; }

# console_value NAME KEY: the hex value printed as "KEY <hex>" on NAME's console.
console_value() {
  axl console "$1" --log | tr -d '\r' | sed -n "s/^$2 \([0-9a-f]\{64\}\).*/\1/p" | tail -n 1
}

# Asserts that none of the given PIDs is alive any more.  A parked spare's
# column of `axl drivers` ("parked:PID") counts as its PID; "-" (none) is
# skipped.
assert_gone() {
  local p
  for p in "$@"; do
    p=${p#parked:}
    [[ $p =~ ^[0-9]+$ ]] && ((p > 0)) || continue
    # A zombie has exited; only its parent (whoever adopted the daemon) can reap it.
    if kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
      local cmd
      cmd=$(tr '\0' ' ' <"/proc/$p/cmdline")
      die "process $p ($cmd) still running"
    fi
  done
}

# console_has NAME REGEX: whether NAME's console has shown a line matching
# REGEX.  (The log is read whole first: `... | grep -q` under pipefail fails
# when grep exits early and the writer gets SIGPIPE on a long log.)
console_has() {
  local text
  text=$(axl console "$1" --log | tr -d '\r')
  grep -q -- "$2" <<<"$text"
}

# start_bus: a private dbus-daemon of the test's own (stopped by PID at exit);
# sets BUS to its address.  bus ARGS... runs busctl on it.
start_bus() {
  for t in dbus-daemon busctl; do
    command -v "$t" >/dev/null || { echo "SKIP: $t not installed (apt-get install dbus systemd)"; exit 77; }
  done
  cat >"$T_DIR/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$T_DIR/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
XML
  dbus-daemon --config-file="$T_DIR/bus.conf" --nofork --nopidfile >"$T_DIR/bus.log" 2>&1 &
  track $!
  BUS="unix:path=$T_DIR/bus"
  for _ in $(seq 100); do [ -S "$T_DIR/bus" ] && break; sleep 0.05; done
  [ -S "$T_DIR/bus" ] || die "dbus-daemon did not start: $(cat "$T_DIR/bus.log")"
}
bus() { busctl --address="$BUS" --timeout=30 "$@"; }
manager() { bus "$1" org.axolotl /org/axolotl/Manager1 org.axolotl.Manager1 "${@:2}"; }
# policy_count_at_least PROPERTY N WHAT: Manager1's PolicyAllowed or
# PolicyDenied reaches N (the hypervisor reports its counts to the supervisor
# as an event: given 5 s), else the test fails naming WHAT.
policy_count_at_least() {
  local n
  for _ in $(seq 100); do
    n=$(manager get-property "$1" | awk '{print $2}')
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.05
  done
  die "$1 is '$n' after $3"
}

# --- A workload that checks itself ------------------------------------------
# The guest (its NIC at NET.2, the host's TAP at NET.1) streams TCP to the
# host (port 5007, generator seed SEED) and loops 2 MiB disk write/read-back
# rounds on /dev/vda, each verified in the guest, until the host connects to
# its port 5009.  The host receives into $T_DIR/received.
# workload_script FILE NET SEED: writes the guest script.
workload_script() {
  cat >"$1" <<SH
set -e
ip addr add $2.2/24 dev eth0
ip link set eth0 up
# The host ends the workload by connecting here.
axl-tool recv $2.2 5009 --timeout 900 >/dev/null &
stopper=\$!
axl-tool gen $3 64G | axl-tool send $2.1 5007 --retry 30 &
sender=\$!
SH
  cat >>"$1" <<'SH'
round=0
while kill -0 $stopper 2>/dev/null; do
  round=$((round + 1))
  seed=$((round % 7 + 1))
  axl-tool gen $seed 2M | dd of=/dev/vda bs=128K seek=$(( (round % 16) * 16 )) oflag=direct 2>/dev/null
  got=$(dd if=/dev/vda bs=128K skip=$(( (round % 16) * 16 )) count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  want=$(axl-tool gen $seed 2M | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "ROUND-MISMATCH $round"; exit 1; }
  echo ROUND $round
done
kill $sender 2>/dev/null || true
wait $sender 2>/dev/null || true
echo IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)|eth0.*(timeout|reset)')
SH
}
# workload_receive NET: the host's receiver, in the background (WORKLOAD_RX is its pid).
workload_receive() {
  ip netns exec "$T_NS" "$TOOL" recv "$1.1" 5007 --timeout 900 >"$T_DIR/received" &
  WORKLOAD_RX=$!
  track $WORKLOAD_RX
}
# workload_rounds NAME: the disk rounds domain NAME has verified so far.
# workload_host TAP [BLK_TOML [NET_TOML]]: $T_DIR/host.toml with driver blk0
# and driver net0 on TAP, each with its extra lines, and a 64 MiB disk.img.
workload_host() {
  cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
${2:-}
[[driver]]
name = "net0"
kind = "net"
tap = "$1"
${3:-}
TOML
  truncate -s 64M "$T_DIR/disk.img"
}
# workload_guest NAME MAC [TOML]: $T_DIR/guest.toml for a workload guest
# (workload_script's guest.sh): 512 MiB, disk blk0 on disk.img, NIC net0 with
# MAC; TOML (top-level keys) is added as given.
workload_guest() {
  cat >"$T_DIR/guest.toml" <<TOML
name = "$1"
memory_mib = 512
${3:-}
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "$2"
[guest]
script = "guest.sh"
TOML
}
# workload_start NAME NET TAP: gives the host's side of TAP NET.1, starts the
# receiver, creates the guest and waits for its first disk round.
workload_start() {
  in_ns ip addr add "$2.1/24" dev "$3"
  workload_receive "$2"
  axl create "$T_DIR/guest.toml" >&2
  for _ in $(seq 600); do [ "$(workload_rounds "$1")" -ge 1 ] && break; sleep 0.1; done
  [ "$(workload_rounds "$1")" -ge 1 ] || die "guest never completed a disk round"
}
# last_failure DRIVER: its last failure's cause, as `axl drivers` shows it.
last_failure() { axl drivers | awk -v n="$1" '$1==n{for (i=9; i<=NF; ++i) printf "%s%s", $i, (i<NF ? " " : ""); print ""}'; }
workload_rounds() { axl console "$1" --log | tr -d '\r' | grep -c '^ROUND ' || true; }
workload_bytes() { stat -c %s "$T_DIR/received"; }
# workload_finish NAME NET SEED: stops the workload, waits for the guest, and
# checks every streamed byte and that the guest's kernel logged no error.
workload_finish() {
  in_ns "$TOOL" send "$2.2" 5009 </dev/null || die "cannot tell the guest to stop"
  axl wait "$1" --timeout 600 >&2 || die "guest script failed"
  # The guest ended its sender mid-stream and powered off: the receiver sees
  # the end, unless the guest's FIN was still in flight when it went (then it
  # would wait out its deadline): what arrived is checked either way.
  for _ in $(seq 100); do kill -0 "$WORKLOAD_RX" 2>/dev/null || break; sleep 0.1; done
  kill "$WORKLOAD_RX" 2>/dev/null || true
  wait "$WORKLOAD_RX" || true
  T_PIDS=("${T_PIDS[@]/$WORKLOAD_RX}")
  local size errors
  size=$(workload_bytes)
  ((size > 0)) || die "nothing streamed"
  [ "$(sha_of "$T_DIR/received")" = "$("$TOOL" gen "$3" 64G | head -c "$size" | sha256sum | cut -d' ' -f1)" ] ||
    die "stream corrupted (first $size bytes differ)"
  errors=$(axl console "$1" --log | tr -d '\r' | sed -n 's/^IO-ERRORS \([0-9]*\).*/\1/p')
  [ "$errors" = 0 ] || die "guest kernel logged $errors I/O or network errors"
  log "$((size / 1048576)) MiB streamed and $(workload_rounds "$1") disk rounds verified"
}

# --- vTPM tests -------------------------------------------------------------

# vtpm_host_toml FILE: a host with one blk driver domain, which a guest that
# only uses its vTPM still needs.
# vtpm_guest_toml NAME [TOML]: $T_DIR/NAME.toml, a 256 MiB guest running
# guest.sh with a vTPM; TOML (top-level keys) is added as given.
vtpm_guest_toml() {
  cat >"$T_DIR/$1.toml" <<TOML
name = "$1"
memory_mib = 256
${2:-}
[guest]
script = "guest.sh"
[vtpm]
enabled = true
TOML
}
# vtpm_field DOMAIN COLUMN: a column of its row in `axl vtpms` (2 pid,
# 3 state, 4 restarts).
vtpm_field() { axl vtpms | awk -v n="$1" -v f="$2" '$1==n{print $f}'; }
vtpm_host_toml() {
  cat >"$1" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
TOML
}

# pcr_extend OLD DIGEST: SHA256(OLD || DIGEST), both hex.
pcr_extend() { printf '%s%s' "$1" "$2" | xxd -r -p | sha256sum | cut -d' ' -f1; }

# expected_pcr9 NAME: PCR 9 as the host computes it for domain NAME's boot
# from the files themselves: the kernel, the base initrd, the overlay with
# the guest script that the hypervisor appended for this domain.
expected_pcr9() {
  local guest="${AXL_GUEST_DIR:-$AXL_BIN/../guest}" base_size overlay_sha p
  base_size=$(stat -c %s "$guest/initrd.img")
  overlay_sha=$(tail -c +$((base_size + 1)) "$T_STATE/dom/$1/initrd.img" | sha256sum | cut -d' ' -f1)
  p=$(pcr_extend "$(printf '%064d' 0)" "$(sha_of "$guest/vmlinuz")")
  p=$(pcr_extend "$p" "$(sha_of "$guest/initrd.img")")
  pcr_extend "$p" "$overlay_sha"
}

# --- Fault campaigns (axl campaign) -----------------------------------------

# campaign_host TAP: $T_DIR/host.toml for campaigns: blk0 and net0 (on TAP)
# with fault injection, the limits and the I/O timeout their faults are
# detected by, a restart budget for many faults; vTPM and daemon faults on;
# and a 64 MiB $T_DIR/disk.img.
campaign_host() {
  local drv="fault_injection = true
restart_max = 1000
restart_window_s = 1
io_timeout_ms = 1000
memory_max_mib = 64
pids_max = 64"
  workload_host "$1" "$drv" "$drv"
  sed -i '1i vtpm_fault_injection = true\ndaemon_fault_injection = true' "$T_DIR/host.toml"
}
# campaign_file FILE NET INJECTIONS SEED [FAULTS]: a campaign of INJECTIONS
# against a workload guest at NET.2 (the host at NET.1) with a vTPM; FAULTS
# is its [[fault]] tables.
campaign_file() {
  cat >"$1" <<TOML
seed = $4
injections = $3
report = "report"
timeout_ms = 30000
settle_ms = 200
quiet_ms = 1000
[workload]
name = "camp"
disk = "blk0"
image = "$T_DIR/disk.img"
nic = "net0"
host = "$2.1"
guest = "$2.2"
vtpm = true
${5:-}
TOML
}
# campaign_faults KIND...: [[fault]] tables for each "target:kind".
campaign_faults() {
  local f
  for f in "$@"; do printf '[[fault]]\ntarget = "%s"\nkind = "%s"\n' "${f%%:*}" "${f#*:}"; done
}
