#!/usr/bin/env bash
# The long measurement-log crash test: a real `vmv log stress` process is killed with SIGKILL
# at random points N times (default 1,000; the default test run does 200), and after every kill
# the log must replay to the swtpm's PCR or the epoch be visibly closed as broken, with no
# durable record lost. Usage: scripts/test-crash.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
scripts/setup.sh
ensure_swift_on_path
swift build --build-tests
VMV_CRASH_ITERATIONS=${1:-1000} swift test --skip-build --filter CrashFaultTests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]'
