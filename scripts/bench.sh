#!/usr/bin/env bash
# Release-built benchmarks: scripts/bench.sh NAME [OPTIONS…]   (scripts/bench.sh --help lists them)
# Each prints its figure beside a reference tool run on the same input in the same run, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_swift_on_path
swift build -c release --product vmv-bench >&2
# the quote benchmark also times the vmv-verifier process it sits beside
swift build -c release --product vmv-verifier >&2
# quote-load runs vmv serve
swift build -c release --product vmv >&2
exec "$(swift build -c release --show-bin-path)/vmv-bench" "$@"
