#!/bin/sh
# /init of the tiny guest initramfs (PV and PVH). It prints facts that only the guest itself
# can know, as ground truth for the tests: its name (from the kernel command line), its
# UUID as Xen gave it, the guest type, the kernel release and where its own kernel sits
# (/proc/kallsyms, read as root so the addresses are real).
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/console 2>&1

name=$(sed -n 's/.*vmvname=\([^ ]*\).*/\1/p' /proc/cmdline)
sym() { awk -v s="$1" '$3 == s { print "0x" $1; exit }' /proc/kallsyms; }
facts="name=$name release=$(uname -r) uuid=$(cat /sys/hypervisor/uuid 2>/dev/null)"
facts="$facts type=$(cat /sys/hypervisor/guest_type 2>/dev/null)"
facts="$facts _text=$(sym _text) _stext=$(sym _stext) _etext=$(sym _etext)"
facts="$facts __start_rodata=$(sym __start_rodata) __end_rodata=$(sym __end_rodata)"
facts="$facts linux_banner=$(sym linux_banner)"
echo "VMV-GUEST-FACTS $facts"
i=0
while true; do
  i=$((i + 1))
  sleep 10
  echo "VMV-GUEST-ALIVE name=$name n=$i"
done
