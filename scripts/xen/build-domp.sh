#!/usr/bin/env bash
# Builds the VMV domain's image (the domP, docs/domp.md): Debian's Linux 6.1 kernel (the one the
# harness boots everywhere) and an initramfs holding busybox, `vmv` with its shared libraries
# (and the TCTI tpm2-tss dlopens), the privcmd/evtchn/netfront modules, /init
# (scripts/xen/domp-init.sh) and /etc/vmv (the entry and the configuration folder), plus the xl
# configuration dom0 creates it from.
#
# Usage: scripts/xen/build-domp.sh --vmv BINARY [--entry FILE] [--etc DIR] [--tpm passthrough|none]
#                                  [--memory MiB] [--out DIR]
#   --vmv BINARY    the vmv executable to carry
#   --entry FILE    what /init hands over to (default: `vmv serve --config /etc/vmv/vmv.toml`)
#   --etc DIR       copied to the image's /etc/vmv (vmv.toml, certificates, …)
#   --memory MiB    the domain's memory (default 768: the initramfs unpacks into half of it)
#   --tpm MODE      passthrough (default): the xl configuration gives the VMV the TPM's TIS
#                   registers (iomem) and the kernel probes them; none: no TPM
#   --out DIR       default .build/xen/domp
# Writes DIR/vmlinuz, DIR/domp.cpio.gz, DIR/domp.cfg and DIR/manifest (SHA-256 of the three: what
# dom0's builder measures into the launch PCR before it creates the domain).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

VMV_BIN=""; ENTRY=""; ETC=""; TPM_MODE=passthrough; MEMORY=768; OUT="$PWD/.build/xen/domp"
while [ $# -gt 0 ]; do
  case "$1" in
    --vmv) VMV_BIN=$(readlink -f "$2"); shift ;;
    --entry) ENTRY=$(readlink -f "$2"); shift ;;
    --etc) ETC=$(readlink -f "$2"); shift ;;
    --tpm) TPM_MODE=$2; shift ;;
    --memory) MEMORY=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) xen_die "build-domp: unknown option $1 (see --help)" ;;
  esac
  shift
done
[ -n "$VMV_BIN" ] && [ -x "$VMV_BIN" ] || xen_die "build-domp: --vmv BINARY is required (an executable)"
case "$TPM_MODE" in passthrough|none) ;; *) xen_die "build-domp: --tpm must be passthrough or none" ;; esac
[[ "$MEMORY" =~ ^[0-9]+$ ]] || xen_die "build-domp: --memory must be a number of MiB"
[ -z "$ETC" ] || [ -d "$ETC" ] || xen_die "build-domp: --etc $ETC is not a folder"
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
xen_fetch_inputs

R=$(mktemp -d); trap 'rm -rf "$R"' EXIT
xen_busybox_root "$R"
mkdir -p "$R/usr/local/bin" "$R/etc/vmv"
strip -o "$R/usr/local/bin/vmv" "$VMV_BIN"
ln -s /usr/local/bin/vmv "$R/usr/sbin/vmv"
xen_copy_libs "$R" "$R/usr/local/bin/vmv"
xen_copy_dlopened "$R" "$R/usr/local/bin/vmv"
for m in drivers/xen/xen-privcmd.ko drivers/xen/xen-evtchn.ko drivers/net/xen-netfront.ko; do
  cp "$XEN_LINUX/lib/modules/$KVER/kernel/$m" "$R/modules/"
done
install -m 755 "$HERE/domp-init.sh" "$R/init"
[ -z "$ETC" ] || cp -a "$ETC/." "$R/etc/vmv/"
if [ -n "$ENTRY" ]; then install -m 755 "$ENTRY" "$R/etc/vmv/entry"
else
  printf '#!/bin/sh\n# the VMV daemon (docs/domp.md)\nexec vmv serve --config /etc/vmv/vmv.toml\n' > "$R/etc/vmv/entry"
  chmod 755 "$R/etc/vmv/entry"
fi
# Reproducible bytes for the same inputs: fixed times, sorted entries (the launch PCR and the
# reference values are digests of these files).
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -1 -n) > "$OUT/domp.cpio.gz"
cp "$XEN_LINUX/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# dom0 creates it from this (docs/domp.md). A fixed UUID: the VMV domain's identity does not
# change from boot to boot, so its platform records do not either.
CMDLINE="console=hvc0 rdinit=/init loglevel=4"
{
  echo '# The VMV domain (domP): PV (Xen 4.17 refuses foreign mappings by a translated domain'
  echo '# other than the hardware domain), labelled vmv_t (policy/vmv.te).'
  echo 'name = "vmv"'
  echo 'type = "pv"'
  echo 'uuid = "766d7600-0000-4000-8000-000000000001"'
  echo 'kernel = "/domp/vmlinuz"'
  echo 'ramdisk = "/domp/domp.cpio.gz"'
  if [ "$TPM_MODE" = passthrough ]; then
    # The TPM's TIS registers (5 localities from 0xfed40000); a PV domain has no ACPI, so the
    # driver is told where they are, and polls (no interrupt is passed through).
    echo "extra = \"$CMDLINE tpm_tis.force=1 tpm_tis.interrupts=0\""
    echo 'iomem = [ "fed40,5" ]'
  else
    echo "extra = \"$CMDLINE\""
  fi
  echo "memory = $MEMORY"
  echo 'vcpus = 1'
  echo 'seclabel = "system_u:system_r:vmv_t"'
  echo 'vif = [ "ip=10.0.3.2,script=/etc/vmv/vif-domp.sh" ]'
  echo 'on_crash = "preserve"'
} > "$OUT/domp.cfg"
(cd "$OUT" && sha256sum vmlinuz domp.cpio.gz domp.cfg) > "$OUT/manifest"
xen_log "domP image in $OUT: $(stat -c%s "$OUT/domp.cpio.gz") B initramfs, tpm $TPM_MODE"
cat "$OUT/manifest" >&2
