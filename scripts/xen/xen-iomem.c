/* xen-iomem: grant or revoke a domain's access to a range of MMIO frames
 * (XEN_DOMCTL_iomem_permission, checked by FLASK's flask_iomem_permission).
 *
 * dom0's VMV builder (scripts/xen/dom0-domp.sh) uses it once, to give up dom0's own access to
 * the TPM's registers before it creates the VMV domain with them (docs/domp.md, "The TPM"); the
 * system test uses it to show that dom0 cannot take them back. xl has no command for this.
 *
 *   xen-iomem DOMID FIRST-FRAME NR-FRAMES allow|deny      (frames in hex or decimal)
 *
 * Exit status 0 on success; otherwise the hypercall's error is printed and the status is 1. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenctrl.h>

static int number(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    *out = strtoul(s, &end, 0);
    return errno == 0 && *s != '\0' && *end == '\0';
}

int main(int argc, char **argv)
{
    unsigned long domid, first, nr;
    if (argc != 5 || !number(argv[1], &domid) || !number(argv[2], &first) || !number(argv[3], &nr) ||
        nr == 0 || domid > 0x7fef || (strcmp(argv[4], "allow") != 0 && strcmp(argv[4], "deny") != 0)) {
        fprintf(stderr, "usage: xen-iomem DOMID FIRST-FRAME NR-FRAMES allow|deny\n");
        return 2;
    }
    int allow = strcmp(argv[4], "allow") == 0;
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) {
        fprintf(stderr, "xen-iomem: cannot open the hypervisor interface: %s\n", strerror(errno));
        return 1;
    }
    int rc = xc_domain_iomem_permission(xch, (uint32_t)domid, first, nr, allow ? 1 : 0);
    int err = errno;
    xc_interface_close(xch);
    if (rc != 0) {
        fprintf(stderr, "xen-iomem: %s d%lu frames %#lx-%#lx: %s\n", allow ? "allow" : "deny", domid, first,
                first + nr - 1, strerror(err));
        return 1;
    }
    printf("xen-iomem: %s d%lu frames %#lx-%#lx\n", allow ? "allowed" : "denied", domid, first, first + nr - 1);
    return 0;
}
