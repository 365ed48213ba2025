#!/bin/sh
# dom0's VMV builder (docs/domp.md), run once by dom0's /init before any guest exists:
#   1. the launch measurements: each into PCR 13 with TPM2_PCR_Event (tpm2_pcrevent: the TPM
#      hashes the event text in every bank), before the thing measured is used:
#        vmv-launch/1 xsm-policy     the FLASK policy, then loaded with flask-loadpolicy
#        vmv-launch/1 domp-kernel    the VMV domain's kernel,
#        vmv-launch/1 domp-initramfs its initramfs (vmv and everything it runs),
#        vmv-launch/1 domp-config    its xl configuration (label, TPM, network),
#        vmv-launch/1 handover       and the mark that dom0 gives the TPM away now;
#   2. the TPM handover: dom0's tpm_tis driver is unbound and dom0's access to the TIS registers
#      revoked (xen-iomem); the policy keeps dom0 from taking them back;
#   3. `xl create -p` of the VMV (vmv_t, the TPM range as iomem), xenstore grants for it (the
#      launch events, the domain watches), unpause;
#   4. a relay of the VMV's API port 8443 to its vif (10.0.3.2).
# The event texts go to xenstore /vmv/launch/<n> (owner dom0, readable by the VMV): the VMV
# records each as a platform record; the verifier replays them against the quoted PCR 13.
#
# Usage (in dom0): dom0-domp.sh    with /domp/{vmlinuz,domp.cpio.gz,domp.cfg} and optionally
# /etc/vmv/xenpolicy. Prints VMV-XEN-STAGE lines; exit status non-zero if the VMV was not created.
LAUNCH_PCR=13
TCTI=device:/dev/tpmrm0
stage() { echo "VMV-XEN-STAGE $1 $2 $3"; }
fail() { stage "$1" FAIL "$2"; exit 1; }
n=0
launch_event() {  # TEXT: extend PCR 13 with it, keep it for the VMV
  printf '%s' "$1" > /tmp/launch-event
  tpm2_pcrevent -T "$TCTI" "$LAUNCH_PCR" /tmp/launch-event > /tmp/launch-event.out 2>&1 ||
    { cat /tmp/launch-event.out; return 1; }
  xenstore-write "/vmv/launch/$n" "$1" || return 1
  n=$((n + 1))
  echo "dom0-domp: PCR $LAUNCH_PCR <- $1"
}
measure_file() {  # KIND FILE
  set -- "$1" "$2" "$(sha256sum "$2" | cut -d' ' -f1)" "$(stat -c%s "$2")"
  launch_event "vmv-launch/1 $1 sha256=$3 size=$4 file=$(basename "$2")"
}

[ -c /dev/tpmrm0 ] || fail domp:launch "dom0 has no TPM to measure the VMV's image with"
xenstore-rm /vmv 2>/dev/null
xenstore-write /vmv/launch/pcr "$LAUNCH_PCR" || fail domp:launch "xenstore-write /vmv/launch/pcr"

# ---- the policy: measured, then loaded (Xen cannot report the policy it has loaded: no FLASK
# operation returns it, so the one who loads it measures it).
if [ -e /etc/vmv/xenpolicy ]; then
  measure_file xsm-policy /etc/vmv/xenpolicy || fail domp:launch "measuring the policy"
  if ! flask-loadpolicy /etc/vmv/xenpolicy > /tmp/loadpolicy.log 2>&1; then
    # Measured but not loaded: say so in PCR 13 too, and stop.
    launch_event "vmv-launch/1 xsm-policy-load-failed" >/dev/null
    fail domp:policy "flask-loadpolicy: $(cat /tmp/loadpolicy.log)"
  fi
  stage domp:policy PASS "loaded $(stat -c%s /etc/vmv/xenpolicy) B, mode $(flask-getenforce 2>&1)"
fi

