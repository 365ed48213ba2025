

// Guest memory: Xen foreign mapping, ELF cores, page walk, kernel locator.
