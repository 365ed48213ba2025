import CTSS2
import TPMWire

extension TPM {
    /// TPM2_ReadClock: the TPM's clock and its reset and restart counters, without a key or
    /// a quote. The measurement log reads `resetCount` on start to tell a TPM reset (PCRs
    /// cleared: a new epoch) from a restart of the VMV on the same TPM boot. Unsigned, so
    /// only local decisions rest on it; a verifier reads the counters from a quote.
    public func readClock() throws(TPMError) -> TPMSClockInfo {
        try perform { esys throws(TPMError) in try esys.readClock() }
    }
}

extension ESYSConnection {
    func readClock() throws(TPMError) -> TPMSClockInfo {
        let operation = "Esys_ReadClock"
        var time: UnsafeMutablePointer<TPMS_TIME_INFO>?
        try command(operation) {
            Esys_ReadClock(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &time)
        }
        defer { Esys_Free(time) }
        guard let info = time?.pointee.clockInfo else {
            throw TPMError(.tss, operation: operation, reason: "ESYS returned no time")
        }
        return TPMSClockInfo(clock: info.clock, resetCount: info.resetCount, restartCount: info.restartCount, safe: info.safe != 0)
    }
}
