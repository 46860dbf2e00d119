#!/usr/bin/env bash
# What a local user (or a confused root process) can reach on a host, tried
# as an attacker would (issue: least privilege):
# - a state dir someone else prepared is refused: owned by another user,
#   writable by others, a symlink, or with a symlink where host up writes
#   its copy of the config (the target stays untouched); nothing is started;
# - on a running host the state dir and every domain dir are 0700, the
#   control, driver and vhost-user sockets and the guest's files 0600,
#   whatever the umask;
# - QEMU runs as a uid of its own, with no capability, its seccomp filter,
#   no_new_privs and namespaces of its own;
# - an unprivileged uid (setpriv) cannot use `axl`, and even with the
#   sockets' modes opened up the daemons refuse it by SO_PEERCRED;
# - a second hello under a live driver's name is refused: the guest's NIC
#   stays on its driver and the guest stays reachable.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
command -v setpriv >/dev/null || { echo "SKIP: setpriv (util-linux) not installed"; exit 77; }
make_ns
FAKE="$(dirname "$0")/fake_driver.py"

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "net0"
kind = "net"
tap = "axlt14"
TOML
up_refused() {  # up_refused DIR WHAT: host up with state dir DIR fails naming WHAT
  local out
  if out=$(umask 000 && ip netns exec "$T_NS" "$AXL" --state-dir "$1" host up --config "$T_DIR/host.toml" 2>&1); then
    ip netns exec "$T_NS" "$AXL" --state-dir "$1" host down >/dev/null 2>&1
    die "host up accepted state dir $1"
  fi
  grep -q -- "$2" <<<"$out" || die "host up on $1 did not say '$2': $out"
  [ "$(wc -l <<<"$out")" = 1 ] || die "host up on $1: more than one line: $out"
  [ ! -e "$1/hv.pid" ] && [ ! -e "$1/supervisor.pid" ] || die "host up on $1 left daemons' pid files"
  log "state dir refused: $out"
}
mkdir "$T_DIR/other"
chown 65534:65534 "$T_DIR/other"
up_refused "$T_DIR/other" "owned by uid 65534"
mkdir -m 0777 "$T_DIR/open"
up_refused "$T_DIR/open" "writable by others"
mkdir -m 0700 "$T_DIR/real"
ln -s "$T_DIR/real" "$T_DIR/link"
up_refused "$T_DIR/link" "is a symlink"
mkdir -m 0700 "$T_DIR/planted"
echo "precious" >"$T_DIR/target"
ln -s "$T_DIR/target" "$T_DIR/planted/host.toml"
up_refused "$T_DIR/planted" "cannot write $T_DIR/planted/host.toml"
[ "$(cat "$T_DIR/target")" = precious ] || die "host up wrote through a planted symlink"

# A running host, started with a careless umask.
cat >"$T_DIR/g.sh" <<'SH'
ip addr add 10.214.14.2/24 dev eth0
ip link set eth0 up
echo UP
sleep 600
SH
printf 'name = "la"\nmemory_mib = 256\n[[nic]]\ndriver = "net0"\nmac = "52:54:00:12:14:0a"\n[guest]\nscript = "g.sh"\n' >"$T_DIR/g.toml"
(umask 000 && host_up "$T_DIR/host.toml")
T_UP=1
in_ns ip addr add 10.214.14.1/24 dev axlt14
(umask 000 && axl create "$T_DIR/g.toml" >&2)
for _ in $(seq 600); do console_has la UP && break; sleep 0.1; done
for _ in $(seq 100); do in_ns ping -c 1 -W 1 10.214.14.2 >/dev/null 2>&1 && break; sleep 0.2; done
mode() { stat -c %a "$1"; }
[ "$(mode "$T_STATE")" = 700 ] || die "state dir is $(mode "$T_STATE")"
[ "$(mode "$T_STATE/dom/la")" = 700 ] || die "domain dir is $(mode "$T_STATE/dom/la")"
for f in hv.sock supervisor.sock drivers.sock dom/la/dev0.sock dom/la/console.log dom/la/qemu.log \
  dom/la/console.sock dom/la/qmp.sock dom/la/agent.sock hv.log supervisor.log; do
  [ "$(mode "$T_STATE/$f")" = 600 ] || die "$f is $(mode "$T_STATE/$f"), not 600"
done
[ "$(mode "$T_STATE/dom/la/initrd.img")" = 400 ] || die "the domain's initrd is $(mode "$T_STATE/dom/la/initrd.img")"
log "modes: state dir and domain dir 0700, sockets and guest files 0600"

