/* xen-poke: a TEST-ONLY tool for scripts/test-xen.sh, never part of vmv (vmv maps guests
 * read-only). It answers, with libxenctrl's own code, what the test needs as ground truth,
 * and makes the one change the test wants detected:
 *   xen-poke translate DOMID VADDR   frame that libxc's xc_translate_foreign_address gives for
 *                                    VADDR through vCPU 0's page tables (MFN for PV)
 *   xen-poke poke DOMID VADDR        map that frame read-write and turn the first int3 padding
 *                                    byte (0xcc) at or after VADDR in its page into 0x90 (nop):
 *                                    padding between functions is never executed, so the guest
 *                                    keeps running while its kernel text has changed
 * Output: one line of key=value pairs. Exit 0 on success.
 * Build: gcc -O2 -o xen-poke xen-poke.c -lxenctrl -lxenforeignmemory */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "translate") && strcmp(argv[1], "poke"))) {
        fprintf(stderr, "usage: %s translate|poke DOMID VADDR\n", argv[0]);
        return 2;
    }
    uint32_t dom = strtoul(argv[2], NULL, 0);
    unsigned long long va = strtoull(argv[3], NULL, 0);
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) { perror("xc_interface_open"); return 1; }
    unsigned long frame = xc_translate_foreign_address(xch, dom, 0, va);
    if (!frame) { fprintf(stderr, "xen-poke: cannot translate 0x%llx in domain %u\n", va, dom); return 1; }
    if (!strcmp(argv[1], "translate")) {
        printf("vaddr=0x%llx frame=0x%lx\n", va, frame);
        return 0;
    }
    xenforeignmemory_handle *fm = xenforeignmemory_open(NULL, 0);
    if (!fm) { perror("xenforeignmemory_open"); return 1; }
    xen_pfn_t pfn = frame;
    int err = 0;
    unsigned char *p = xenforeignmemory_map(fm, dom, PROT_READ | PROT_WRITE, 1, &pfn, &err);
    if (!p || err) { fprintf(stderr, "xen-poke: writable map of 0x%lx failed (err %d, errno %d)\n", frame, err, errno); return 1; }
    size_t off = va & (XC_PAGE_SIZE - 1);
    while (off < XC_PAGE_SIZE && p[off] != 0xcc) off++;
    if (off == XC_PAGE_SIZE) { fprintf(stderr, "xen-poke: no int3 padding byte in the page after 0x%llx\n", va); return 1; }
    p[off] = 0x90;
    printf("vaddr=0x%llx frame=0x%lx offset=0x%zx old=cc new=%02x\n",
           (va & ~(unsigned long long)(XC_PAGE_SIZE - 1)) + off, frame, off, p[off]);
    xenforeignmemory_unmap(fm, p, 1);
    xenforeignmemory_close(fm);
    xc_interface_close(xch);
    return 0;
}
