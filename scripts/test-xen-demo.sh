#!/usr/bin/env bash
# Xen system test of the demo's scenario: runs scripts/demo.sh (Xen under QEMU, `vmv serve` in
# dom0 on the embedded swtpm, two guests, enrollment, reference values, attestation from the
# host, one byte of guest-pv's kernel text changed, attestation again) and checks what
# `vmv-verifier attest` said, from its exit status and its --json report:
#   demo        every stage of the demo ran (its exit status 0 also means its own summary agreed)
#   before      exit 0; the platform and both VMs trusted; no failed evidence check
#   poke        xen-poke changed exactly one int3 padding byte (cc -> 90) of guest-pv's kernel text
#   after       exit 1; the evidence still sound (no failed check: the quote, binding and log are
#               fine, only the appraisal fails); the platform trusted; guest-pv untrusted with a
#               reason naming its kernel text region; guest-pvh trusted; no other VM untrusted
#   replay      the second attestation replayed the log incrementally from the stored state
#   harness     every stage of scripts/xen/run.sh passed, and Xen powered off
# Usage: scripts/test-xen-demo.sh [--out DIR]   (default .build/xen/demo-test)
# Ends with "N passed, M failed"; exit 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="$PWD/.build/xen/demo-test"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    *) echo "test-xen-demo: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
T0=$SECONDS
passed=0; failed=0
check() {  # NAME OK(0/1) DETAIL
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1: $3"
  else failed=$((failed + 1)); echo "FAIL $1: $3"; fi
}

mkdir -p "$(dirname "$OUT")"
echo "--- scripts/demo.sh --mode dom0 --out $OUT"
scripts/demo.sh --mode dom0 --out "$OUT" 2>&1 | tee "$OUT.log"
demo_rc=${PIPESTATUS[0]}
echo "--- checks"
stage_failed=$(grep -a -m1 'FAILED:' "$OUT/demo.log" 2>/dev/null)
[ -z "$stage_failed" ] && [ -e "$OUT/attest-2.rc" ]
check demo $? "demo exit $demo_rc, ${stage_failed:-every stage ran} ($(awk '{ s += $2 } END { print s }' "$OUT/timings.txt" 2>/dev/null)s)"

verdicts() {  # N WHEN: checks the report of attestation N (before|after)
  python3 - "$OUT/attest-$1.json" "$(cat "$OUT/attest-$1.rc" 2>/dev/null)" "$2" <<'EOF'
import json, sys
path, rc, when = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.load(open(path))
except Exception as e:
    print("1 no report in %s: %s" % (path, e)); sys.exit()
dom = {d.get("name"): d for d in r.get("domains", [])}
lv = lambda n: dom[n]["verdict"]["level"] if n in dom else "missing"
bad = []
if r.get("failedChecks"): bad.append("failed evidence checks %s" % r["failedChecks"])
if r["platform"]["level"] != "trusted": bad.append("platform %s: %s" % (r["platform"]["level"], r["platform"]["reasons"]))
if when == "before":
    if rc != "0": bad.append("exit %s, want 0" % rc)
    if r.get("trusted") is not True: bad.append("trusted is %s" % r.get("trusted"))
    for n in ("guest-pv", "guest-pvh"):
        if lv(n) != "trusted": bad.append("%s %s: %s" % (n, lv(n), dom.get(n, {}).get("verdict", {}).get("reasons")))
else:
    if rc != "1": bad.append("exit %s, want 1" % rc)
    if r.get("trusted") is not False: bad.append("trusted is %s" % r.get("trusted"))
    if lv("guest-pv") != "untrusted": bad.append("guest-pv %s, want untrusted" % lv("guest-pv"))
    reasons = dom.get("guest-pv", {}).get("verdict", {}).get("reasons", [])
    if not any("kernel.text" in x for x in reasons): bad.append("no guest-pv reason names kernel.text: %s" % reasons)
    if lv("guest-pvh") != "trusted": bad.append("guest-pvh %s: %s" % (lv("guest-pvh"), dom.get("guest-pvh", {}).get("verdict", {}).get("reasons")))
    others = [n for n in dom if n != "guest-pv" and dom[n]["verdict"]["level"] == "untrusted"]
    if others: bad.append("also untrusted: %s" % others)
levels = " ".join("%s=%s" % (n, lv(n)) for n in sorted(dom))
if bad: print("1 " + "; ".join(bad))
else:
    why = "; ".join(x[:140] for x in dom["guest-pv"]["verdict"]["reasons"]) if when == "after" else ""
    print("0 exit %s, platform=trusted %s%s" % (rc, levels, (" — guest-pv: " + why) if why else ""))
EOF
}
res=$(verdicts 1 before); check before "${res%% *}" "${res#* }"
grep -qE 'old=cc new=90' "$OUT/poke.txt" 2>/dev/null
check poke $? "$(cat "$OUT/poke.txt" 2>/dev/null || echo 'no poke.txt')"
res=$(verdicts 2 after); check after "${res%% *}" "${res#* }"
replay=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["evidence"]["replay"])' "$OUT/attest-2.json" 2>/dev/null)
[ "$replay" = incremental ]
check replay $? "second attestation replay: ${replay:-none}"
bad=$(grep -E ' FAIL ' "$OUT/xen/result.txt" 2>/dev/null | tr '\n' ';')
[ -e "$OUT/xen/result.txt" ] && [ -z "$bad" ] && grep -q '^shutdown  *PASS' "$OUT/xen/result.txt"
check harness $? "${bad:-every stage of scripts/xen/run.sh passed ($(grep -a '^time ' "$OUT/xen/result.txt" 2>/dev/null | sed 's/.*INFO //'))}"
echo "logs: $OUT (demo.log, attest-*.json, vmv-serve.log, xen/serial.txt); whole test $((SECONDS - T0))s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