# QEMU, as /proc shows it while the guest runs: a uid and gid of its own
# (0x0a000000 + the domain's id) owning only what it needs (the vhost-user
# socket it connects to, its console log, its initrd), no capability at all
# (none to regain), its own seccomp filter, no_new_privs, and namespaces of
# its own for network, IPC, UTS, mounts and pids (where it is pid 2, under
# the namespace's holder, and sees no host process), and a file size limit.
qemu=$(axl list | awk '$1=="la"{print $7}')
hv=$(cat "$T_STATE/hv.pid")
status() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }
want=$((0x0a000000 + $(axl list | awk '$1=="la"{print $2}')))
for k in Uid Gid; do
  [ "$(awk -v k="$k:" '$1==k{print $2, $3, $4, $5}' "/proc/$qemu/status")" = "$want $want $want $want" ] ||
    die "QEMU's $k is $(grep "^$k:" "/proc/$qemu/status"), not $want"
done
for f in dev0.sock console.log initrd.img; do
  [ "$(stat -c %u "$T_STATE/dom/la/$f")" = "$want" ] || die "$f is not owned by QEMU's uid $want"
done
[ "$(stat -c %u "$T_STATE/dom/la")" = 0 ] || die "the domain dir is not root's"
for k in CapInh CapPrm CapEff CapBnd CapAmb; do
  [ "$(status "$qemu" $k)" = 0000000000000000 ] || die "QEMU's $k is $(status "$qemu" $k)"
done
[ "$(status "$qemu" Seccomp)" = 2 ] || die "QEMU runs without its seccomp filter"
[ "$(status "$qemu" NoNewPrivs)" = 1 ] || die "QEMU may gain privileges"
for ns in net ipc uts mnt pid; do
  [ "$(readlink "/proc/$qemu/ns/$ns")" != "$(readlink "/proc/$hv/ns/$ns")" ] ||
    die "QEMU shares the hypervisor's $ns namespace"
done
nspid=$(awk '$1=="NSpid:"{print $2, $3}' "/proc/$qemu/status")
[ "$nspid" = "$qemu 2" ] || die "QEMU's NSpid is '$nspid', not '$qemu 2'"
# What QEMU's /proc shows: its namespace's two processes, nothing of the host's.
seen=$(nsenter -t "$qemu" -m ls /proc | grep -c '^[0-9]')
[ "$seen" -le 3 ] || die "QEMU's /proc lists $seen processes (the host's /proc?)"
fsize=$(awk '/^Max file size/ {print $4}' "/proc/$qemu/limits")
[ "$fsize" = $((64 << 20)) ] || die "QEMU's file size limit is '$fsize', not 64 MiB"
log "QEMU (pid $qemu): uid $want, no capabilities, seccomp, no_new_privs, own net/ipc/uts/mnt/pid namespaces, /proc shows $seen processes, files up to 64 MiB"

nobody() { ip netns exec "$T_NS" setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if nobody "$AXL" --state-dir "$T_STATE" list >/dev/null 2>&1; then die "uid 65534 listed the domains"; fi
# Past the modes, the daemons still refuse it (SO_PEERCRED).
chmod 0711 "$T_DIR" "$T_STATE"
chmod 0666 "$T_STATE/hv.sock" "$T_STATE/supervisor.sock"
out=$(nobody "$AXL" --state-dir "$T_STATE" list 2>&1) && die "uid 65534 listed the domains: $out"
out=$(nobody "$AXL" --state-dir "$T_STATE" drivers 2>&1) && die "uid 65534 listed the drivers: $out"
chmod 0700 "$T_DIR" "$T_STATE"
chmod 0600 "$T_STATE/hv.sock" "$T_STATE/supervisor.sock"
grep -q "control connection from uid 65534 .* refused" "$T_STATE/hv.log" ||
  die "the hypervisor did not refuse uid 65534"
grep -q "control connection from uid 65534 .* refused" "$T_STATE/supervisor.log" ||
  die "the supervisor did not refuse uid 65534"
log "uid 65534 refused by modes and by SO_PEERCRED"

# An impostor hello under net0's name, as root even.
net0=$(axl drivers | awk '$1=="net0"{print $3}')
in_ns python3 "$FAKE" "$T_STATE/drivers.sock" impostor net0 net || die "the impostor's hello was kept"
grep -q "hello as 'net0' refused: pid $net0 holds that name" "$T_STATE/hv.log" ||
  die "the hypervisor's log does not name the refused hello"
[ "$(axl drivers | awk '$1=="net0"{print $3}')" = "$net0" ] || die "net0 changed: $(axl drivers)"
in_ns ping -c 3 -i 0.2 -W 2 10.214.14.2 >/dev/null || die "the guest is unreachable after the impostor"
log "impostor hello refused; the guest is served on"
log "PASS"
