#!/usr/bin/env bash
# The kernel locator and page walker against a real Linux under QEMU (about 2 minutes; the kernel
# package is downloaded once into ~/.cache/vmv/introspection). See docs/introspection.md.
exec "$(dirname "$0")/../../scripts/test-introspection-qemu.sh"
