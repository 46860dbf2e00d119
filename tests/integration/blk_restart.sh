#!/usr/bin/env bash
# A 2-vCPU guest with a 2-queue disk (queues = 2) writes 2 x 64 MiB of known
# patterns to /dev/vda with O_DIRECT, one writer and one reader per vCPU (so
# both request queues carry I/O at once), and reads them back while the blk
# driver domain gets SIGKILL 3 times and SIGSTOP (a hang) twice.  Every byte
# verifies in the guest and on the host,
# the guest sees no I/O error, and a stopped driver is replaced within
# heartbeat_misses x heartbeat_ms plus a margin.  Without a standby, each
# restart starts the driver's parked spare (spawned and confined ahead of need),
# not a new process; a spare that dies while parked is replaced.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
heartbeat_ms = 100
heartbeat_misses = 5
restart_max = 10
TOML
truncate -s 128M "$T_DIR/disk.img"
cat >"$T_DIR/guest.sh" <<'SH'
set -e
echo CPUS $(nproc) QUEUES $(ls /sys/block/vda/mq | wc -l)
# Round r, half h: 32 MiB of pattern 4rh at 256K-block (r-1)*256 + h*128,
# written and read back from vCPU h (its own request queue).
for round in 1 2; do
  for h in 0 1; do
    taskset -c $h sh -c "axl-tool gen 4$round$h 32M | dd of=/dev/vda bs=256K seek=$(( (round - 1) * 256 + h * 128 )) oflag=direct 2>/dev/null" &
  done
  wait
  for h in 0 1; do
    taskset -c $h sh -c "echo READ$round$h-SHA256 \$(dd if=/dev/vda bs=256K skip=$(( (round - 1) * 256 + h * 128 )) count=128 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1) > /tmp/r$h" &
  done
  wait
  cat /tmp/r0 /tmp/r1
done
echo IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|virtio.*(error|reset)')
SH
cat >"$T_DIR/guest.toml" <<TOML
name = "br"
memory_mib = 256
vcpus = 2
[[disk]]
driver = "blk0"
image = "disk.img"
queues = 2
[guest]
script = "guest.sh"
TOML
declare -A sha
for k in 410 411 420 421; do sha[$k]=$("$TOOL" gen $k 32M | sha256sum | cut -d' ' -f1); done

host_up "$T_DIR/host.toml"
axl create "$T_DIR/guest.toml" >&2
for _ in $(seq 200); do console_has br AXL-GUEST-READY && break; sleep 0.05; done

spares() { grep -c 'driver blk0 spare started, pid [0-9]* (parked)' "$T_STATE/supervisor.log" || true; }
from_spare() { grep -c 'driver blk0 (blk) started, pid [0-9]* (its parked spare)' "$T_STATE/supervisor.log" || true; }
last_spare() { sed -n 's/.*driver blk0 spare started, pid \([0-9]*\) (parked).*/\1/p' "$T_STATE/supervisor.log" | tail -n 1; }
wait_spare() {  # wait_spare N: until N spares were made
  for _ in $(seq 200); do (($(spares) >= $1)) && return; sleep 0.05; done
  die "no parked spare for blk0 ($(spares) made, $1 expected)"
}
n=0
for sig in KILL STOP KILL STOP KILL; do
  sleep "0.$((RANDOM % 4 + 2))"
  wait_spare $((++n))
  [ "$(axl list | awk '$1=="br"{print $5}')" = running ] || die "guest finished before all faults were injected"
  pid=$(driver_pid blk0)
  start=$(date +%s%N)
  axl driver-kill blk0 --signal "$sig" >&2
  for _ in $(seq 400); do
    np=$(driver_pid blk0)
    [ -n "$np" ] && [ "$np" != "$pid" ] && break
    sleep 0.01
  done
  [ -n "$np" ] && [ "$np" != "$pid" ] || die "blk0 was not replaced after SIG$sig"
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  log "SIG$sig: pid $pid replaced by $np after $ms ms"
  # A hang is found after heartbeat_misses x heartbeat_ms = 500 ms; allow a generous margin.
  if [ "$sig" = STOP ] && ((ms > 3000)); then die "stopped driver replaced only after $ms ms"; fi
done
[ "$(from_spare)" = 5 ] || die "$(from_spare) of 5 restarts started the parked spare"
# The parked spare is confined like an active driver, and one that dies is replaced.
wait_spare $((++n))
spare=$(last_spare)
[ "$(axl drivers | awk '$1=="blk0"{print $8}')" = "parked:$spare" ] ||
  die "axl drivers does not show the parked spare $spare: $(axl drivers)"
grep -q '^Seccomp:[[:space:]]*2' "/proc/$spare/status" || die "parked spare $spare is not under seccomp"
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$spare/status" || die "parked spare $spare lacks no_new_privs"
kill -KILL "$spare"
wait_spare $((++n))
grep -q "parked spare pid $spare exited" "$T_STATE/supervisor.log" || die "the spare's death went unnoticed"
[ "$(axl drivers | awk '$1=="blk0"{print $5}')" = 5 ] || die "a spare's death counted as a restart"
axl wait br --timeout 300 >&2 || die "guest script failed"
axl drivers --stats >&2

shape=$(axl console br --log | tr -d '\r' | grep -m1 '^CPUS ')
[ "$shape" = "CPUS 2 QUEUES 2" ] || die "the guest did not get 2 vCPUs and 2 request queues: '$shape'"
for k in 410 411 420 421; do
  [ "$(console_value br "READ${k:1}-SHA256")" = "${sha[$k]}" ] || die "guest read back part $k wrong"
  skip=$(( (${k:1:1} - 1) * 64 + ${k:2:1} * 32 ))
  [ "$(dd if="$T_DIR/disk.img" bs=1M skip=$skip count=32 2>/dev/null | sha256sum | cut -d' ' -f1)" = "${sha[$k]}" ] ||
    die "host image part $k wrong"
done
errors=$(axl console br --log | tr -d '\r' | sed -n 's/^IO-ERRORS \([0-9]*\).*/\1/p')
[ "$errors" = 0 ] || die "guest kernel logged $errors I/O errors"
[ "$(axl drivers | awk '$1=="blk0"{print $5}')" = 5 ] || die "expected 5 restarts"
[ "$(axl drivers --stats | grep -c 'hang: ')" = 2 ] || die "expected 2 hangs in the outage records"
log "PASS"
