#ifndef VMV_CXEN_SHIM_H
#define VMV_CXEN_SHIM_H
/* Umbrella header for the Xen 4.17 tool libraries. Only the Introspection module imports this. */
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>
#endif
