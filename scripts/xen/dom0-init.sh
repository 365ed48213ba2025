#!/bin/sh
# /init of the dom0 initramfs built by scripts/xen/run.sh. Brings up the Xen toolstack, the
# network (control channel and forwarded ports), checks the TPM, creates the guests listed in
# /etc/vmv/guests, runs /payload/run.sh when there is one, then powers off or (with
# /etc/vmv/hold) waits for commands from the host (scripts/xen/dom0.sh).
#
# Everything the host checks comes back over the serial console as lines
#   VMV-XEN-STAGE <stage> PASS|FAIL <detail>
export PATH=/payload/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount --bind /run /var/run
mkdir -p /var/lib/xen /var/log/xen/console /run/xen /run/xenstored /var/lib/xenstored /proc/xen
exec >/dev/console 2>&1

stage() { echo "VMV-XEN-STAGE $1 $2 $3"; }
up() { cut -d' ' -f1 /proc/uptime; }
stage dom0 PASS "init running on $(uname -r) after $(up)s"

# ---- toolstack: privcmd, xenfs, xenstored, xen-init-dom0, xenconsoled
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do
  insmod /modules/$m.ko || echo "dom0: insmod $m failed"
done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid
i=0; while [ $i -lt 30 ] && ! xenstore-read /local/domain/0 >/dev/null 2>&1 && ! xenstore-ls / >/dev/null 2>&1; do
  sleep 1; i=$((i + 1)); done
xen-init-dom0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
if [ -c /dev/xen/privcmd ] && pidof xenstored >/dev/null && xl list >/tmp/xl-list 2>&1; then
  stage toolstack PASS "privcmd, xenstored, xenconsoled, xl list at $(up)s"
else
  cat /tmp/xl-list; stage toolstack FAIL "privcmd=$([ -c /dev/xen/privcmd ] && echo yes || echo no) xenstored=$(pidof xenstored || echo none)"
fi
xl info 2>/dev/null | grep -E '^(xen_version|xen_commandline|xen_caps|virt_caps)'
xl dmesg 2>/dev/null | grep -E 'Flask|XSM|Policy len' | sed 's/^/dom0: xl dmesg: /'

# ---- network: QEMU user networking, static address; the control channel listens on 7000
if insmod /modules/e1000.ko && sleep 1 && ip link set eth0 up &&
   ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; then
  ip link set lo up
  nc -ll -p 7000 -e /etc/vmv/dom0-ctl.sh &
  stage network PASS "eth0 10.0.2.15, control channel on 7000"
else
  stage network FAIL "$(ip addr 2>&1 | tr '\n' ' ')"
fi

# ---- TPM (QEMU tpm-tis backed by the host's swtpm)
if [ -e /etc/vmv/tpm ]; then
  if [ -c /dev/tpm0 ] && [ -c /dev/tpmrm0 ]; then
    stage tpm PASS "/dev/tpm0 /dev/tpmrm0, TPM $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null).x"
  else
    dmesg | grep -i tpm; stage tpm FAIL "no /dev/tpm0 (dmesg above)"
  fi
fi

# ---- the VMV as its own domain (scripts/xen/dom0-domp.sh): measured, given the TPM, created
# before any guest
if [ -x /etc/vmv/dom0-domp.sh ]; then
  /etc/vmv/dom0-domp.sh || echo "dom0: the VMV builder failed"
fi
# xenstore reads the VMV gets for a guest it measures: its name (FLASK decides what it may do to
# the guest; xenstored, not FLASK, guards xenstore).
# Granted once the guest is up, then read back: one grant made right after `xl create` was seen
# missing later (the VMV could not see the guest's name).
grant_vmv() {  # NAME LABEL
  [ -s /run/vmv-domid ] || return 0
  local d v; v=$(cat /run/vmv-domid)
  case "$2" in
    vmv_guest_t|vmv_sealed_t|vmv_sealed_t+build)
      if d=$(domid_of "$1") && xenstore-chmod "/local/domain/$d/name" n0 "r$d" "r$v" &&
         xenstore-ls -p "/local/domain/$d" 2>/dev/null | grep '^name ' | grep -q "r$v"; then
        echo "dom0: the VMV (d$v) may read $1's name (d$d)"
      else
        echo "dom0: FAILED to let the VMV read $1's name: $(xenstore-ls -p "/local/domain/${d:-?}" 2>&1 | grep '^name ')"
      fi ;;
  esac
}

