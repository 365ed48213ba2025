#!/usr/bin/env bash
# Builds a FLASK-enabled Xen 4.17 hypervisor from Debian's own packages only: Debian's `xen`
# source package (its patches applied) with the config of the matching Debian hypervisor .deb,
# plus CONFIG_XSM, CONFIG_XSM_FLASK and CONFIG_XSM_FLASK_POLICY. Only `xen/` is built (about a
# minute on 2 cores). Debian's own hypervisor has no XSM (`# CONFIG_XSM is not set`).
#
# Usage: scripts/xen/build-flask-xen.sh [--print-path] [--force]
#   --print-path  print only the hypervisor's path on the last line (for other scripts)
#   --force       rebuild even when the cached result matches
# Env:   XEN_SOURCE_VERSION  the `xen` source version (default: the newest one that the main
#                            archive serves both as source and as xen-hypervisor .deb; the
#                            security pool's source is not served here)
#        JOBS                make -j (default 2)
# Result (cached outside the clone, in ~/.cache/vmv/xen/flask/):
#   xen-<version>-flask          the hypervisor (multiboot ELF; run.sh --xen-image)
#   xen-<version>-flask.config   its config
#   xen-<version>/               the unpacked source (its tools/flask/policy builds policies)
#   build-<version>.log
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
PRINT=0; FORCE=0
for a in "$@"; do
  case "$a" in
    --print-path) PRINT=1 ;;
    --force) FORCE=1 ;;
    *) xen_die "unknown option $a" ;;
  esac
done
say() { if [ $PRINT = 1 ]; then echo "$*" >&2; else echo "$*"; fi; }
for t in make gcc flex bison checkpolicy m4 python3 dpkg-source; do
  command -v $t >/dev/null || xen_die "$t not found: run scripts/setup.sh --xen"
done
F="$XEN_CACHE/flask"; mkdir -p "$F"
T0=$SECONDS

# ---- 1. a deb-src entry for the distribution's main archive, made from its own deb entry
have_src() { apt-cache showsrc xen 2>/dev/null | grep -q '^Version:'; }
if ! have_src; then
  [ "$(id -u)" = 0 ] || xen_die "no deb-src entry for xen, and adding one needs root"
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  python3 - "$codename" > /etc/apt/sources.list.d/vmv-deb-src.sources <<'EOF'
# Copies the deb822 entry of the main archive (the one serving Suites: <codename>) as deb-src.
import glob, sys
codename = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line.startswith(" "):
                continue
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
        if "deb" in fields.get("Types", "").split() and codename in fields.get("Suites", "").split():
            print("# Added by vmv scripts/xen/build-flask-xen.sh: Debian's xen source package")
            print("Types: deb-src")
            for k in ("URIs", "Components", "Signed-By"):
                if k in fields:
                    print("%s: %s" % (k, fields[k]))
            print("Suites: %s" % codename)
            sys.exit(0)
sys.exit("no deb822 entry for the main archive (Suites: %s) in /etc/apt/sources.list.d" % codename)
EOF
  [ -s /etc/apt/sources.list.d/vmv-deb-src.sources ] || { rm -f /etc/apt/sources.list.d/vmv-deb-src.sources; xen_die "could not derive a deb-src entry"; }
  say "added /etc/apt/sources.list.d/vmv-deb-src.sources; apt-get update"
  apt-get update -qq || xen_die "apt-get update failed"
  have_src || xen_die "apt-cache still knows no xen source after adding a deb-src entry"
fi

# ---- 2. the version: served as source and as a hypervisor .deb by the main archive
if [ -z "${XEN_SOURCE_VERSION:-}" ]; then
  XEN_SOURCE_VERSION=$(
    comm -12 <(apt-cache showsrc xen | awk '/^Version:/ { print $2 }' | sort -u) \
             <(apt-cache madison "xen-hypervisor-$XEN_SERIES-amd64" | grep -v -- '-security' | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | sort -u) |
    sort -V | tail -1)
  [ -n "$XEN_SOURCE_VERSION" ] || xen_die "no xen version is served both as source and as xen-hypervisor-$XEN_SERIES-amd64 by the main archive"
