#!/usr/bin/env bash
# A few seconds of libFuzzer per parser (scripts/fuzz.sh): the targets build, start from
# their seeds and survive a short run. Longer runs: scripts/fuzz.sh 600.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/fuzz.sh "${VMV_FUZZ_SECONDS:-3}"
