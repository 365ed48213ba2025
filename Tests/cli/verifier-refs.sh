#!/usr/bin/env bash
# vmv-verifier without libtss2 or libxen (ldd), and the refs commands end to end: a kernel
# reference from a bzImage-shaped image and an ELF gcc links here (its build id must be what
# readelf says), a vmv reference, a policy, `refs check`, refusals with exit 2 naming the file;
# the committed examples in measurements/examples must load. With VMV_WRITE_EXAMPLES=1 it
# writes those examples (how they were made: by these commands, not by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(swift build --show-bin-path)/vmv-verifier
[ -x "$BIN" ] || { echo "missing $BIN (swift build first)"; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. The verifier side links neither libtss2 nor libxen.
if ldd "$BIN" | grep -Ei 'libtss2|libxen'; then fail "vmv-verifier links libtss2 or libxen"; fi
echo "ok: ldd shows no libtss2/libxen"

# 2. Inputs: a bzImage-shaped image (x86 boot protocol setup header naming its version), an
#    ELF with a GNU build id, an initrd and a config.
python3 - "$T/vmlinuz" <<'PY'
import sys
b = bytearray(0x1000)
b[0x1fe:0x200] = b'\x55\xaa'; b[0x202:0x206] = b'HdrS'; b[0x206:0x208] = (0x20f).to_bytes(2, 'little')
b[0x20e:0x210] = (0x380).to_bytes(2, 'little')
v = b'6.1.0-26-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.112-1 (2024-09-30)\0'
b[0x580:0x580 + len(v)] = v
open(sys.argv[1], 'wb').write(b)
PY
printf 'int main(void) { return 0; }\n' > "$T/k.c"
gcc -Wl,--build-id=sha1 "$T/k.c" -o "$T/vmlinux"
BUILD_ID=$(readelf -n "$T/vmlinux" | awk '/Build ID:/ {print $3}')
printf 'initrd bytes' > "$T/initrd.img"
printf 'pcr = 15\n' > "$T/vmv.toml"
R=${VMV_WRITE_EXAMPLES:+measurements/examples/artefacts}
R=${R:-$T/refs}
rm -f "$R"/*.json 2>/dev/null || true

"$BIN" refs add-kernel --refs "$R" --image "$T/vmlinuz" --vmlinux "$T/vmlinux" --initrd "$T/initrd.img" \
  --cmdline "root=/dev/xvda1 ro console=hvc0" --id linux-6.1.0-26-amd64 > "$T/out"
grep -q "release 6.1.0-26-amd64, build id $BUILD_ID" "$T/out" || fail "add-kernel: $(cat "$T/out") (readelf: $BUILD_ID)"
K="$R/kernel-linux-6.1.0-26-amd64.json"
grep -q "\"buildId\" : \"$BUILD_ID\"" "$K" || fail "build id not in $K"
grep -q "\"sha256\" : \"$(sha256sum "$T/vmlinuz" | cut -d' ' -f1)\"" "$K" || fail "image digest is not sha256sum's"
grep -q "\"sha256\" : \"$(printf 'root=/dev/xvda1 ro console=hvc0' | sha256sum | cut -d' ' -f1)\"" "$K" || fail "command line digest"
echo "ok: add-kernel (release, build id = readelf's, image digest = sha256sum's)"

"$BIN" refs add-vmv --refs "$R" --binary "$T/vmlinux" --config "$T/vmv.toml" --version 0.1 --id vmv-0.1 > /dev/null
grep -q "\"sha256\" : \"$(sha256sum "$T/vmv.toml" | cut -d' ' -f1)\"" "$R/vmv-vmv-0.1.json" || fail "vmv config digest"
"$BIN" refs policy --refs "$R" --domain web --kernel linux-6.1.0-26-amd64 --require kernel.text --require kernel.rodata > /dev/null
"$BIN" refs policy --refs "$R" --other --kernel linux-6.1.0-26-amd64 > /dev/null
"$BIN" refs policy --refs "$R" --vmv vmv-0.1 > /dev/null
printf 'a FLASK policy, as checkpolicy writes it' > "$T/vmv.pol"
POLICY_SHA=$(sha256sum "$T/vmv.pol" | cut -d' ' -f1)
"$BIN" refs policy --refs "$R" --xsm-mode enforcing --xsm-policy "$T/vmv.pol" > /dev/null
"$BIN" refs check "$R" > "$T/check"
grep -q "^kernel      linux-6.1.0-26-amd64" "$T/check" && grep -q "^vmv         vmv-0.1" "$T/check" \
  && grep -q "^policy      policy  1 domain entries + otherDomains  xsm enforcing policy sha256:$POLICY_SHA" "$T/check" \
  || fail "refs check: $(cat "$T/check") (sha256sum of the policy: $POLICY_SHA)"
echo "ok: add-vmv, policy (XSM policy digest = sha256sum's), check"

# 3. Refusals: exit 2 and the file named.
set +e
"$BIN" refs policy --refs "$R" --domain db --kernel no-such-kernel 2> "$T/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "no kernel reference with id 'no-such-kernel'" "$T/err" || fail "dangling kernel id: rc=$rc $(cat "$T/err")"
mkdir "$T/bad"; printf '{"schema":"vmv-reference/v1","kind":"kernel","id":"k","source":"x","regions":{},"image":{"sha256":"00"}}' > "$T/bad/k.json"
set +e
"$BIN" refs check "$T/bad" 2> "$T/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "$T/bad/k.json.image.sha256: 1 bytes" "$T/err" || fail "bad digest: rc=$rc $(cat "$T/err")"
set +e
"$BIN" refs add-kernel --refs "$T/x" --image "$T/vmlinux" 2> "$T/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "not an x86 bzImage" "$T/err" || fail "ELF as image: rc=$rc $(cat "$T/err")"
set +e
"$BIN" refs policy --refs "$R" --xsm-mode enforced 2> "$T/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "platform.xsm.mode: 'enforced', expected enforcing or permissive" "$T/err" || fail "bad XSM mode: rc=$rc $(cat "$T/err")"
set +e
"$BIN" refs policy --refs "$R" --xsm-policy "$T/vmv.pol" 2> "$T/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "needs --xsm-mode" "$T/err" || fail "XSM policy without mode: rc=$rc $(cat "$T/err")"
echo "ok: refusals exit 2 with the file and field"

# 4. The committed examples load (artefacts/: made above; learned/: by AttestationTests from
#    real-stack evidence).
for d in measurements/examples/artefacts measurements/examples/learned; do
  "$BIN" refs check "$d" > /dev/null || fail "$d does not load"
done
echo "ok: measurements/examples loads"

# 5. The examples (and what was written above) validate against the JSON Schema.
python3 - measurements/schema/vmv-reference-v1.schema.json measurements/examples/*/*.json "$R"/*.json <<'PY' || fail "JSON Schema"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
for f in sys.argv[2:]:
    jsonschema.validate(json.load(open(f)), schema)
try:
    jsonschema.validate({"schema": "vmv-reference/v1", "kind": "kernel", "id": "k", "regions": {}, "source": "image"}, schema)
    sys.exit("the schema accepts a kernel reference with neither image nor regions")
except jsonschema.ValidationError:
    pass
print(f"ok: {len(sys.argv) - 2} documents valid against the JSON Schema")
PY
