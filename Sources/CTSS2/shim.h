#ifndef VMV_CTSS2_SHIM_H
#define VMV_CTSS2_SHIM_H
/* Umbrella header for tpm2-tss (ESYS 3.2). Only the TPM module imports this. */
#include <tss2/tss2_common.h>
#include <tss2/tss2_tpm2_types.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tcti_device.h>
#include <tss2/tss2_tcti_swtpm.h>

/* Swift does not import macros whose value is an expression over other macros, e.g.
 *   #define TPM2_RC_RETRY ((TPM2_RC) (TPM2_RC_WARN + 0x022))
 * so the ones the TPM module reasons about are re-exported here as typed constants. */

/* Response-code layers (bits 16..23 of a TSS2_RC). */
static const TSS2_RC CTSS2_RC_LAYER_MASK = TSS2_RC_LAYER_MASK;
static const TSS2_RC CTSS2_TPM_RC_LAYER = TSS2_TPM_RC_LAYER;
static const TSS2_RC CTSS2_TCTI_RC_LAYER = TSS2_TCTI_RC_LAYER;

/* TPM format-zero and warning codes that change what the caller does next. */
static const TPM2_RC CTSS2_RC_INITIALIZE = TPM2_RC_INITIALIZE;       /* 0x100: Startup missing, or repeated */
static const TPM2_RC CTSS2_RC_RETRY = TPM2_RC_RETRY;                 /* 0x922 */
static const TPM2_RC CTSS2_RC_YIELDED = TPM2_RC_YIELDED;             /* 0x908 */
static const TPM2_RC CTSS2_RC_TESTING = TPM2_RC_TESTING;             /* 0x90A */
static const TPM2_RC CTSS2_RC_OBJECT_MEMORY = TPM2_RC_OBJECT_MEMORY; /* 0x902 */
static const TPM2_RC CTSS2_RC_SESSION_MEMORY = TPM2_RC_SESSION_MEMORY; /* 0x903 */
static const TPM2_RC CTSS2_RC_FMT1 = TPM2_RC_FMT1;                   /* 0x080 */
static const TPM2_RC CTSS2_RC_HANDLE = TPM2_RC_HANDLE;               /* 0x08B (+ handle number) */
static const TPM2_RC CTSS2_RC_WARN = TPM2_RC_WARN;                   /* 0x900 */

/* TCTI failures that mean "the connection to the TPM is gone": reopen before the next command. */
static const TSS2_RC CTSS2_TCTI_RC_IO_ERROR = TSS2_TCTI_RC_IO_ERROR;
static const TSS2_RC CTSS2_TCTI_RC_NO_CONNECTION = TSS2_TCTI_RC_NO_CONNECTION;

/* Fixed TPM properties (TPM2_CAP_TPM_PROPERTIES) read by `TPM.info()`. */
static const TPM2_PT CTSS2_PT_FIXED = TPM2_PT_FIXED;
static const TPM2_PT CTSS2_PT_FAMILY_INDICATOR = TPM2_PT_FAMILY_INDICATOR;
static const TPM2_PT CTSS2_PT_LEVEL = TPM2_PT_LEVEL;
static const TPM2_PT CTSS2_PT_REVISION = TPM2_PT_REVISION;
static const TPM2_PT CTSS2_PT_DAY_OF_YEAR = TPM2_PT_DAY_OF_YEAR;
static const TPM2_PT CTSS2_PT_YEAR = TPM2_PT_YEAR;
static const TPM2_PT CTSS2_PT_MANUFACTURER = TPM2_PT_MANUFACTURER;
static const TPM2_PT CTSS2_PT_VENDOR_STRING_1 = TPM2_PT_VENDOR_STRING_1;
static const TPM2_PT CTSS2_PT_VENDOR_STRING_4 = TPM2_PT_VENDOR_STRING_4;
static const TPM2_PT CTSS2_PT_FIRMWARE_VERSION_1 = TPM2_PT_FIRMWARE_VERSION_1;
static const TPM2_PT CTSS2_PT_FIRMWARE_VERSION_2 = TPM2_PT_FIRMWARE_VERSION_2;
static const TPM2_PT CTSS2_PT_PCR_COUNT = TPM2_PT_PCR_COUNT;
static const TPM2_PT CTSS2_PT_NV_BUFFER_MAX = TPM2_PT_NV_BUFFER_MAX;

/* First handle of each handle type (TPM2_CAP_HANDLES). */
static const TPM2_HC CTSS2_TRANSIENT_FIRST = TPM2_TRANSIENT_FIRST;
static const TPM2_HC CTSS2_PERSISTENT_FIRST = TPM2_PERSISTENT_FIRST;
static const TPM2_HC CTSS2_LOADED_SESSION_FIRST = TPM2_LOADED_SESSION_FIRST;
static const TPM2_HC CTSS2_NV_INDEX_FIRST = TPM2_NV_INDEX_FIRST;

/* Function-like macros are not imported either: static inline wrappers. */
static inline void ctss2_tcti_finalize(TSS2_TCTI_CONTEXT *ctx) { Tss2_Tcti_Finalize(ctx); }

#endif