fi
V=$XEN_SOURCE_VERSION
UP=${V%-*}                    # upstream part: the source folder's suffix
UP=${UP#*:}
OUTX="$F/xen-$UP-flask"; SRC="$F/xen-$UP"; LOG="$F/build-$UP.log"
if [ $FORCE = 0 ] && [ -s "$OUTX" ] && [ -s "$OUTX.config" ] && grep -q '^CONFIG_XSM_FLASK=y' "$OUTX.config"; then
  say "cached: $OUTX (xen $V with FLASK)"
  [ $PRINT = 1 ] && echo "$OUTX"
  exit 0
fi

# ---- 3. Debian's source package and the matching hypervisor .deb (for its config)
if [ ! -e "$SRC/.unpacked" ]; then
  rm -rf "$SRC"
  say "apt-get source xen=$V"
  (cd "$F" && apt-get source -qq "xen=$V" > "$F/source-$UP.log" 2>&1) ||
    xen_die "apt-get source xen=$V failed: $(tail -3 "$F/source-$UP.log")"
  [ -d "$SRC/xen" ] || xen_die "apt-get source did not unpack $SRC"
  touch "$SRC/.unpacked"
fi
HV="$F/hypervisor-$UP"
if [ ! -e "$HV/boot/xen-$XEN_SERIES-amd64.config" ]; then
  rm -rf "$HV"; mkdir -p "$HV"
  (cd "$F" && apt-get download -qq "xen-hypervisor-$XEN_SERIES-amd64=$V" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$F"/xen-hypervisor-$XEN_SERIES-amd64_*"${UP}"*_amd64.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || xen_die "apt-get download xen-hypervisor-$XEN_SERIES-amd64=$V failed"
  dpkg -x "$deb" "$HV"
fi

# ---- 4. Debian's config + XSM/FLASK, build xen/ only
cd "$SRC/xen"
MA=(XEN_COMPILE_ARCH=x86_64 XEN_TARGET_ARCH=x86_64)   # as debian/rules passes them
cp "$HV/boot/xen-$XEN_SERIES-amd64.config" .config
grep -q '^# CONFIG_XSM is not set' .config || grep -q '^CONFIG_XSM=y' .config ||
  xen_die "Debian's config has no CONFIG_XSM line; cannot turn XSM on reliably"
sed -i 's/^# CONFIG_XSM is not set$/CONFIG_XSM=y\nCONFIG_XSM_FLASK=y\nCONFIG_XSM_FLASK_POLICY=y/' .config
say "make olddefconfig; make -j${JOBS:-2} (log: $LOG)"
{
  make "${MA[@]}" olddefconfig
  echo "--- config changes against Debian's:"
  diff <(grep -v '^#' "$HV/boot/xen-$XEN_SERIES-amd64.config" | sort) <(grep -v '^#' .config | sort) || true
  make "${MA[@]}" -j"${JOBS:-2}"
} > "$LOG" 2>&1 || xen_die "hypervisor build failed: $(tail -5 "$LOG")"
for opt in CONFIG_XSM CONFIG_XSM_FLASK CONFIG_XSM_FLASK_POLICY; do
  grep -q "^$opt=y" .config || xen_die "$opt is not set after olddefconfig (see $LOG)"
done
[ -s xen ] || xen_die "no xen/xen after the build (see $LOG)"
cp xen "$OUTX.tmp" && mv "$OUTX.tmp" "$OUTX"
cp .config "$OUTX.config"
say "built $OUTX ($(stat -c%s "$OUTX") bytes, xen $V, CONFIG_XSM_FLASK=y) in $((SECONDS - T0))s"
[ $PRINT = 1 ] && echo "$OUTX"
exit 0
