#!/usr/bin/env bash
# Runs a shell command in the dom0 of a `scripts/xen/run.sh --hold` run, prints its output and
# exits with its status. Also: wait for the run to be ready, and power it off.
#
# Usage: scripts/xen/dom0.sh --out DIR [--timeout SECS] -- COMMAND...
#        scripts/xen/dom0.sh --out DIR --wait-ready [--timeout SECS]
#        scripts/xen/dom0.sh --out DIR --poweroff
#        scripts/xen/dom0.sh --out DIR --port N     (the host port forwarded to dom0's port N)
# The command travels base64-encoded over the control channel (dom0 port 7000, forwarded by
# QEMU's user networking to a loopback port of the host, see DIR/ports).
set -uo pipefail
OUT="$PWD/.build/xen/run"; TIMEOUT=300; MODE=exec; PORTQ=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --wait-ready) MODE=wait ;;
    --poweroff) MODE=poweroff ;;
    --port) MODE=port; PORTQ=$2; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
  shift
done
die() { echo "dom0.sh: $*" >&2; exit 2; }
if [ $MODE = wait ]; then  # the run may still be building its images
  for _ in $(seq 120); do [ -e "$OUT/state" ] && break; sleep 1; done
fi
[ -e "$OUT/state" ] || die "no run in $OUT (start scripts/xen/run.sh --hold --out $OUT)"

case $MODE in
  wait)
    end=$((SECONDS + TIMEOUT))
    while [ $SECONDS -lt $end ]; do
      case $(cat "$OUT/state") in
        ready) exit 0 ;;
        failed|done) die "the run ended without becoming ready: $(cat "$OUT/state"), see $OUT/result.txt" ;;
      esac
      sleep 2
    done
    die "not ready after ${TIMEOUT}s (see $OUT/serial.log)" ;;
  port)
    p=$(awk -v p="$PORTQ" '$3 == p { print $2 }' "$OUT/ports")
    [ -n "$p" ] || die "dom0 port $PORTQ is not forwarded (run.sh --forward $PORTQ)"
    echo "$p"; exit 0 ;;
  poweroff)
    set -- "touch /run/vmv-poweroff" ;;
esac
[ $# -gt 0 ] || die "no command given"
[ "$(cat "$OUT/state")" = ready ] || die "run in $OUT is '$(cat "$OUT/state")', not ready"
port=$(awk '$1 == "control" { print $2 }' "$OUT/ports")
cmd=$(printf '%s\n' "$*" | base64 -w0)
reply=$(timeout "$TIMEOUT" bash -c '
  exec 3<>/dev/tcp/127.0.0.1/'"$port"' || exit 97
  printf "%s\n" "$1" >&3
  cat <&3' _ "$cmd")
st=$?
[ $st = 124 ] && die "no answer from dom0 within ${TIMEOUT}s"
[ $st = 97 ] && die "cannot connect to dom0's control channel on 127.0.0.1:$port"
rc=$(printf '%s\n' "$reply" | sed -n 's/^VMV-DOM0-RC=\([0-9]*\)$/\1/p' | tail -1)
printf '%s\n' "$reply" | grep -v '^VMV-DOM0-RC=[0-9]*$'
[ -n "$rc" ] || die "the connection closed before the command finished"
exit "$rc"
