import CTSS2

// The TPM as an actor over ESYS. See docs/ARCHITECTURE.md.
