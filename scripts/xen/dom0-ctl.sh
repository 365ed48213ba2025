#!/bin/sh
# The dom0 end of scripts/xen/dom0.sh, run by `nc -ll -e` once per connection: one line in
# (a base64-encoded shell script), its output out, then a last line "VMV-DOM0-RC=<status>".
# Reachable only through QEMU's user-network forward on the host's loopback.
IFS= read -r line || exit 0
f=$(mktemp /tmp/dom0-cmd.XXXXXX)
echo "$line" | base64 -d > "$f" 2>/dev/null || { echo "dom0-ctl: command is not base64"; echo "VMV-DOM0-RC=127"; exit 0; }
cd /root
sh "$f" </dev/null > "$f.out" 2>&1
rc=$?
cat "$f.out"
# the status line must start a line of its own, even after output without a final newline
[ -s "$f.out" ] && [ "$(tail -c1 "$f.out" | od -An -tx1 | tr -d ' ')" != 0a ] && echo
echo "VMV-DOM0-RC=$rc"
rm -f "$f" "$f.out"
