#!/usr/bin/env bash
# libFuzzer over every parser of untrusted bytes: scripts/fuzz.sh [SECONDS-PER-TARGET] [NAME…]
#
# Targets are the files Fuzz/<Name>.swift, each defining LLVMFuzzerTestOneInput over TPMWire
# (drop a new file there and it is picked up). TPMWire is compiled here with
# `swiftc -sanitize=fuzzer,address` (coverage-guided, with AddressSanitizer for the unsafe
# pointer paths); swift-crypto's objects come from the ordinary debug build. Each target runs
# for SECONDS (default 60) on its corpus in .build/fuzz/corpus/<Name>, which persists between
# runs, starting from Fuzz/Seeds/<Name>/ when there is one; a crash leaves its input in .build/fuzz/crashes/<Name>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_swift_on_path

seconds=${1:-60}
shift || true
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in Fuzz/*.swift; do names+=("$(basename "$f" .swift)"); done
fi

# swift-crypto (and TPMWire's module interface for nothing else) from the debug build
swift build --target TPMWire >&2
BIN=$(swift build --show-bin-path)
OUT=.build/fuzz
mkdir -p "$OUT/obj"

# TPMWire, instrumented
echo "fuzz: compiling TPMWire with -sanitize=fuzzer,address" >&2
( cd "$OUT/obj" && swiftc -O -swift-version 6 -parse-as-library -module-name TPMWire \
    -sanitize=fuzzer,address -enable-testing \
    -I "$BIN/Modules" -emit-module -emit-module-path TPMWire.swiftmodule \
    -c "${OLDPWD}"/Sources/TPMWire/*.swift -wmo -o TPMWire.o )

crypto_objects=()
for target in Crypto CryptoBoringWrapper CCryptoBoringSSL CCryptoBoringSSLShims CXKCP CXKCPShims; do
  [ -d "$BIN/$target.build" ] || continue
  while IFS= read -r o; do crypto_objects+=("$o"); done < <(find "$BIN/$target.build/" -name '*.o')
done

failed=()
for name in "${names[@]}"; do
  src="Fuzz/$name.swift"
  [ -f "$src" ] || { echo "fuzz: no $src" >&2; exit 2; }
  swiftc -O -swift-version 6 -parse-as-library -sanitize=fuzzer,address -module-name "Fuzz$name" \
    -I "$OUT/obj" -I "$BIN/Modules" "$src" "$OUT/obj/TPMWire.o" "${crypto_objects[@]}" -lstdc++ \
    -o "$OUT/$name" 2> >(grep -v "Cannot export local symbol" >&2)
  mkdir -p "$OUT/corpus/$name" "$OUT/crashes/$name"
  log="$OUT/$name.log"
  # seeds: real tpm2-tools output, read-only (new inputs go to the first corpus directory)
  seeds=""; [ -d "Fuzz/Seeds/$name" ] && seeds="Fuzz/Seeds/$name"
  if "$OUT/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$OUT/crashes/$name/" "$OUT/corpus/$name" ${seeds:+"$seeds"} > "$log" 2>&1; then
    runs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}')
    cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1)
    echo "PASS $name: ${runs:-?} inputs in ${seconds}s, $cov, corpus $(ls "$OUT/corpus/$name" | wc -l)"
  else
    echo "FAIL $name: see $log and $OUT/crashes/$name/"
    grep -E "ERROR|Fatal error|precondition|SUMMARY" "$log" | head -5 | sed 's/^/    /'
    failed+=("$name")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"; exit 1; }
