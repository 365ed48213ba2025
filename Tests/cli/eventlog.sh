#!/usr/bin/env bash
# vmv-verifier eventlog replay, end to end: a log written byte by byte here (printf + openssl,
# no Swift) must replay to the PCR values tpm2_eventlog prints, in text and JSON; unreadable
# or malformed files must exit 2 with a message naming the file.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(swift build --show-bin-path)/vmv-verifier
[ -x "$BIN" ] || { echo "missing $BIN (swift build first)"; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

le32() { printf "\\\\x%02x\\\\x%02x\\\\x%02x\\\\x%02x" $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
le16() { printf "\\\\x%02x\\\\x%02x" $(($1 & 255)) $((($1 >> 8) & 255)); }
put() { printf "$1" >> "$T/log.bin"; }

# Header: TCG_PCR_EVENT (PCR 0, EV_NO_ACTION, zero digest), Spec ID Event03 for sha1 + sha256.
put "$(le32 0)$(le32 3)"; head -c 20 /dev/zero >> "$T/log.bin"
put "$(le32 45)"   # 16 + 4 + 4 + 4 + 2 * 4 + 1 + 8
printf 'Spec ID Event03\0' >> "$T/log.bin"
put "$(le32 0)\\x00\\x02\\x00\\x02$(le32 2)$(le16 4)$(le16 20)$(le16 11)$(le16 32)\\x08"; printf 'vmv-test' >> "$T/log.bin"

event() {   # event PCR TYPE DATA-FILE
  put "$(le32 "$1")$(le32 "$2")$(le32 2)$(le16 4)"; openssl dgst -sha1 -binary "$3" >> "$T/log.bin"
  put "$(le16 11)"; openssl dgst -sha256 -binary "$3" >> "$T/log.bin"
  put "$(le32 "$(stat -c %s "$3")")"; cat "$3" >> "$T/log.bin"
}
printf 'CRTM v1' > "$T/d1"; event 0 8 "$T/d1"                                   # EV_S_CRTM_VERSION
printf '\0\0\0\0' > "$T/d2"; for p in 0 1 2 3 4 5 6 7; do event $p 4 "$T/d2"; done  # EV_SEPARATOR
printf 'Calling EFI Application from Boot Option' > "$T/d3"; event 4 2147483655 "$T/d3"  # EV_EFI_ACTION
: > "$T/d4"; event 15 13 "$T/d4"                                                # empty data
printf 'vmv measurement' > "$T/d5"; for i in $(seq 1 20); do event 15 13 "$T/d5"; done

tpm2_eventlog "$T/log.bin" 2>/dev/null | sed -n '/^pcrs:/,$p' > "$T/expected"
"$BIN" eventlog replay "$T/log.bin" | sed -n '/^pcrs:/,$p' > "$T/actual"
diff -u "$T/expected" "$T/actual"
# PCRs 0-7 and 15, in two banks
[ "$(grep -c ' : 0x' "$T/actual")" -eq 18 ] || { echo "expected 18 values (PCRs 0-7, 15 in sha1, sha256):"; cat "$T/actual"; exit 1; }
echo "text output equals tpm2_eventlog's pcrs section ($(grep -c ' : 0x' "$T/actual") values)"

# JSON: the same values.
"$BIN" eventlog replay --json "$T/log.bin" > "$T/json"
for bank in sha1 sha256; do
  for pcr in 0 4 15; do
    want=$(sed -n "/^  $bank:/,/^  [a-z]/p" "$T/expected" | grep -E "^    $pcr +: 0x" | sed 's/.*0x//')
    grep -q "\"$pcr\":\"$want\"" "$T/json" || { echo "JSON lacks $bank:$pcr=$want"; cat "$T/json"; exit 1; }
  done
done
grep -q '"events":31,' "$T/json" || { echo "JSON event count wrong"; cat "$T/json"; exit 1; }
echo "JSON output carries the same values"

# Bad input: exit 2, one message naming the file, nothing on stdout.
expect_2() {   # expect_2 WHAT FILE PATTERN
  set +e; "$BIN" eventlog replay "$2" > "$T/out" 2> "$T/err"; rc=$?; set -e
  [ "$rc" -eq 2 ] || { echo "$1: exit $rc, expected 2"; cat "$T/err"; exit 1; }
  [ ! -s "$T/out" ] || { echo "$1: printed to stdout"; exit 1; }
  grep -q -- "$3" "$T/err" || { echo "$1: message does not match '$3':"; cat "$T/err"; exit 1; }
  echo "$1: exit 2: $(cat "$T/err")"
}
expect_2 "missing file" "$T/none" "$T/none: cannot open: No such file or directory"
expect_2 "directory" "$T" "cannot read: Is a directory"
head -c 200 "$T/log.bin" > "$T/short.bin"
expect_2 "truncated log" "$T/short.bin" "short.bin: not a valid event log: event 1 (TCG_PCR_EVENT2 at byte 156): "
: > "$T/empty.bin"
expect_2 "empty file" "$T/empty.bin" "TCG_PCR_EVENT (log header).pcrIndex: needs 4 bytes, only 0 left"
head -c 4096 /dev/urandom > "$T/random.bin"
expect_2 "random bytes" "$T/random.bin" "not a valid event log"
echo PASS
