#!/usr/bin/env bash
# cgroup2_vm_test.sh TEST_BINARY VMLINUZ
#
# The build and CI machines have their memory, pids and cpu controllers on
# cgroup v1, so cgroup_test there only exercises the v1 path.  Users' hosts
# are pure cgroup2: this boots the guest kernel under QEMU (TCG) with a
# busybox initramfs that mounts cgroup2 alone and runs the static cgroup test
# three ways: from the root cgroup, from a non-root cgroup that holds
# processes (so enabling controllers there fails with EBUSY and the root is
# used), and from a leaf below a parent with controllers enabled.
# Exit 77 (skipped) when QEMU, a static busybox or the kernel is missing.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 TEST_BINARY VMLINUZ" >&2; exit 2; }
test_bin=$1
kernel=$2
skip() { echo "skipped: $*"; exit 77; }
qemu=$(command -v qemu-system-x86_64 || true)
[[ -n $qemu ]] || skip "qemu-system-x86_64 not found"
[[ -r $kernel ]] || skip "no guest kernel at $kernel (scripts/build-guest-image)"
busybox=$(command -v busybox || true)
[[ -n $busybox ]] || skip "busybox not found"
if ldd "$busybox" >/dev/null 2>&1; then skip "$busybox is not static (busybox-static)"; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev}
cp "$busybox" "$root/bin/busybox"
cp "$test_bin" "$root/bin/cgroup_test"
for a in sh mount mkdir echo cat ls poweroff; do ln -s busybox "$root/bin/$a"; done
cat >"$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
run() {
  echo
  echo "== $1: $(cat /proc/self/cgroup)"
  /bin/cgroup_test --gtest_color=no 2>&1
  echo "CGROUP_TEST_RC=$?"
}
run "root cgroup"
mkdir /sys/fs/cgroup/svc
echo $$ >/sys/fs/cgroup/svc/cgroup.procs
run "occupied non-root cgroup"
mkdir -p /sys/fs/cgroup/svc2/sup
echo "+memory +pids +cpu" >/sys/fs/cgroup/svc2/cgroup.subtree_control
echo $$ >/sys/fs/cgroup/svc2/sup/cgroup.procs
run "leaf under a parent with controllers"
echo "LEFTOVERS=$(find /sys/fs/cgroup -name 'axolotl-*')"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

timeout 300 "$qemu" -accel tcg -m 512 -nographic -no-reboot -kernel "$kernel" \
  -initrd "$work/initrd.gz" -append 'console=ttyS0 panic=-1 quiet' </dev/null >"$work/console.log" 2>&1 || true
log=$work/clean.log
tr -d '\r' <"$work/console.log" >"$log"
sed -n '/^== /,$p' "$log"

runs=$(grep -c '^CGROUP_TEST_RC=' "$log" || true)
passed=$(grep -c '^CGROUP_TEST_RC=0' "$log" || true)
v2=$(grep -c '^using cgroup2 at' "$log" || true)
if [[ $runs -ne 3 || $passed -ne 3 || $v2 -eq 0 ]] || ! grep -q '^LEFTOVERS=$' "$log"; then
  echo "FAIL: runs=$runs passed=$passed cgroup2-runs=$v2"
  exit 1
fi
echo "PASS: cgroup2 path, 3 runs"
