#!/usr/bin/env bash
# On a machine without Xen, `vmv introspect domains` fails with one clear line (no trace) and the
# rest of vmv still runs. Under Xen the live behaviour is checked by scripts/test-xen.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
VMV=.build/debug/vmv
if [ -e /dev/xen/privcmd ] || [ -e /proc/xen/privcmd ]; then
  echo "this check describes a machine without Xen, and this one has privcmd" >&2; exit 1
fi
out=$("$VMV" introspect domains 2>&1); rc=$?
echo "$out"
[ $rc -ne 0 ] || { echo "expected a non-zero exit off Xen"; exit 1; }
echo "$out" | grep -q "not running on Xen" || { echo "expected the reason 'not running on Xen'"; exit 1; }
[ "$(echo "$out" | grep -c .)" -le 2 ] || { echo "expected one error line, got: $out"; exit 1; }
# The guest measurer says the same, before it takes the log's lock or touches a TPM.
state=$(mktemp -d); trap 'rm -rf "$state"' EXIT
out=$("$VMV" measure guests --once --state "$state/s" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "not running on Xen" && [ ! -e "$state/s/log" ] ||
  { echo "vmv measure guests off Xen: rc=$rc, $out"; exit 1; }
"$VMV" --help | grep -q introspect || { echo "vmv --help does not work without Xen"; exit 1; }
echo "ok: clear error off Xen, the rest of vmv runs"
