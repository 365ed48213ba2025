#!/usr/bin/env bash
# vmv tpm, end to end against swtpm: the simulator it runs, PCRs as tpm2_pcrread reads them,
# enrollment (credential activation, EK certificate against the simulator's CA), and quotes
# that tpm2_checkquote and vmv-verifier accept unchanged (and refuse with another nonce).
# A second private simulator (--tcti simulator:DIR) is started and stopped by vmv itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(swift build --show-bin-path)
VMV=$BIN/vmv; VERIFIER=$BIN/vmv-verifier
[ -x "$VMV" ] && [ -x "$VERIFIER" ] || { echo "missing $VMV or $VERIFIER (swift build first)"; exit 1; }
T=$(mktemp -d)
cleanup() {
  "$VMV" tpm simulator stop --state "$T/sim" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$VMV" tpm simulator start --state "$T/sim" > "$T/start"
grep -q "^TCTI swtpm:host=127.0.0.1,port=" "$T/start" || fail "simulator start: $(cat "$T/start")"
"$VMV" tpm simulator status --state "$T/sim" | grep -q ": running, pid " || fail "status is not running"
TCTI=$(sed -n 's/^TCTI //p' "$T/start")
export TPM2TOOLS_TCTI=$TCTI

"$VMV" tpm info --tcti "$TCTI" > "$T/info"
grep -q "^manufacturer:  IBM" "$T/info" || fail "info: $(cat "$T/info")"
grep -q "^PCR banks:     sha1 (24 PCRs), sha256 (24 PCRs)" "$T/info" || fail "info banks: $(cat "$T/info")"
grep -q "^RSA-2048 EK:   persistent at 0x81010001, certificate subject CN=unknown, issuer CN=swtpm-localca" "$T/info" || fail "info EK: $(cat "$T/info")"

# PCRs: byte for byte what tpm2_pcrread prints, before and after an extend.
diff <("$VMV" tpm pcrs --tcti "$TCTI") <(tpm2_pcrread) || fail "pcrs differ from tpm2_pcrread"
tpm2_pcrextend "16:sha1=$(printf 'a%.0s' {1..40}),sha256=$(printf 'b%.0s' {1..64})"
diff <("$VMV" tpm pcrs --tcti "$TCTI" --pcr-list sha1:16+sha256:0,16) <(tpm2_pcrread sha1:16+sha256:0,16) || fail "pcrs after extend"

"$VMV" tpm enroll --tcti "$TCTI" --out "$T/enroll" --ek-anchors "$T/sim/ca" > "$T/enroll.out"
grep -q "^credential activation: the TPM recovered the secret" "$T/enroll.out" || fail "enroll: $(cat "$T/enroll.out")"
grep -q "^EK certificate: valid, chains to CN=swtpm-localca-rootca" "$T/enroll.out" || fail "enroll EK cert: $(cat "$T/enroll.out")"
grep -q "^AK:   0x81010003 created" "$T/enroll.out" || fail "enroll AK: $(cat "$T/enroll.out")"
for f in ak.pub ak.pem ak.name ak.handle ek.pub ek.crt; do [ -s "$T/enroll/$f" ] || fail "enroll wrote no $f"; done
# tpm2-tools agree on the AK (its Name) and on the EK certificate.
tpm2_readpublic -c 0x81010003 -n "$T/ak.name.tools" > /dev/null
cmp "$T/enroll/ak.name" "$T/ak.name.tools" || fail "ak.name differs from tpm2_readpublic"
openssl x509 -inform der -in "$T/enroll/ek.crt" -noout -ext extendedKeyUsage | grep -q 2.23.133.8.1 || fail "ek.crt"
# Enrolling again reuses the AK.
"$VMV" tpm enroll --tcti "$TCTI" --out "$T/enroll2" | grep -q "^AK:   0x81010003 already there" || fail "second enroll made a new AK"
cmp "$T/enroll/ak.pub" "$T/enroll2/ak.pub" || fail "second enroll AK differs"

NONCE=$(openssl rand -hex 32)
SPEC=sha1:0,16+sha256:0,1,2,3,16
"$VMV" tpm quote --tcti "$TCTI" --pcr-list "$SPEC" --nonce "$NONCE" --out "$T/q" > "$T/quote.out"
tpm2_checkquote -u "$T/enroll/ak.pem" -m "$T/q/quote.msg" -s "$T/q/quote.sig" -f "$T/q/quote.pcrs" -g sha256 -q "$NONCE" > "$T/checkquote" \
  || fail "tpm2_checkquote rejected the quote: $(cat "$T/checkquote")"
"$VERIFIER" quote check --ak "$T/enroll/ak.pem" --message "$T/q/quote.msg" --signature "$T/q/quote.sig" \
  --pcrs "$T/q/quote.pcrs" --pcr-list "$SPEC" --nonce "$NONCE" | grep -q "^valid: " || fail "vmv-verifier rejected the quote"
"$VERIFIER" quote check --ak "$T/enroll/ak.pub" --message "$T/q/quote.msg" --signature "$T/q/quote.sig" \
  --pcrs "$T/q/quote.pcrs" --pcr-list "$SPEC" --nonce "$NONCE" | grep -q "^valid: " || fail "vmv-verifier rejected the quote with ak.pub"
OTHER=$(openssl rand -hex 32)
if tpm2_checkquote -u "$T/enroll/ak.pem" -m "$T/q/quote.msg" -s "$T/q/quote.sig" -f "$T/q/quote.pcrs" -g sha256 -q "$OTHER" >/dev/null 2>&1; then
  fail "tpm2_checkquote accepted another nonce"
fi
set +e
"$VERIFIER" quote check --ak "$T/enroll/ak.pem" --message "$T/q/quote.msg" --signature "$T/q/quote.sig" \
  --pcrs "$T/q/quote.pcrs" --pcr-list "$SPEC" --nonce "$OTHER" > /dev/null
[ $? -eq 1 ] || fail "vmv-verifier did not reject another nonce with status 1"
set -e

# Bad input: a clear error, nothing written.
if "$VMV" tpm quote --tcti "$TCTI" --pcr-list sha384:0 --nonce "$NONCE" --out "$T/bad" 2> "$T/bad.err"; then fail "quote of an unallocated bank"; fi
grep -q "bank sha384 is not allocated on this TPM" "$T/bad.err" || fail "unallocated bank error: $(cat "$T/bad.err")"
[ ! -e "$T/bad" ] || fail "a refused quote wrote files"
if "$VMV" tpm quote --tcti "$TCTI" --pcr-list sha256:0 --nonce zz --out "$T/bad" 2>/dev/null; then fail "bad nonce accepted"; fi

"$VMV" tpm simulator stop --state "$T/sim" | grep -q "^stopped swtpm pid" || fail "simulator stop"
"$VMV" tpm simulator status --state "$T/sim" | grep -q ": stopped$" || fail "status after stop"

# A private simulator vmv starts and stops around each command, state kept between them.
"$VMV" tpm enroll --tcti "simulator:$T/private" --out "$T/p1" | grep -q "^AK:   0x81010003 created" || fail "private enroll"
"$VMV" tpm simulator status --state "$T/private" | grep -q ": stopped$" || fail "vmv left its private swtpm running"
"$VMV" tpm enroll --tcti "simulator:$T/private" --out "$T/p2" | grep -q "^AK:   0x81010003 already there" || fail "private AK not reused"
NONCE2=$(openssl rand -hex 20)
"$VMV" tpm quote --tcti "simulator:$T/private" --pcr-list sha256:0 --nonce "$NONCE2" --out "$T/pq" > /dev/null
tpm2_checkquote -u "$T/p1/ak.pem" -m "$T/pq/quote.msg" -s "$T/pq/quote.sig" -f "$T/pq/quote.pcrs" -g sha256 -q "$NONCE2" > /dev/null \
  || fail "tpm2_checkquote rejected the private simulator's quote"
echo "tpm: simulator, info, pcrs, enroll, quote (tpm2_checkquote + vmv-verifier) all passed"
