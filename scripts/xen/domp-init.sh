#!/bin/sh
# /init of the VMV domain (domP) image built by scripts/xen/build-domp.sh: a PV domain labelled
# vmv_t that dom0 creates at boot (docs/domp.md). It loads privcmd unrestricted (Debian's 6.1
# kernel otherwise blocks every hypercall of a domU without a target domain), finds the TPM
# dom0 handed over (tpm_tis.force=1 on the command line: a PV domain has no ACPI), brings up
# its vif, and hands over to the image's entry (/etc/vmv/entry: `vmv serve` by default).
#
# Lines for the host start with "VMV-DOMP " on the domain's console (dom0 logs it to
# /var/log/xen/console/guest-vmv.log).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# /proc first: a Swift program reads its arguments from /proc/self/cmdline.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp /var/lib/vmv
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
exec >/dev/console 2>&1
say() { echo "VMV-DOMP $*"; }
hostname vmv
# The initramfs is unpacked into a tmpfs of half the domain's memory: a cut image is not this image.
dmesg | grep -q 'Initramfs unpacking failed' &&
  say "FAIL initramfs: $(dmesg | grep -m1 'Initramfs unpacking failed' | sed 's/^\[[^]]*\] //') (give the domain more memory: build-domp.sh --memory)"

# privcmd: unrestricted=1, or Xen never sees the VMV's hypercalls (FLASK does the confining).
insmod /modules/xen-privcmd.ko unrestricted=1 || say "FAIL privcmd: insmod xen-privcmd.ko unrestricted=1"
insmod /modules/xen-evtchn.ko || say "FAIL evtchn"
insmod /modules/xen-netfront.ko || say "FAIL netfront"
[ -c /dev/xen/privcmd ] && say "privcmd loaded unrestricted"

if [ -c /dev/tpmrm0 ]; then
  say "tpm /dev/tpmrm0 TPM $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null).x"
else
  say "tpm none"
fi

# The vif dom0's builder gave it: 10.0.3.2 on a point-to-point link to dom0 (10.0.3.1), which
# relays the API port (docs/domp.md, "Networking").
ip link set lo up
i=0; while [ $i -lt 20 ] && ! ip link show eth0 >/dev/null 2>&1; do sleep 1; i=$((i + 1)); done
if ip addr add 10.0.3.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.3.1; then
  say "network eth0 10.0.3.2"
else
  say "FAIL network: $(ip link 2>&1 | tr '\n' ' ')"
fi

say "entry $(cut -d' ' -f1 /proc/uptime)s"
/etc/vmv/entry
say "entry ended rc=$?"
while true; do sleep 3600; done
