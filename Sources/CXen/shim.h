#ifndef VMV_CXEN_SHIM_H
#define VMV_CXEN_SHIM_H
/* Umbrella header for the Xen 4.17 tool libraries. Only the Introspection module imports this.
 *
 * The helpers below exist because Swift cannot use these parts of the C API directly: macros
 * (HVM_SAVE_CODE, xen_cr3_to_pfn, XC_PAGE_SHIFT), registers declared through anonymous unions
 * (__DECL_REG in cpu_user_regs), and the stdio logger cast. They copy plain values out and do
 * nothing else. */
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>
#include <xen/hvm/save.h>

/* The vCPU registers vmv reads, the same fields for PV (vcpu_guest_context) and PVH/HVM
 * (the HVM CPU save record). */
typedef struct vmv_xen_vcpu_registers {
    uint64_t rip, rsp, rflags;
    uint64_t cr0, cr2, cr3, cr4;
    uint64_t efer;             /* HVM/PVH only; 0 for PV (a 64-bit PV guest is always in long mode) */
    uint64_t user_cr3;         /* PV only: ctrlreg[1], the user-mode page table (KPTI); 0 otherwise */
    uint64_t page_table_frame; /* frame of the top-level page table: an MFN for PV
                                  (xen_cr3_to_pfn of ctrlreg[3]), a GFN for PVH/HVM (cr3 >> 12) */
    uint64_t user_page_table_frame; /* PV only: frame of ctrlreg[1]; 0 otherwise */
    uint64_t fs_base, gs_base_kernel, gs_base_user;
    uint32_t online;           /* PV: VGCF_online; HVM: 1 */
    uint16_t cs;               /* code segment selector: its low bits are the privilege level */
} vmv_xen_vcpu_registers;

/* xc_vcpu_getcontext for a 64-bit PV domain. Returns 0, or -1 with errno set. */
static inline int vmv_xen_pv_vcpu_registers(xc_interface *xch, uint32_t domid, uint32_t vcpu,
                                             vmv_xen_vcpu_registers *out)
{
    vcpu_guest_context_any_t ctx;
    memset(&ctx, 0, sizeof ctx);
    memset(out, 0, sizeof *out);
    if (xc_vcpu_getcontext(xch, domid, vcpu, &ctx) != 0)
        return -1;
    out->rip = ctx.x64.user_regs.rip;
    out->rsp = ctx.x64.user_regs.rsp;
    out->rflags = ctx.x64.user_regs.rflags;
    out->cr0 = ctx.x64.ctrlreg[0];
    out->cr2 = ctx.x64.ctrlreg[2];
    out->cr3 = ctx.x64.ctrlreg[3];
    out->cr4 = ctx.x64.ctrlreg[4];
    out->user_cr3 = ctx.x64.ctrlreg[1];
    out->page_table_frame = xen_cr3_to_pfn_x86_64(ctx.x64.ctrlreg[3]);
    out->user_page_table_frame = xen_cr3_to_pfn_x86_64(ctx.x64.ctrlreg[1]);
    out->fs_base = ctx.x64.fs_base;
    out->gs_base_kernel = ctx.x64.gs_base_kernel;
    out->gs_base_user = ctx.x64.gs_base_user;
    out->online = (ctx.x64.flags & VGCF_online) ? 1 : 0;
    out->cs = ctx.x64.user_regs.cs;
    return 0;
}

/* The HVM CPU save record (HVM_SAVE_CODE(CPU)) of one vCPU of a PVH/HVM domain.
 * Returns 0, or -1 with errno set. */
static inline int vmv_xen_hvm_vcpu_registers(xc_interface *xch, uint32_t domid, uint32_t vcpu,
                                              vmv_xen_vcpu_registers *out)
{
    struct hvm_hw_cpu cpu;
    memset(&cpu, 0, sizeof cpu);
    memset(out, 0, sizeof *out);
    if (vcpu > UINT16_MAX) { errno = EINVAL; return -1; }
    if (xc_domain_hvm_getcontext_partial(xch, domid, HVM_SAVE_CODE(CPU), (uint16_t)vcpu,
                                         &cpu, sizeof cpu) != 0)
        return -1;
    out->rip = cpu.rip;
    out->rsp = cpu.rsp;
    out->rflags = cpu.rflags;
    out->cr0 = cpu.cr0;
    out->cr2 = cpu.cr2;
    out->cr3 = cpu.cr3;
    out->cr4 = cpu.cr4;
    out->efer = cpu.msr_efer;
    out->page_table_frame = cpu.cr3 >> XC_PAGE_SHIFT;
    out->fs_base = cpu.fs_base;
    out->gs_base_kernel = cpu.gs_base;
    out->gs_base_user = cpu.shadow_gs;
    out->online = 1;
    out->cs = (uint16_t)cpu.cs_sel;
    return 0;
}

/* A libxentoollog logger that stays quiet below XTL_CRITICAL: vmv reports failures itself,
 * with the call, domain and errno, instead of libxc's own stderr lines. */
static inline xentoollog_logger *vmv_xen_quiet_logger(void)
{
    return (xentoollog_logger *)xtl_createlogger_stdiostream(stderr, XTL_CRITICAL, 0);
}

static inline uint64_t vmv_xen_page_shift(void) { return XC_PAGE_SHIFT; }
#endif
