#!/usr/bin/env bash
# XSM/FLASK system test: the FLASK hypervisor built from Debian's packages, vmv's policy module,
# the neverallow rules enforced at build time, and (unless --no-boot) the policy enforcing under
# QEMU:
#   hypervisor  scripts/xen/build-flask-xen.sh gives a hypervisor with CONFIG_XSM_FLASK=y
#   policy      policy/build-policy.sh compiles vmv.te; the types are in the policy
#   neverallow  each of four forbidden rules added to vmv.te makes checkpolicy fail, naming it:
#               a VMV write mapping, a VMV vCPU write, the VMV seeing a private guest, dom0
#               reading a sealed guest
#   boot        Xen boots with the policy in enforcing mode, guests get their labels
#   sealed      dom0 maps a vmv_guest_t guest's page but is denied a vmv_sealed_t guest's page
#               and its vCPU state, with `avc: denied` lines naming dom0_t -> vmv_sealed_t
# Usage: scripts/test-xen-policy.sh [--no-boot] [--out DIR]
# Ends with "N passed, M failed"; exit 0 only if all passed. Logs in DIR (default .build/xen/policy-test).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
OUT="$PWD/.build/xen/policy-test"; BOOT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-boot) BOOT=0 ;;
    --out) OUT=$2; shift ;;
    *) echo "test-xen-policy: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
T0=$SECONDS
scripts/setup.sh --xen || { echo "0 passed, 1 failed"; exit 1; }
ensure_swift_on_path
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
check() {  # NAME OK(0/1) DETAIL
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1: $3"
  else failed=$((failed + 1)); echo "FAIL $1: $3"; fi
}
finish() {
  echo "logs: $OUT; whole test $((SECONDS - T0))s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]; exit $?
}

# ---- hypervisor
t=$SECONDS
XEN=$(scripts/xen/build-flask-xen.sh --print-path 2> "$OUT/build-xen.log" | tail -1)
if [ -s "$XEN" ] && grep -q '^CONFIG_XSM_FLASK=y' "$XEN.config" && grep -q '^CONFIG_XSM_FLASK_POLICY=y' "$XEN.config"; then
  check hypervisor 0 "$XEN, CONFIG_XSM=y CONFIG_XSM_FLASK=y CONFIG_XSM_FLASK_POLICY=y ($((SECONDS - t))s)"
else
  check hypervisor 1 "no FLASK hypervisor (see $OUT/build-xen.log)"; finish
fi

# ---- policy
POL=$(policy/build-policy.sh --out "$OUT/policy" 2> "$OUT/build-policy.log" | tail -1)
if [ -s "$POL" ]; then
  missing=""
  for ty in vmv_t vmv_guest_t vmv_sealed_t vmv_sealed_t_building vmv_private_t; do
    grep -qE "^[[:space:]]*type $ty[ ,;]" "$OUT/policy/policy.conf" || missing="$missing $ty"
  done
  [ -z "$missing" ]; check policy $? "$(basename "$POL") $(stat -c%s "$POL") bytes${missing:+, missing types:$missing}"
else
  check policy 1 "$(tail -3 "$OUT/build-policy.log" | tr '\n' ' ')"; finish
fi

# ---- neverallow: each forbidden rule must stop the build, and checkpolicy must say why
forbidden=(
  "write-map|allow vmv_t vmv_guest_t:mmu map_write;|map_write"
  "vcpu-write|allow vmv_t vmv_sealed_t:domain setvcpucontext;|setvcpucontext"
  "private|allow vmv_t vmv_private_t:domain getdomaininfo;|getdomaininfo"
  "sealed-read|allow dom0_t vmv_sealed_t:mmu map_read;|map_read"
)
for f in "${forbidden[@]}"; do
  IFS='|' read -r name rule perm <<< "$f"
  { cat policy/vmv.te; echo "$rule"; } > "$OUT/bad-$name.te"
  if policy/build-policy.sh --module "$OUT/bad-$name.te" --out "$OUT/bad-$name" > "$OUT/bad-$name.log" 2>&1; then
    check "neverallow:$name" 1 "'$rule' was accepted"
  else
    msg=$(grep -m1 -i 'neverallow' "$OUT/bad-$name/build.log")
    echo "$msg" | grep -q "$perm"
    check "neverallow:$name" $? "'$rule' refused: ${msg:-no neverallow message, see $OUT/bad-$name/build.log}"
  fi
