#!/usr/bin/env bash
# Builds the Xen FLASK policy with vmv's module (policy/vmv.te) against the policy tree of
# Debian's xen source package (scripts/xen/build-flask-xen.sh fetches it). The source tree in
# the cache is never modified: its policy folders are copied to a scratch folder first.
#
# Usage: policy/build-policy.sh [--out DIR] [--module FILE]
#   --out DIR      where the policy goes (default .build/policy): DIR/xenpolicy-<version>,
#                  DIR/policy.conf (the m4 output checkpolicy compiled), DIR/build.log
#   --module FILE  the module to build instead of policy/vmv.te (the neverallow test uses it)
# Prints the policy's path on the last line. Exit status non-zero when checkpolicy refuses the
# policy (for example a rule that a neverallow forbids); its message is printed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/.build/policy"; MODULE="$ROOT/policy/vmv.te"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    --module) MODULE=$(readlink -f "$2"); shift ;;
    *) echo "build-policy: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
for t in checkpolicy m4 make; do
  command -v $t >/dev/null || { echo "build-policy: $t not found: run scripts/setup.sh --xen" >&2; exit 1; }
done
XEN=$("$ROOT/scripts/xen/build-flask-xen.sh" --print-path | tail -1)
SRC="${XEN%-flask}"                         # …/flask/xen-<version>
SRC="$(dirname "$SRC")/$(basename "$SRC")"
VER=$(basename "$SRC"); VER=${VER#xen-}
[ -d "$SRC/tools/flask/policy" ] || { echo "build-policy: no policy tree in $SRC" >&2; exit 1; }

# Makefile.common reaches the hypervisor's class and permission lists as
# ../../../xen/xsm/flask/policy, so the scratch copy keeps that layout.
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/tools/flask" "$W/xen/xsm/flask"
cp -a "$SRC/tools/flask/policy" "$W/tools/flask/"
cp -a "$SRC/xen/xsm/flask/policy" "$W/xen/xsm/flask/"
MOD="$W/tools/flask/policy/modules"
cp "$MODULE" "$MOD/vmv.te"
# modules.conf lists the modules in order; vmv needs domU's types (it names domU_t).
sed -i 's/^domU = on$/domU = on\n\n# vmv: the Virtual Machine Verifier domain and its guests (policy\/vmv.te in vmv).\nvmv = on/' "$MOD/modules.conf"
grep -q '^vmv = on$' "$MOD/modules.conf" || { echo "build-policy: could not add vmv to modules.conf" >&2; exit 1; }
# The TPM's registers get their label (policy/device_contexts.vmv).
cat "$ROOT/policy/device_contexts.vmv" >> "$W/tools/flask/policy/policy/device_contexts"
# dom0 stays the toolstack but loses what would undo the VMV's guarantees (policy/README.md,
# "dom0's rights"): changing the policy, its mode or its booleans (the policy measured at boot
# stays the policy), relabelling devices (the TPM's range), adding resources to itself (taking
# the TPM back). Each edit must apply, or the build stops.
D0="$MOD/dom0.te"
strip_dom0() {  # SED-EXPRESSION WHAT
  local before; before=$(md5sum < "$D0")
  sed -i "$1" "$D0"
  [ "$(md5sum < "$D0")" != "$before" ] || { echo "build-policy: dom0.te no longer has $2; check the edit" >&2; exit 1; }
}
strip_dom0 's/^allow dom0_t security_t:security { load_policy setenforce setbool };$/# (vmv) load_policy setenforce setbool removed/' "load_policy setenforce setbool"
strip_dom0 's/^allow dom0_t security_t:security { add_ocontext del_ocontext };$/# (vmv) add_ocontext del_ocontext removed/' "add_ocontext del_ocontext"
strip_dom0 's/^allow dom0_t dom0_t:resource { add remove };$/allow dom0_t dom0_t:resource remove;   # (vmv) add removed/' "resource { add remove } on itself"

mkdir -p "$OUT" "$W/out"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/xenpolicy-* "$OUT/policy.conf"
# Makefile.common directly, as the hypervisor's own build does for its built-in policy:
# `make -C tools/flask/policy` would want the tools' ./configure.
if ! make -s -f Makefile.common -C "$W/tools/flask/policy" FLASK_BUILD_DIR="$W/out" \
       XEN_FULLVERSION="$VER" > "$OUT/build.log" 2>&1; then
  echo "build-policy: checkpolicy refused the policy:" >&2
  grep -v "^make" "$OUT/build.log" | tail -8 >&2
  exit 1
fi
cp "$W/out/xenpolicy-$VER" "$W/out/policy.conf" "$OUT/"
P="$OUT/xenpolicy-$VER"
# Xen finds a policy among the boot modules by this magic.
[ "$(od -An -tx4 -N4 "$P" | tr -d ' ')" = f97cff8c ] || { echo "build-policy: $P lacks the FLASK magic" >&2; exit 1; }
echo "built $P ($(stat -c%s "$P") bytes) from $(basename "$MODULE") against xen $VER" >&2
echo "$P"
