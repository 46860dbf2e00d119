#!/usr/bin/env bash
# A driver slow to answer attach delays only the domain it is attaching:
# with blk1 answering 3 s late (fault slow-attach), a guest on it is listed as
# attaching while `axl list` and `axl drivers` answer and a guest on blk0 is
# created meanwhile; then it runs and reads its disk.  A driver that never
# answers (mute-attach) fails that create after 5 s with a one-line reason,
# is replaced by the supervisor ("no answer to attach"), the hypervisor stays
# up, the running guest on that driver reads on, and a retried create works.
. "$(dirname "$0")/lib.sh"
require_root_and_tools
make_ns

cat >"$T_DIR/host.toml" <<TOML
[[driver]]
name = "blk0"
kind = "blk"
[[driver]]
name = "blk1"
kind = "blk"
fault_injection = true
TOML
"$TOOL" gen 31 4M >"$T_DIR/d1.img"
"$TOOL" gen 32 4M >"$T_DIR/d0.img"
cp "$T_DIR/d1.img" "$T_DIR/d3.img"
cat >"$T_DIR/twice.sh" <<'SH'
i=0
while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo FIRST-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
sleep 14
echo 3 >/proc/sys/vm/drop_caches
echo SECOND-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
SH
cat >"$T_DIR/once.sh" <<'SH'
i=0
while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo FIRST-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)
SH
guest() {  # guest NAME DRIVER IMAGE SCRIPT
  printf 'name = "%s"\nmemory_mib = 256\n[[disk]]\ndriver = "%s"\nimage = "%s"\n[guest]\nscript = "%s"\n' \
    "$1" "$2" "$3" "$4" >"$T_DIR/$1.toml"
}
guest g1 blk1 d1.img twice.sh
guest g0 blk0 d0.img once.sh
guest g3 blk1 d3.img once.sh

host_up "$T_DIR/host.toml"
state_of() { axl list | awk -v d="$1" '$1==d{print $5}'; }

axl inject blk1 slow-attach >&2
axl create "$T_DIR/g1.toml" >"$T_DIR/g1.out" 2>&1 &
g1_create=$!
track $g1_create
for _ in $(seq 100); do [ "$(state_of g1)" = attaching ] && break; sleep 0.02; done
[ "$(state_of g1)" = attaching ] || die "g1 not listed as attaching: $(axl list)"
axl drivers | grep -q '^blk0 .* running' || die "axl drivers: $(axl drivers)"
axl create "$T_DIR/g0.toml" >&2
[ "$(state_of g1)" = attaching ] || die "g1 left attaching before g0 was created: the test proves nothing"
kill -0 $g1_create 2>/dev/null || die "g1's create returned before g0's"
log "g0 created while g1 waited for blk1's attach answer"
wait $g1_create || die "g1's create failed: $(cat "$T_DIR/g1.out")"
T_PIDS=("${T_PIDS[@]/$g1_create}")
[ "$(state_of g1)" = running ] || die "g1 not running: $(axl list)"
axl wait g0 --timeout 120 >&2 || die "g0 failed"
[ "$(console_value g0 FIRST-SHA256)" = "$(sha_of "$T_DIR/d0.img")" ] || die "g0 read its disk wrong"
for _ in $(seq 300); do console_has g1 FIRST-SHA256 && break; sleep 0.1; done
[ "$(console_value g1 FIRST-SHA256)" = "$(sha_of "$T_DIR/d1.img")" ] || die "g1 read its disk wrong"

# blk1 goes mute (g1 sleeps between its two reads meanwhile).
old=$(driver_col blk1 3)
axl inject blk1 mute-attach >&2
rc=0
err=$(axl create "$T_DIR/g3.toml" 2>&1 >/dev/null) || rc=$?
((rc != 0)) || die "a guest was created on a driver that never answers attach"
[ "$(echo "$err" | wc -l)" = 1 ] && [[ "$err" == *"no answer to attach within 5000 ms"* ]] ||
  die "unclear error for a mute driver: $err"
axl list | grep -q '^g3 ' && die "a half-created g3 is listed: $(axl list)"
for _ in $(seq 200); do
  np=$(driver_col blk1 3)
  [ -n "$np" ] && [ "$np" != "$old" ] && [ "$(driver_col blk1 4)" = running ] && break
  sleep 0.05
done
[ "$np" != "$old" ] || die "blk1 (pid $old) was not replaced: $(axl drivers)"
axl drivers | grep '^blk1 ' | grep -q "no answer to attach" ||
  die "blk1's last failure does not name the mute attach: $(axl drivers)"
log "mute blk1 (pid $old) replaced by pid $np: $err"
axl create "$T_DIR/g3.toml" >&2 || die "create on the replaced blk1 failed"
axl wait g3 --timeout 120 >&2 || die "g3 failed"
[ "$(console_value g3 FIRST-SHA256)" = "$(sha_of "$T_DIR/d3.img")" ] || die "g3 read its disk wrong"
axl wait g1 --timeout 120 >&2 || die "g1 failed"
[ "$(console_value g1 SECOND-SHA256)" = "$(sha_of "$T_DIR/d1.img")" ] ||
  die "g1 read its disk wrong after blk1 was replaced"
log "PASS"