# ---- guests
create() {  # NAME: xl create, retried (at most twice, logged) on the flakes seen under QEMU
  # Known flakes of dom0 under QEMU/TCG, each seen more than once, a retry has always succeeded:
  # libxenguest failing to unpack the guest's XZ bzImage ("XZ decompression error", then "unable
  # to XZ decompress kernel"; the -vvv log always has "XZ decompress OK" lines, so only the error
  # lines count), xl itself or its domain monitoring child dying on a signal (SIGSEGV), and xl's
  # xenstore handle failing ("Bad file descriptor"). Logged as VMV-XEN-RETRY, never hidden.
  local try rc why
  for try in 0 1 2; do
    xl -vvv create /etc/xen/$1.cfg >/tmp/xl-$1.log 2>&1; rc=$?
    [ $rc = 0 ] && return 0
    why=$(grep -m1 -e 'XZ decompression error' -e 'unable to XZ decompress' -e 'daemonizing child .* died' \
      -e 'Bad file descriptor' /tmp/xl-$1.log)
    [ -n "$why" ] || [ $rc -lt 128 ] || why="xl died on signal $((rc - 128))"
    { [ -n "$why" ] && [ $try -lt 2 ]; } || break
    echo "VMV-XEN-RETRY $1: $why"
    xl destroy "$1" >/dev/null 2>&1
  done
  grep -v -e '^domainbuilder' -e '^xc: detail' /tmp/xl-$1.log | tail -20
  [ $rc -lt 128 ] || echo "xl create $1: died on signal $((rc - 128))"
  return 1
}
wait_s=$(cat /etc/vmv/guest-wait 2>/dev/null || echo 300)
names=""
while read -r name type mem label; do
  [ -n "$name" ] || continue
  if create "$name"; then names="$names $name"; echo "$name $label" >> /tmp/vmv-labels; echo "dom0: created $name ($type) at $(up)s"
  else stage "guest:$name" FAIL "xl create failed (log above)"; fi
done < /etc/vmv/guests
domid_of() {  # NAME: `xl domid` has been seen failing once for a running guest under load: ask thrice
  local n
  for n in 1 2 3; do
    xl domid "$1" 2>/tmp/xl-domid && return 0
    echo "dom0: xl domid $1: $(cat /tmp/xl-domid)" >&2
    sleep 2
  done
  return 1
}
for name in $names; do
  log=/var/log/xen/console/guest-$name.log
  i=0
  while [ $i -lt "$wait_s" ] && ! grep -q VMV-GUEST-FACTS "$log" 2>/dev/null; do
    domid_of "$name" >/dev/null || break
    sleep 2; i=$((i + 2))
  done
  if facts=$(grep -m1 -a VMV-GUEST-FACTS "$log" 2>/dev/null) && id=$(domid_of "$name"); then
    stage "guest:$name" PASS "domid=$id up at $(up)s"
    echo "VMV-XEN-GUEST domid=$id ${facts#*VMV-GUEST-FACTS }"
  else
    tail -n 20 "$log" 2>/dev/null
    stage "guest:$name" FAIL "no facts line on its console after ${i}s ($(xl list "$name" 2>&1 | tail -1))"
  fi
done
[ -e /tmp/vmv-labels ] && while read -r name label; do grant_vmv "$name" "$label"; done < /tmp/vmv-labels
xl list

# ---- the VMV domain reached its entry (its console: /var/log/xen/console/guest-vmv.log)
if [ -s /run/vmv-domid ]; then
  log=/var/log/xen/console/guest-vmv.log
  i=0
  while [ $i -lt "$wait_s" ] && ! grep -q 'VMV-DOMP entry' "$log" 2>/dev/null; do
    xl domid vmv >/dev/null 2>&1 || break
    sleep 2; i=$((i + 2))
  done
  grep -a 'VMV-DOMP ' "$log" 2>/dev/null | sed 's/^/dom0: /'
  if grep -q 'VMV-DOMP entry' "$log" 2>/dev/null && ! grep -q 'VMV-DOMP FAIL' "$log"; then
    stage domp PASS "d$(cat /run/vmv-domid) at its entry: $(grep -a 'VMV-DOMP tpm' "$log" | head -1 | sed 's/.*VMV-DOMP //'), $(grep -a 'VMV-DOMP privcmd' "$log" | head -1 | sed 's/.*VMV-DOMP //')"
  else
    tail -n 30 "$log" 2>/dev/null
    stage domp FAIL "the VMV domain did not reach its entry after ${i}s ($(xl list vmv 2>&1 | tail -1))"
  fi
fi

# ---- payload
if [ -x /payload/run.sh ]; then
  echo "VMV-XEN-PAYLOAD-BEGIN"
  (cd /payload && ./run.sh); rc=$?
  echo "VMV-XEN-PAYLOAD-END"
  [ $rc = 0 ] && stage payload PASS "/payload/run.sh rc=0" || stage payload FAIL "/payload/run.sh rc=$rc"
fi

if [ -e /etc/vmv/hold ]; then
  echo "VMV-XEN-READY"
  while [ ! -e /run/vmv-poweroff ]; do sleep 1; done
fi
echo "VMV-XEN-DONE"
for name in $(xl list | awk 'NR > 2 { print $1 }'); do xl destroy "$name"; done
poweroff -f
