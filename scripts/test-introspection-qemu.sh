#!/usr/bin/env bash
# Ground truth for the kernel locator and the page walker, against facts no one here wrote:
# Debian's Linux kernel (linux-image-amd64's, 6.1) boots under qemu-system-x86_64 (TCG, no KVM)
# with a busybox initramfs that prints its own /proc/kallsyms entries for _stext, _etext,
# __start_rodata, __end_rodata and linux_banner, and the memory map of a process that then spins
# in user space. QEMU's own dump-guest-memory and monitor (gva2gpa) are the references:
#   - `vmv introspect kernel` must find the slide, the text and rodata ranges and the banner the
#     guest printed, with no symbols;
#   - `vmv introspect translate --raw-cr3` must agree with gva2gpa on kernel and user addresses;
#   - a System.map made from a nokaslr boot's kallsyms confirms the other boots, one a page off
#     is refused, and Debian's 83-byte stub is refused.
# Four boots: 4-level (-cpu max,la57=off) and 5-level (-cpu max), each with KPTI on (the vCPU is
# caught on the user page table) and off; three with KASLR (at least two different slides), one
# without. Downloads are cached in ~/.cache/vmv/introspection (VMV_CACHE to move it).
#
# Usage: scripts/test-introspection-qemu.sh [--keep]      (--keep leaves the dumps in the work dir)
# Ends with "N passed, M failed"; exit 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
KEEP=""
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=--keep ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh --introspection || { echo "0 passed, 1 failed"; exit 1; }
ensure_swift_on_path
CACHE=$(vmv_cache_dir)/introspection
mkdir -p "$CACHE"

# The kernel behind Debian's linux-image-amd64 metapackage.
KVER=${KVER:-$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}')}
[ -n "$KVER" ] || { echo "cannot tell which kernel linux-image-amd64 depends on (apt-get update?)"; echo "0 passed, 1 failed"; exit 1; }
if ! ls "$CACHE"/linux-image-"$KVER"_*.deb >/dev/null 2>&1; then
  echo "downloading linux-image-$KVER"
  (cd "$CACHE" && apt-get download "linux-image-$KVER" >/dev/null) || { echo "apt-get download failed"; echo "0 passed, 1 failed"; exit 1; }
fi
KERNEL="$CACHE/vmlinuz-$KVER"
if [ ! -s "$KERNEL" ]; then
  dpkg-deb --fsys-tarfile "$CACHE"/linux-image-"$KVER"_*.deb | tar -xO "./boot/vmlinuz-$KVER" > "$KERNEL.tmp" && mv "$KERNEL.tmp" "$KERNEL"
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/vmv-introspection-qemu.XXXXXX")
cleanup() { [ -n "$KEEP" ] && echo "work dir kept: $W" || rm -rf "$W"; }
trap cleanup EXIT

# The initramfs: busybox and an /init that prints the facts, then spins in user space.
R="$W/root"
mkdir -p "$R"/{bin,proc,dev}
cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
cat > "$R/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "GT-UNAME $(uname -r)"
grep -E ' (_stext|_etext|_text|__start_rodata|__end_rodata|linux_banner|_sdata)$' /proc/kallsyms | sed 's/^/GT-SYM /'
sh -c 'echo "GT-BUSY-PID $$"; sed "s/^/GT-MAPS /" /proc/$$/maps; echo GT-BUSY-START; while :; do :; done' &
sleep 100000
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$W/initrd.gz"

swift build --product vmv >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
VMV="$(swift build --show-bin-path)/vmv"

python3 scripts/lib/introspection_qemu.py --kernel "$KERNEL" --initrd "$W/initrd.gz" --vmv "$VMV" --work "$W" $KEEP
