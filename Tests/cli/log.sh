#!/usr/bin/env bash
# vmv log … and vmv-verifier log check, end to end on a private swtpm:
#   - recover --boot starts epoch 0 with the VMV's own measurements; stress appends more;
#   - show prints the table (--since, --domain, --json), verify says log and PCR agree;
#   - export --format tcg is what tpm2_eventlog reads, and it prints the PCR values tpm2_pcrread
#     reads from the live TPM; vmv-verifier log check accepts it with those values and rejects a
#     changed byte (exit 1) and a file that is no log (exit 2);
#   - a foreign extend makes verify say where they diverge, recover closes the epoch as broken,
#     the next epoch verifies but is reported untrusted;
#   - while a VMV appends, show reads beside it and a second writer is refused with the pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(swift build --show-bin-path)
VMV=$BIN/vmv; VERIFIER=$BIN/vmv-verifier
[ -x "$VMV" ] && [ -x "$VERIFIER" ] || { echo "missing $VMV or $VERIFIER (swift build first)"; exit 1; }
T=$(mktemp -d); SWTPM_PID=""; BG=""
cleanup() { [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; [ -n "$SWTPM_PID" ] && kill "$SWTPM_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
[ -n "${KEEP_T:-}" ] && trap - EXIT
export TSS2_LOG=all+NONE

# A private swtpm on a free port pair.
mkdir -p "$T/tpm"
swtpm_setup --tpm2 --tpmstate "$T/tpm" --pcr-banks sha1,sha256 --overwrite > "$T/setup.log" 2>&1
for _ in $(seq 20); do
  PORT=$(( (RANDOM % 20000) + 30000 ))
  swtpm socket --tpm2 --tpmstate dir="$T/tpm" --server type=tcp,port=$PORT,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear > "$T/swtpm.log" 2>&1 &
  SWTPM_PID=$!
  sleep 0.3
  kill -0 $SWTPM_PID 2>/dev/null && break
  SWTPM_PID=""
done
[ -n "$SWTPM_PID" ] || { echo "could not start swtpm"; cat "$T/swtpm.log"; exit 1; }
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
S="$T/state"
V() { "$VMV" "$@" --state "$S"; }                            # no TPM: show, export
VT() { "$VMV" "$@" --state "$S" --tcti "$TPM2TOOLS_TCTI"; }  # with the TPM: recover, stress, verify
fail() { echo "FAIL: $*"; exit 1; }

# ---- recover --boot, stress
VT log recover --boot > "$T/recover.out" 2> "$T/recover.err"
grep -q "^started epoch 0" "$T/recover.out" || fail "recover: $(cat "$T/recover.out" "$T/recover.err")"
grep -q "^seq 1: vmvBinary $VMV sha256:$(sha256sum "$VMV" | cut -c1-16)…" "$T/recover.out" || fail "no vmvBinary record with the binary's sha256: $(cat "$T/recover.out")"
grep -q "^seq 2: vmvConfig defaults" "$T/recover.out" || fail "no vmvConfig record"
echo "recover --boot: epoch 0 with the binary ($(sha256sum "$VMV" | cut -c1-16)…), config and platform records"
VT log stress --count 50 --concurrency 4 > "$T/stress.out" 2>/dev/null
[ "$(grep -c '^acked 0 ' "$T/stress.out")" -eq 50 ] || fail "stress acknowledged $(grep -c '^acked' "$T/stress.out") of 50"
N=$(( $(grep -c '^seq ' "$T/recover.out") + 51 ))

# ---- show
V log show > "$T/show.out"
head -1 "$T/show.out" | grep -q "^epoch 0, PCR 15, banks sha1+sha256, open since .*; $N records$" || fail "show header: $(head -1 "$T/show.out")"
sed -n 3p "$T/show.out" | grep -Eq '^SEQ +TIME +DOMAIN +WHAT +DIGEST +PCR$' || fail "show columns: $(sed -n 3p "$T/show.out")"
[ "$(tail -n +4 "$T/show.out" | wc -l)" -eq "$N" ] || fail "show printed $(tail -n +4 "$T/show.out" | wc -l) rows, expected $N"
grep -Eq '^0 +[0-9T:-]+Z +- +epochStart \(reset [0-9]+, restart [0-9]+\) +- +15$' "$T/show.out" || fail "no epochStart row"
[ "$(V log show --since $((N - 3)) | tail -n +4 | wc -l)" -eq 3 ] || fail "--since"
[ "$(V log show --domain stress-1 | tail -n +4 | wc -l)" -eq 13 ] || fail "--domain stress-1: $(V log show --domain stress-1 | tail -n +4 | wc -l) rows"
V log show --json > "$T/show.json"
python3 - "$T/show.json" "$N" <<'EOF' || fail "show --json"
import json, sys
d = json.load(open(sys.argv[1]))
r = d["records"]
assert len(r) == int(sys.argv[2]), len(r)
assert [x["seq"] for x in r] == list(range(len(r)))
assert r[0]["kind"] == "epochStart" and r[1]["kind"] == "vmvBinary" and r[-1]["kind"] == "memoryRegion"
assert set(r[-1]["digests"]) == {"sha1", "sha256"} and r[-1]["region"]["merkleRoot"]["alg"] == "sha256"
assert d["epoch"]["state"] == "open" and d["epoch"]["pcr"] == 15
EOF
echo "show: $N rows, --since, --domain and --json agree"

# ---- verify against the live TPM
VT log verify > "$T/verify.out" || fail "verify: $(cat "$T/verify.out")"
grep -q "^log and PCR 15 agree in sha1, sha256: epoch 0, $N records (seq 0–$((N - 1)))$" "$T/verify.out" || fail "verify: $(cat "$T/verify.out")"
echo "verify: $(cat "$T/verify.out")"

# ---- export: tpm2_eventlog reads it and prints what the TPM holds
V log export --format tcg -o "$T/log.bin"
tpm2_eventlog "$T/log.bin" > "$T/eventlog.out"
# (tpm2_eventlog prints "15 : 0x…", tpm2_pcrread "15: 0x…")
sed -n '/^pcrs:/,$p' "$T/eventlog.out" | grep -E '^ +(sha1|sha256):|^ +15 *:' | sed -E 's/ +//g' | tr A-F a-f > "$T/eventlog.pcrs"
tpm2_pcrread sha1:15+sha256:15 | grep -E '^ +(sha1|sha256):|^ +15 *:' | sed -E 's/ +//g' | tr A-F a-f > "$T/pcrread.pcrs"
[ "$(grep -c '^15:0x' "$T/pcrread.pcrs")" -eq 2 ] || fail "tpm2_pcrread: $(cat "$T/pcrread.pcrs")"
diff "$T/eventlog.pcrs" "$T/pcrread.pcrs" || fail "tpm2_eventlog and tpm2_pcrread differ"
[ "$(grep -c 'EV_EVENT_TAG' "$T/eventlog.out")" -eq "$N" ] || fail "tpm2_eventlog saw $(grep -c EV_EVENT_TAG "$T/eventlog.out") EV_EVENT_TAG events"
if "$VMV" tpm --help 2>/dev/null | grep -qE "^ +pcrs( |$)"; then
  "$VMV" tpm pcrs --tcti "$TPM2TOOLS_TCTI" > "$T/vmvpcrs.out" 2>&1 || true
  for h in $(grep -o '0x[0-9a-fA-F]*' "$T/eventlog.pcrs"); do grep -qi "${h#0x}" "$T/vmvpcrs.out" || fail "vmv tpm pcrs lacks $h"; done
  echo "vmv tpm pcrs prints the same values"
fi
echo "export: tpm2_eventlog replays $N events to PCR 15 = tpm2_pcrread: $(tr '\n' ' ' < "$T/pcrread.pcrs")"
V log export --format json -o "$T/log.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["records"]) == int(sys.argv[2]) and d["banks"] == ["sha1","sha256"]' "$T/log.json" "$N" || fail "export json"

# ---- the verifier
SHA1=$(tpm2_pcrread sha1:15 | grep -o '0x[0-9A-Fa-f]*'); SHA256=$(tpm2_pcrread sha256:15 | grep -o '0x[0-9A-Fa-f]*')
"$VERIFIER" log check "$T/log.bin" --expect "sha1:15=$SHA1" --expect "sha256:15=$SHA256" > "$T/check.out" || fail "check: $(cat "$T/check.out")"
grep -q "^valid: epoch 0, PCR 15, $N records" "$T/check.out" && grep -q "the replay equals the expected PCR 15 values" "$T/check.out" || fail "check: $(cat "$T/check.out")"
cp "$T/log.bin" "$T/tampered.bin"
printf '\x21' | dd of="$T/tampered.bin" bs=1 seek=$(( $(stat -c %s "$T/log.bin") - 5 )) conv=notrunc 2>/dev/null
set +e; "$VERIFIER" log check "$T/tampered.bin" > "$T/tampered.out"; rc=$?; set -e
[ $rc -eq 1 ] && grep -q "digest: event $((N - 1)): sha1 digest .* is not the hash of the event data" "$T/tampered.out" || fail "tampered: rc $rc $(cat "$T/tampered.out")"
head -c 3000 /dev/urandom > "$T/random.bin"
set +e; "$VERIFIER" log check "$T/random.bin" 2> "$T/random.err"; rc=$?; set -e
[ $rc -eq 2 ] && grep -q "not a valid event log" "$T/random.err" || fail "random bytes: rc $rc"
echo "vmv-verifier log check: valid with the live values; a changed byte: exit 1 ($(sed -n 2p "$T/tampered.out" | cut -c1-80)…); random bytes: exit 2"

# ---- a foreign extend
tpm2_pcrextend 15:sha256=$(printf '%064d' 7),sha1=$(printf '%040d' 7)
set +e; VT log verify > "$T/verify2.out"; rc=$?; set -e
[ $rc -eq 1 ] && grep -q "^log and PCR 15 diverge in sha1, sha256: epoch 0, $N records .*no record near the end of the log explains the TPM's value" "$T/verify2.out" || fail "verify after a foreign extend: rc $rc $(cat "$T/verify2.out")"
VT log recover > "$T/recover2.out" 2>/dev/null
grep -q "^started epoch 1; epoch 0 closed as broken: PCR 15 does not match epoch 0's log ($N records)" "$T/recover2.out" || fail "recover: $(cat "$T/recover2.out")"
VT log verify | grep -q "^log and PCR 15 agree in sha1, sha256: epoch 1, 1 record" || fail "verify epoch 1"
V log export --format tcg -o "$T/log1.bin"
"$VERIFIER" log check "$T/log1.bin" > "$T/check1.out" || fail "check epoch 1: $(cat "$T/check1.out")"
grep -q "^platform untrusted: epoch 1 started from an unexplained PCR 15 state: epoch 0 was broken" "$T/check1.out" || fail "untrusted: $(cat "$T/check1.out")"
V log show --epoch 0 > "$T/show0.out"
head -1 "$T/show0.out" | grep -q "^epoch 0, PCR 15, banks sha1+sha256, broken at .*: PCR 15 does not match" || fail "show --epoch 0"
echo "foreign extend: verify says where, recover closes epoch 0 as broken, epoch 1 verifies but the platform is untrusted"

# ---- readers beside a writer; one writer only
"$VMV" log stress --concurrency 2 --state "$S" --tcti "$TPM2TOOLS_TCTI" > "$T/bg.out" 2>/dev/null &
BG=$!
for _ in $(seq 100); do [ "$(grep -c '^acked' "$T/bg.out" 2>/dev/null)" -gt 20 ] && break; sleep 0.1; done
for _ in 1 2 3; do
  V log show --json > "$T/live.json" || fail "show beside a writer"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["records"]; assert [x["seq"] for x in r] == list(range(len(r))), "gap"' "$T/live.json" || fail "live show"
done
head -1 <(V log show) | grep -q "VMV pid $BG appending" || fail "show does not name the writer"
set +e; VT log recover > "$T/second.out" 2> "$T/second.err"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q "lock: pid $BG is appending to this measurement log; one VMV per state directory" "$T/second.err" || fail "second writer: rc $rc $(cat "$T/second.err")"
kill -9 $BG; wait $BG 2>/dev/null || true; BG=""
echo "a reader beside the writer (pid) sees whole records; a second writer is refused: $(cat "$T/second.err")"
echo PASS