# ---- the VMV's image, measured before it runs
for f in kernel:/domp/vmlinuz initramfs:/domp/domp.cpio.gz config:/domp/domp.cfg; do
  measure_file "domp-${f%%:*}" "${f#*:}" || fail domp:launch "measuring ${f#*:}"
done

# ---- the TPM handover, part 1: dom0's driver lets go (dom0 must still hold the range itself to
# grant it: Xen lets a domain give only the I/O memory it may access)
tpm_to_vmv=0
if grep -q '^iomem *= *\[ *"fed40,5" *\]' /domp/domp.cfg; then
  tpm_to_vmv=1
  launch_event "vmv-launch/1 handover tpm=vmv" || fail domp:launch "handover event"
  dev=$(readlink -f /sys/class/tpm/tpm0/device)
  drv=$(readlink -f "$dev/driver")
  echo "$(basename "$dev")" > "$drv/unbind" || fail domp:tpm "unbinding $dev from $drv"
  [ ! -e /dev/tpmrm0 ] || fail domp:tpm "/dev/tpmrm0 still there after the unbind"
else
  launch_event "vmv-launch/1 handover tpm=dom0" || fail domp:launch "handover event"
fi
stage domp:launch PASS "$n events in PCR $LAUNCH_PCR"

# ---- the VMV domain, created paused (its iomem grant is made here)
insmod /modules/xen-netback.ko 2>/dev/null
create_vmv() {  # the flakes of `xl create` under QEMU (dom0-init.sh's create): retried, logged
  local tries=0 rc why
  while :; do
    xl -vvv create -p /domp/domp.cfg > /tmp/xl-vmv.log 2>&1; rc=$?
    [ $rc = 0 ] && return 0
    why=$(grep -m1 -e 'XZ decompression error' -e 'unable to XZ decompress' -e 'daemonizing child .* died' \
      -e 'Bad file descriptor' /tmp/xl-vmv.log)
    [ -n "$why" ] || [ $rc -lt 128 ] || why="xl died on signal $((rc - 128))"
    if [ -n "$why" ] && [ $tries -lt 2 ]; then
      tries=$((tries + 1))
      echo "VMV-XEN-RETRY vmv: $why"
      xl destroy vmv >/dev/null 2>&1
      continue
    fi
    grep -v -e '^domainbuilder' -e '^xc: detail' -e '^xencall:buffer' /tmp/xl-vmv.log | tail -20
    return 1
  done
}
create_vmv || fail domp:create "xl create of the VMV domain failed (log above)"
V=$(xl domid vmv)

# ---- the TPM handover, part 2: dom0 gives up its own access before the VMV runs; it cannot
# take it back (a domain may only grant I/O memory it holds, and the policy gives dom0 no
# resource:add on itself)
if [ $tpm_to_vmv = 1 ]; then
  xen-iomem 0 0xfed40 5 deny || { xl destroy vmv; fail domp:tpm "dom0 could not give up the TPM's registers"; }
  stage domp:tpm PASS "dom0 released the TPM ($(basename "$dev") unbound from $(basename "$drv"), frames 0xfed40-0xfed44 revoked), d$V holds it"
fi

# xenstore is dom0's xenstored's to guard, not FLASK's: the VMV may read the launch events and
# receive the domain watches (guests' names are granted one by one as they are created).
xenstore-chmod -r /vmv n0 "r$V"
xenstore-chmod @introduceDomain n0 "r$V"
xenstore-chmod @releaseDomain n0 "r$V"
echo "$V" > /run/vmv-domid
xl unpause vmv || fail domp:create "xl unpause vmv"
stage domp:create PASS "vmv is d$V ($(xl list -Z vmv | awk 'NR == 2 { print $NF }'))"

# ---- the API: dom0 relays bytes (TLS end to end; the quote binds the VMV's TLS key)
printf '#!/bin/sh\nexec nc 10.0.3.2 8443\n' > /run/domp-relay.sh
chmod +x /run/domp-relay.sh
nc -ll -p 8443 -e /run/domp-relay.sh &
exit 0
