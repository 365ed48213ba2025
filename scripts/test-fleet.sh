#!/usr/bin/env bash
# The fleet suites that need more than the default run installs: PostgreSQL (the storage tests
# on PostgreSQL, and two `vmv-verifier serve` sharing one fleet on a private PostgreSQL cluster
# started by the test with initdb/pg_ctl on a free port) and Chromium (the operator's page in
# headless Chromium; its screenshot is kept in .build/test-artifacts/fleet-page.png).
# The default scripts/test.sh runs the rest of VerifierServiceTests (SQLite storage, the API over
# mTLS, webhooks, SSE, and the fleet of real `vmv serve` processes on swtpm).
#
# Prints one line per step and ends with "N passed, M failed"; exit 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

scripts/setup.sh --fleet || { echo "0 passed, 1 failed"; exit 1; }
ensure_swift_on_path

LOGDIR=${VMV_TEST_LOGS:-$PWD/.build/test-logs}
mkdir -p "$LOGDIR" .build/test-artifacts
passed=0; failed=0; failures=()
step() {   # step NAME MINUTES COMMAND...
  local name=$1 minutes=$2; shift 2
  local log="$LOGDIR/$name.log" t0=$SECONDS
  echo "--- $name"
  if timeout --kill-after=30 "$((minutes * 60))" "$@" >"$log" 2>&1; then
    passed=$((passed + 1)); echo "PASS $name ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "FAIL $name ($((SECONDS - t0))s), log: $log"
    tail -40 "$log" | sed 's/^/    /'
  fi
  grep -E "^(✔|✘) Test run with" "$log" | tail -3 | sed 's/^/    /' || true
}

step build 45 swift build --build-tests
# VMV_TEST_FLEET=1: the storage tests run on both backends, and the suites needing PostgreSQL or
# Chromium run (a missing one fails).
export VMV_TEST_FLEET=1
step fleet-storage-postgresql 10 swift test --skip-build --filter 'VerifierServiceTests.StorageTests'
step fleet-postgresql-two-verifiers 15 swift test --skip-build --filter 'VerifierServiceTests.FleetPostgresSystemTests'
step fleet-web-page-chromium 10 swift test --skip-build --filter 'VerifierServiceTests.WebPageBrowserTests'
[ -f .build/test-artifacts/fleet-page.png ] && echo "    screenshot: .build/test-artifacts/fleet-page.png"

echo
[ ${#failures[@]} -eq 0 ] || echo "failed steps: ${failures[*]} (logs in $LOGDIR)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
