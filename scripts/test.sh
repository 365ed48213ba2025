#!/usr/bin/env bash
# The whole default test suite, from a fresh Debian 12 machine: installs what is missing,
# builds, runs the Swift tests (unit, interop with tpm2-tools on a private swtpm, fault tests)
# and the command-line checks. Slow suites (Xen under QEMU, soak) have their own commands.
#
# Prints one line per step and ends with "N passed, M failed" (steps); exit 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
ensure_swift_on_path

LOGDIR=${VMV_TEST_LOGS:-$PWD/.build/test-logs}
mkdir -p "$LOGDIR"
passed=0; failed=0; failures=()

step() {   # step NAME [MINUTES] COMMAND...  (a step that runs longer than MINUTES, default 10, is killed and fails)
  local name=$1 minutes=10; shift
  case "${1:-}" in ''|*[!0-9]*) ;; *) minutes=$1; shift ;; esac
  local log="$LOGDIR/$name.log" t0=$SECONDS
  echo "--- $name"
  if timeout --kill-after=30 "$((minutes * 60))" "$@" >"$log" 2>&1; then
    passed=$((passed + 1)); echo "PASS $name ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "FAIL $name ($((SECONDS - t0))s), log: $log"
    tail -40 "$log" | sed 's/^/    /'
    [ $((SECONDS - t0)) -lt $((minutes * 60)) ] || echo "    (killed after ${minutes} minutes)"
  fi
  # surface the test framework's own summary lines
  grep -E "^(✔|✘) Test run with|Executed [1-9][0-9]* tests?, with" "$log" | tail -3 | sed 's/^/    /' || true
}

step build 45 swift build --build-tests
# The system suites that measure time (detection within intervals, timeouts, kills at random
# points) run after the others and one test at a time, so that the parallel run of everything
# else on a 2-core machine does not starve them.
system_suites='VerifierServiceTests\.(FleetSystemTests|FleetPostgresSystemTests|APITests)|VMVServerTests\.ServerTests|VMVTests\.(CrashFaultTests|MeasurementEngineTests)'
step swift-test 30 swift test --skip-build --skip "$system_suites"
step swift-test-system 30 swift test --skip-build --no-parallel --filter "$system_suites"
for t in Tests/cli/*.sh; do
  [ -e "$t" ] || continue
  step "cli-$(basename "$t" .sh)" 10 bash "$t"
done

echo
[ ${#failures[@]} -eq 0 ] || echo "failed steps: ${failures[*]} (logs in $LOGDIR)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
