# Shared by scripts/xen/*.sh (sourced, not run): Debian's Xen 4.17 and Linux 6.1 as inputs,
# and the helpers that turn them into initramfs images for QEMU.
#
# Every input is a Debian package fetched with `apt-get download` into the cache
# ($VMV_CACHE or ~/.cache/vmv, folder xen/), never into the clone.

# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

XEN_SERIES=4.17
# The kernel ABI behind Debian's linux-image-amd64 metapackage (6.1.0-56-amd64 when written).
xen_kernel_version() {
  local v
  v=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }')
  echo "${KVER:-${v:-6.1.0-56-amd64}}"
}

XEN_CACHE=$(vmv_cache_dir)/xen
KVER=$(xen_kernel_version)
XEN_DEBS="$XEN_CACHE/debs"
XEN_ROOT="$XEN_CACHE/root-xen"            # the Xen .debs unpacked (tools, libraries, hypervisor)
XEN_LINUX="$XEN_CACHE/root-linux-$KVER"   # the kernel, its config and the few modules we use
XEN_LIBPATH="$XEN_ROOT/usr/lib/x86_64-linux-gnu:$XEN_ROOT/lib/x86_64-linux-gnu"

XEN_PACKAGES=(
  "xen-hypervisor-$XEN_SERIES-amd64" "xen-utils-$XEN_SERIES" xen-utils-common xenstore-utils
  libyajl2 "libxenmisc$XEN_SERIES" libxencall1 libxendevicemodel1 libxenevtchn1
  libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxenstore4 libxentoolcore1 libxentoollog1
)

# Modules the dom0 and the guests load (paths under lib/modules/$KVER/kernel).
XEN_MODULES=(
  drivers/xen/xen-evtchn.ko drivers/xen/xen-privcmd.ko drivers/xen/xenfs/xenfs.ko
  drivers/xen/xen-gntdev.ko drivers/xen/xen-gntalloc.ko
  drivers/net/ethernet/intel/e1000/e1000.ko
  drivers/net/xen-netback/xen-netback.ko drivers/net/xen-netfront.ko
)

xen_log() { echo "[xen $(date +%H:%M:%S)] $*" >&2; }
xen_die() { echo "xen: error: $*" >&2; exit 1; }

# Downloads what is missing and unpacks it once. Idempotent; safe to call from every script.
xen_fetch_inputs() {
  mkdir -p "$XEN_DEBS"
  local need=() p
  for p in "${XEN_PACKAGES[@]}" "linux-image-$KVER"; do
    compgen -G "$XEN_DEBS/${p}_*.deb" >/dev/null || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    xen_log "apt-get download ${need[*]} -> $XEN_DEBS"
    # `apt-get download` as root warns that _apt cannot write the folder; harmless.
    (cd "$XEN_DEBS" && apt-get download "${need[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed') ||
      xen_die "apt-get download failed for: ${need[*]} (run 'apt-get update'?)"
    for p in "${need[@]}"; do
      compgen -G "$XEN_DEBS/${p}_*.deb" >/dev/null || xen_die "apt-get download did not fetch $p"
    done
  fi
  if [ ! -e "$XEN_ROOT/.unpacked" ]; then
    rm -rf "$XEN_ROOT"; mkdir -p "$XEN_ROOT"
    for p in "${XEN_PACKAGES[@]}"; do dpkg -x "$XEN_DEBS/${p}"_*.deb "$XEN_ROOT" || xen_die "dpkg -x $p"; done
    touch "$XEN_ROOT/.unpacked"
  fi
  local m_missing=0 m
  for m in "${XEN_MODULES[@]}"; do [ -e "$XEN_LINUX/lib/modules/$KVER/kernel/$m" ] || m_missing=1; done
  if [ ! -e "$XEN_LINUX/.unpacked" ] || [ $m_missing = 1 ]; then
    # Only the kernel, its config and our modules: the full package is ~400 MB unpacked.
    rm -rf "$XEN_LINUX"; mkdir -p "$XEN_LINUX"
    local wanted=("./boot/*") m
    for m in "${XEN_MODULES[@]}"; do wanted+=("./lib/modules/$KVER/kernel/$m"); done
    dpkg-deb --fsys-tarfile "$XEN_DEBS/linux-image-${KVER}"_*.deb |
      tar -x -C "$XEN_LINUX" --wildcards "${wanted[@]}" || xen_die "unpacking linux-image-$KVER"
    touch "$XEN_LINUX/.unpacked"
  fi
}

# The hypervisor as QEMU's multiboot loader wants it: the gunzipped ELF.
xen_hypervisor_elf() {  # OUT
  gunzip -c "$XEN_ROOT/boot/xen-$XEN_SERIES-amd64.gz" > "$1" || xen_die "gunzip of the hypervisor"
}

# Copies ELF files into ROOT (at DEST) together with every shared library `ldd` names.
# Libraries go to ROOT/lib/x86_64-linux-gnu, the loader to ROOT/lib64.
xen_copy_libs() {  # ROOT FILE...
  local root=$1; shift
  local f lib
  mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
  for f in "$@"; do
    LD_LIBRARY_PATH="$XEN_LIBPATH" ldd "$f" >"$root/.ldd" 2>&1 || xen_die "ldd $f: $(cat "$root/.ldd")"
    if grep -q 'not found' "$root/.ldd"; then xen_die "ldd $f: $(grep 'not found' "$root/.ldd" | tr -s ' \t' ' ')"; fi
    awk '/=>/ { print $3 } /ld-linux/ { print $1 }' "$root/.ldd" | while read -r lib; do
      [ -e "$lib" ] || continue
      case "$lib" in
        */ld-linux-x86-64.so.2) cp -L "$lib" "$root/lib64/ld-linux-x86-64.so.2" ;;
        *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
      esac
    done
  done
  rm -f "$root/.ldd"
}

