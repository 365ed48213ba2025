#ifndef VMV_CTSS2_SHIM_H
#define VMV_CTSS2_SHIM_H
/* Umbrella header for tpm2-tss (ESYS 3.2). Only the TPM module imports this. */
#include <tss2/tss2_common.h>
#include <tss2/tss2_tpm2_types.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>
#include <tss2/tss2_rc.h>
#endif
