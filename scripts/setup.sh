#!/usr/bin/env bash
# Installs what vmv needs on Debian 12, only what is missing. Safe to run again.
#   scripts/setup.sh            packages for building, the demo and the default tests
#   scripts/setup.sh --xen      also what the Xen-under-QEMU system tests need
#   scripts/setup.sh --fleet    also PostgreSQL and Chromium (verifier fleet tests)
#   scripts/setup.sh --introspection  also QEMU and busybox (scripts/test-introspection-qemu.sh)
set -euo pipefail

packages=(
  pkg-config gcc libc6-dev
  libtss2-dev libssl-dev libxen-dev libsqlite3-dev
  swtpm swtpm-tools tpm2-tools
  openssl xxd curl ca-certificates
  binutils python3 python3-jsonschema
)
for arg in "$@"; do
  case "$arg" in
    --xen) packages+=(qemu-system-x86 qemu-utils busybox-static cpio gzip xz-utils dpkg-dev bison flex checkpolicy m4 python3 make) ;;
    --fleet) packages+=(postgresql chromium) ;;
    --introspection) packages+=(qemu-system-x86 busybox-static cpio gzip python3) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Swift 6 toolchain: on PATH, or where the Swift Linux tarball is usually unpacked.
source "$(dirname "$0")/lib/common.sh"
ensure_swift_on_path || {
  echo "setup: no Swift toolchain found; install Swift 6 from https://www.swift.org/install/linux/ and put it on PATH" >&2
  exit 1
}