# Libraries that are dlopened, so `ldd` cannot see them: glibc's libgcc_s (pthread_cancel, used
# by xl) and, when a binary links tpm2-tss's TCTI loader, the TCTIs it may load.
xen_copy_dlopened() {  # ROOT FILE...
  local root=$1; shift
  local f d
  mkdir -p "$root/lib/x86_64-linux-gnu"
  cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"
  for f in "$@"; do
    # grep reads everything: with -q it could stop early, and under pipefail the SIGPIPE ldd got
    # would make the test false
    if ldd "$f" 2>/dev/null | grep libtss2-tctildr >/dev/null; then
      for d in device swtpm mssim cmd; do
        for lib in /usr/lib/x86_64-linux-gnu/libtss2-tcti-$d.so.0; do
          [ -e "$lib" ] && cp -L "$lib" "$root/lib/x86_64-linux-gnu/" && xen_copy_libs "$root" "$lib"
        done
      done
    fi
  done
}

# A root folder with busybox and its applets.
xen_busybox_root() {  # ROOT
  local r=$1 a
  command -v busybox >/dev/null || xen_die "busybox not found: run scripts/setup.sh --xen"
  rm -rf "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,root,var/log,var/lib,mnt,modules}
  cp "$(command -v busybox)" "$r/bin/busybox"
  for a in $(busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
}

# newc cpio, gzip -1: the kernel unpacks it; speed matters more than size here.
xen_cpio() {  # ROOT OUT
  (cd "$1" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$2" ||
    xen_die "building $2"
}

# A TCP port free on the loopback now.
xen_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A fact a guest printed about itself (domid, name, uuid, type, release, _stext, _etext, …) in
# the run whose logs are in OUT. Read from the serial log, so it works while the run holds
# (OUT/guests.txt is only written when the run ends).
xen_guest_fact() {  # OUT GUEST KEY
  local log="$1/serial.log"
  [ -e "$log" ] || log="$1/serial.txt"
  grep -a '^VMV-XEN-GUEST ' "$log" 2>/dev/null | tr -d '\r' |
    awk -v g="name=$2" -v k="$3" '{ for (i = 2; i <= NF; i++) if ($i == g) { for (j = 2; j <= NF; j++) { split($j, kv, "="); if (kv[1] == k) print kv[2] } } }' |
    tail -n 1
}