done
[ $BOOT = 1 ] || finish

# ---- boot with the policy, enforcing
swift build --product vmv > "$OUT/swift-build.log" 2>&1 || { check boot 1 "swift build failed ($OUT/swift-build.log)"; finish; }
P="$OUT/payload"; mkdir -p "$P/bin"; strip -o "$P/bin/vmv" .build/debug/vmv
RUN="$OUT/run"
scripts/xen/run.sh --hold --no-tpm --xen-image "$XEN" --policy "$POL" --xen-args flask=enforcing \
  --guests "measured:pv:128:vmv_guest_t,sealed:pv:128:vmv_sealed_t+build,private:pv:128:vmv_private_t" \
  --payload "$P" --out "$RUN" > "$OUT/run.log" 2>&1 &
RUN_PID=$!
stop_xen() {
  if kill -0 "$RUN_PID" 2>/dev/null; then
    scripts/xen/dom0.sh --out "$RUN" --poweroff >/dev/null 2>&1
    for _ in $(seq 30); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 1; done
    kill "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null
  fi
}
trap stop_xen EXIT
if ! scripts/xen/dom0.sh --out "$RUN" --wait-ready --timeout 600; then
  stop_xen; check boot 1 "FLASK Xen did not come up: $(grep -v PASS "$RUN/result.txt" 2>/dev/null | tr '\n' ';')"; finish
fi
dom0() { scripts/xen/dom0.sh --out "$RUN" --timeout 180 -- "$@"; }
dom0 'flask-getenforce; xl dmesg | grep -E "Flask|Policy len|XSM"; xl list -Z' > "$OUT/flask.txt" 2>&1
labels_ok=0
for g in measured:vmv_guest_t sealed:vmv_sealed_t private:vmv_private_t; do
  grep -qE "^${g%%:*} .*system_u:system_r:${g#*:}\$" "$OUT/flask.txt" || labels_ok=1
done
grep -q '^Enforcing' "$OUT/flask.txt" && grep -q 'Policy len' "$OUT/flask.txt" && [ $labels_ok = 0 ]
check boot $? "$(grep -m1 'Flask:  *[0-9]* users' "$OUT/flask.txt" | sed 's/.*Flask: */Flask: /'); $(head -1 "$OUT/flask.txt"); labels: $(awk 'NF > 6 && /system_u/ { printf "%s=%s ", $1, $NF }' "$OUT/flask.txt")"

# ---- sealed: dom0 reads a measured guest but not a sealed one
frame_of() { dom0 "xenstore-read /local/domain/\$(xl domid $1)/console/ring-ref"; }
fm=$(frame_of measured); fs=$(frame_of sealed)
m=$(dom0 "vmv introspect frame --domain measured $fm" 2>&1); mrc=$?
s=$(dom0 "vmv introspect frame --domain sealed $fs" 2>&1); src=$?
v=$(dom0 "vmv introspect vcpu --domain sealed" 2>&1); vrc=$?
dom0 'xl dmesg | grep "avc:"' > "$OUT/avc.txt" 2>&1
avc=$(grep -m1 'denied.*{ map_read }.*scontext=system_u:system_r:dom0_t tcontext=system_u:system_r:vmv_sealed_t' "$OUT/avc.txt")
[ $mrc = 0 ] && [ $src != 0 ] && echo "$s" | grep -q 'refused it: Permission denied' && [ -n "$avc" ]
check sealed-map $? "measured frame $fm: $(echo "$m" | head -1 | cut -c1-40)…; sealed frame $fs: $(echo "$s" | grep -o 'refused it.*' | head -1); ${avc:-no avc line} "
avc2=$(grep -m1 'denied.*{ getvcpucontext }.*tcontext=system_u:system_r:vmv_sealed_t' "$OUT/avc.txt")
[ $vrc != 0 ] && echo "$v" | grep -q 'permission\|not permitted\|denied' && [ -n "$avc2" ]
check sealed-vcpu $? "$(echo "$v" | head -1); ${avc2:-no avc line}"

stop_xen; trap - EXIT
bad=$(grep -E ' FAIL ' "$RUN/result.txt" | tr '\n' ';')
[ -z "$bad" ]; check harness $? "${bad:-all harness stages passed ($(grep -a 'time ' "$RUN/result.txt" | sed 's/.*INFO //'))}"
finish
