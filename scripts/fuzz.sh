#!/usr/bin/env bash
# libFuzzer over every parser of untrusted bytes: scripts/fuzz.sh [SECONDS-PER-TARGET] [NAME…]
#
# Targets are the files Fuzz/<Name>.swift, each defining LLVMFuzzerTestOneInput (drop a new
# file there and it is picked up); they may import the verifier side's modules. The package
# modules they import (always TPMWire) are compiled here with `swiftc -sanitize=fuzzer,address`
# (coverage-guided, with AddressSanitizer for the unsafe pointer paths); their dependencies
# (swift-crypto, swift-certificates, …) come from the ordinary debug build. Each target runs
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

# Targets may import the verifier side's modules (TPMWire, Verifier, and what they use): the
# debug build of vmv-verifier provides their objects. The package's own modules a target
# imports are compiled again here with coverage instrumentation; the rest is linked as built.
swift build --product vmv-verifier >&2
BIN=$(swift build --show-bin-path)
OUT=.build/fuzz
mkdir -p "$OUT/obj"

sources=()
for name in "${names[@]}"; do
  [ -f "Fuzz/$name.swift" ] || { echo "fuzz: no Fuzz/$name.swift" >&2; exit 2; }
  sources+=("Fuzz/$name.swift")
done
imports=$(sed -n 's/^import \([A-Za-z_]*\).*/\1/p' "${sources[@]}" | sort -u)
modules=(TPMWire)
for m in $imports; do
  [ "$m" != TPMWire ] && [ -d "Sources/$m" ] && [ ! -f "Sources/$m/module.modulemap" ] && modules+=("$m")
done
linked() { grep -q "/$1.build/" "$BIN/vmv-verifier.product/Objects.LinkFileList"; }
for m in "${modules[@]}"; do
  # A module with a C library at its edge (Introspection: CXen for the Xen source) is compiled
  # without the files that import one, and without a subfolder where any file does (the rest of
  # that edge: Introspection/Xen): the parsers fuzzed here are in its pure-Swift part, whose own
  # imports must be modules compiled here, ones vmv-verifier links, or the system's. Sources may
  # sit in subfolders (Verifier/Appraisal, Verifier/Attestation).
  files=()
  while IFS= read -r f; do
    d=$(dirname "$f")
    if [ "$d" != "Sources/$m" ] && grep -q '^import C[A-Z]' "$d"/*.swift; then continue; fi
    grep -q '^import C[A-Z]' "$f" || files+=("$f")
  done < <(find "Sources/$m" -name '*.swift' | sort)
  if ! linked "$m"; then
    for i in $(sed -n 's/^import \([A-Za-z_]*\).*/\1/p' "${files[@]}" | sort -u); do
      case " ${modules[*]} Glibc Darwin Foundation Dispatch " in *" $i "*) continue ;; esac
      linked "$i" || { echo "fuzz: $m imports $i, which vmv-verifier does not link: not supported here" >&2; exit 2; }
    done
  fi
  echo "fuzz: compiling $m (${#files[@]} files) with -sanitize=fuzzer,address" >&2
  ( cd "$OUT/obj" && swiftc -O -swift-version 6 -parse-as-library -module-name "$m" \
      -sanitize=fuzzer,address -I . -I "$BIN/Modules" -emit-module -emit-module-path "$m.swiftmodule" \
      -c "${files[@]/#/$OLDPWD/}" -wmo -o "$m.o" )
done

# everything else vmv-verifier links, minus its main and the modules compiled above
objects=()
while IFS= read -r line; do
  o=${line#\'}; o=${o%\'}
  case "$o" in */vmv_verifier.build/*) continue ;; esac
  skip=0
  for m in "${modules[@]}"; do case "$o" in */"$m".build/*) skip=1 ;; esac; done
  [ $skip -eq 0 ] && objects+=("$o")
done < "$BIN/vmv-verifier.product/Objects.LinkFileList"
for m in "${modules[@]}"; do objects+=("$OUT/obj/$m.o"); done

failed=()
for name in "${names[@]}"; do
  src="Fuzz/$name.swift"
  [ -f "$src" ] || { echo "fuzz: no $src" >&2; exit 2; }
  swiftc -O -swift-version 6 -parse-as-library -sanitize=fuzzer,address -module-name "Fuzz$name" \
    -I "$OUT/obj" -I "$BIN/Modules" "$src" "${objects[@]}" -lstdc++ \
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
