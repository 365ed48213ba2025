import CTSS2
import FoundationEssentials
import Logging
import TPMWire

/// The TPM, as an actor over tpm2-tss ESYS.
///
/// Everything that crosses this API is a Swift value (`PCRSelection`, `PCRValues`, `TPMSAttest`,
/// `TPMTSignature`, byte arrays); the C structures stay inside the module. The actor runs on a
/// thread of its own (ESYS blocks on I/O), and each operation is atomic: it finishes, including
/// flushing whatever transient objects and sessions it loaded, before the next one starts.
///
/// A transport failure (the TPM or swtpm went away) fails the operation with a `.transport`
/// error and drops the ESYS context; the next operation opens a new one, sends TPM2_Startup
/// if the TPM needs it, and carries on.
public actor TPM {
    private let executor: TPMThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// The TCTI this actor talks to (for `simulator`, the swtpm TCTI of the simulator).
    public nonisolated let tcti: TCTIConfiguration
    /// The simulator this actor started and stops on `close()`; nil for any other TPM, and
    /// for a simulator that was already running.
    private var ownedSimulator: TPMSimulator?
    public nonisolated let retryPolicy: RetryPolicy
    let logger: Logger
    private var connection: ESYSConnection?
    private var closed = false

    /// Opens a TPM. `simulator` starts a private swtpm (provisioned on first use) unless one is
    /// already running for that state directory, in which case it is shared and left running.
    public static func open(
        _ tcti: TCTIConfiguration,
        retryPolicy: RetryPolicy = .default,
        logger: Logger = Logger(label: "vmv.tpm")
    ) async throws(TPMError) -> TPM {
        var simulator: TPMSimulator?
        var resolved = tcti
        if case .simulator(let directory) = tcti {
            var state = directory ?? TPMSimulator.defaultStateDirectory()
            if !state.hasPrefix("/") { state = FileManager.default.currentDirectoryPath + "/" + state }
            if let running = TPMSimulator.running(stateDirectory: state) {
                resolved = running.tcti
                logger.debug("using the running simulator", metadata: ["state": "\(state)", "tcti": "\(resolved)"])
            } else {
                let started = try TPMSimulator.start(stateDirectory: state, logger: logger)
                simulator = started
                resolved = started.tcti
            }
        }
        let tpm = TPM(resolved, simulator: simulator, retryPolicy: retryPolicy, logger: logger)
        do {
            try await tpm.connect()
        } catch {
            await tpm.close()
            throw error
        }
        return tpm
    }

    /// Takes over a simulator the caller started: it is stopped by `close()`.
    public static func open(
        simulator: TPMSimulator,
        retryPolicy: RetryPolicy = .default,
        logger: Logger = Logger(label: "vmv.tpm")
    ) async throws(TPMError) -> TPM {
        let tpm = TPM(simulator.tcti, simulator: simulator, retryPolicy: retryPolicy, logger: logger)
        try await tpm.connect()
        return tpm
    }

    private init(_ tcti: TCTIConfiguration, simulator: TPMSimulator?, retryPolicy: RetryPolicy, logger: Logger) {
        self.executor = TPMThreadExecutor()
        self.tcti = tcti
        self.ownedSimulator = simulator
        self.retryPolicy = retryPolicy
        self.logger = logger
    }

    deinit {
        ownedSimulator?.stop()
        executor.shutdown()
    }

    /// Releases the ESYS context and stops a simulator this actor started. Later calls fail.
    public func close() {
        closed = true
        connection = nil
        ownedSimulator?.stop()
        ownedSimulator = nil
    }

    private func connect() throws(TPMError) {
        _ = try esys()
    }

    /// The open ESYS context, opened anew after a failure broke the previous one.
    private func esys() throws(TPMError) -> ESYSConnection {
        guard !closed else { throw TPMError(.configuration, operation: "TPM", reason: "the TPM was closed") }
        if let connection, !connection.isBroken { return connection }
        if connection != nil { logger.info("reopening the TPM after a failure", metadata: ["tcti": "\(tcti)"]) }
        connection = nil
        let fresh = try ESYSConnection(tcti, retryPolicy: retryPolicy, logger: logger)
        try fresh.startup()
        if !tcti.hasResourceManager {
            let flushed = try fresh.flushLeftovers()
            if flushed > 0 {
                logger.warning("flushed transient objects and sessions left in the TPM by an earlier run",
                               metadata: ["count": "\(flushed)"])
            }
        }
        connection = fresh
        return fresh
    }

    /// Runs one operation on the open context. A failure that broke the context (transport,
    /// TSS state) drops it, so that the next operation starts on a fresh one.
    func perform<T>(_ body: (ESYSConnection) throws(TPMError) -> T) throws(TPMError) -> T {
        let connection = try esys()
        do {
            return try body(connection)
        } catch {
            if connection.isBroken { self.connection = nil }
            throw error
        }
    }

    // MARK: Information

    public func info() throws(TPMError) -> TPMInfo {
        try perform { esys throws(TPMError) in
            let p = try esys.properties(from: CTSS2_PT_FIXED, count: 64)
            let vendor = (0..<4).map { TPMInfo.characters(p[CTSS2_PT_VENDOR_STRING_1 + UInt32($0)] ?? 0) }.joined()
            return TPMInfo(
                manufacturer: TPMInfo.characters(p[CTSS2_PT_MANUFACTURER] ?? 0),
                manufacturerID: p[CTSS2_PT_MANUFACTURER] ?? 0,
                vendorString: String(vendor.reversed().drop(while: { $0 == " " }).reversed()),
                firmwareVersion: UInt64(p[CTSS2_PT_FIRMWARE_VERSION_1] ?? 0) << 32 | UInt64(p[CTSS2_PT_FIRMWARE_VERSION_2] ?? 0),
                specFamily: TPMInfo.characters(p[CTSS2_PT_FAMILY_INDICATOR] ?? 0),
                specLevel: p[CTSS2_PT_LEVEL] ?? 0,
                specRevision: p[CTSS2_PT_REVISION] ?? 0,
                specYear: p[CTSS2_PT_YEAR] ?? 0,
                specDayOfYear: p[CTSS2_PT_DAY_OF_YEAR] ?? 0,
                pcrCount: Int(p[CTSS2_PT_PCR_COUNT] ?? 24),
                pcrBanks: try esys.pcrBanks())
        }
    }

    /// The allocated PCR banks, in the TPM's order.
    public func allocatedBanks() throws(TPMError) -> [TPMAlgorithm] {
        try perform { esys throws(TPMError) in
            try esys.pcrBanks().banks.filter { !$0.pcrs.isEmpty }.map(\.hash)
        }
    }

    /// Handles currently in use, of the type `first` starts (transient objects by default).
    /// A diagnostic: without a resource manager, a leak shows here.
    public func handles(first: UInt32 = 0x8000_0000) throws(TPMError) -> [UInt32] {
        try perform { esys throws(TPMError) in try esys.handles(first: first) }
    }

    // MARK: PCRs

    /// Reads every PCR of `selection`. TPM2_PCR_Read returns at most eight values a call, so
    /// the selection is read in pieces; if the PCR update counter moves between pieces, the
    /// whole read starts again, so the values all come from one state of the TPM.
    public func readPCRs(_ selection: PCRSelection) throws(TPMError) -> PCRValues {
        try perform { esys throws(TPMError) in try readPCRs(selection, esys) }
    }

    /// The attempts a read gets when the PCRs keep changing under it.
    static let consistentReadAttempts = 5

    func readPCRs(_ selection: PCRSelection, _ esys: ESYSConnection) throws(TPMError) -> PCRValues {
        let operation = "PCR read \(selection)"
        try checkSelection(selection, esys, operation)
        for _ in 0..<Self.consistentReadAttempts {
            var values = PCRValues()
            var remaining = selection.pcrsByBank
            var counter: UInt32?
            var consistent = true
            while !remaining.isEmpty, consistent {
                // Ask for what is left in the order of `selection`; the TPM says what it read.
                let request = PCRSelection(banks: selection.banks.compactMap { bank in
                    remaining[bank.hash].map { PCRSelection.Bank(hash: bank.hash, pcrs: Array($0)) }
                })
                let (read, digests, updateCounter) = try esys.pcrRead(request)
                let pairs = read.pairs
                guard !pairs.isEmpty else {
                    throw TPMError(.unexpectedResponse, operation: operation,
                                   reason: "the TPM returned no value for \(request)")
                }
                guard pairs.count == digests.count else {
                    throw TPMError(.unexpectedResponse, operation: operation,
                                   reason: "the TPM returned \(digests.count) values for \(pairs.count) PCRs")
                }
                if let counter, counter != updateCounter {
                    consistent = false
                    break
                }
                counter = updateCounter
                for ((hash, pcr), digest) in zip(pairs, digests) {
                    guard remaining[hash]?.remove(pcr) != nil else {
                        throw TPMError(.unexpectedResponse, operation: operation,
                                       reason: "the TPM returned \(hash.name):\(pcr), which was not asked for")
                    }
                    if remaining[hash]?.isEmpty == true { remaining[hash] = nil }
                    values[hash, pcr] = digest
                }
            }
            if consistent { return values }
            logger.debug("PCRs changed during a read; reading again", metadata: ["selection": "\(selection)"])
        }
        throw TPMError(.pcrsKeptChanging, operation: operation,
                       reason: "the PCR update counter changed during each of \(Self.consistentReadAttempts) reads")
    }

    /// Refuses, before asking the TPM, a selection with a bank that is not allocated or a PCR
    /// beyond the TPM's count: the TPM would silently leave them out.
    func checkSelection(_ selection: PCRSelection, _ esys: ESYSConnection, _ operation: String) throws(TPMError) {
        let banks = try esys.pcrBanks()
        let allocated = banks.pcrsByBank
        for (hash, pcrs) in selection.pcrsByBank {
            guard let available = allocated[hash] else {
                let names = banks.banks.filter { !$0.pcrs.isEmpty }.map(\.hash.name).joined(separator: ", ")
                throw TPMError(.invalidArgument, operation: operation,
                               reason: "bank \(hash.name) is not allocated on this TPM (allocated: \(names))")
            }
            let missing = pcrs.subtracting(available).sorted()
            guard missing.isEmpty else {
                throw TPMError(.invalidArgument, operation: operation,
                               reason: "PCR \(missing.map(String.init).joined(separator: ",")) does not exist in bank \(hash.name)")
            }
        }
        guard selection.count > 0 else {
            throw TPMError(.invalidArgument, operation: operation, reason: "the selection names no PCR")
        }
    }

    /// Extends `pcr` with one digest per bank, in one TPM2_PCR_Extend. `digests` must cover
    /// every allocated bank and nothing else: a bank left out could later be extended to any
    /// value by someone else, and the log would not say so.
    public func extend(pcr: Int, digests: [TPMAlgorithm: [UInt8]]) throws(TPMError) {
        try perform { esys throws(TPMError) in
            let operation = "PCR extend \(pcr)"
            let banks = try esys.pcrBanks()
            let allocated = banks.banks.filter { !$0.pcrs.isEmpty }
            guard allocated.contains(where: { $0.pcrs.contains(pcr) }) else {
                throw TPMError(.invalidArgument, operation: operation, reason: "PCR \(pcr) does not exist on this TPM")
            }
            let expected = Set(allocated.map(\.hash))
            let given = Set(digests.keys)
            guard expected == given else {
                let missing = expected.subtracting(given).sorted().map(\.name)
                let extra = given.subtracting(expected).sorted().map(\.name)
                var parts: [String] = []
                if !missing.isEmpty { parts.append("no digest for allocated bank \(missing.joined(separator: ", "))") }
                if !extra.isEmpty { parts.append("bank \(extra.joined(separator: ", ")) is not allocated") }
                throw TPMError(.invalidArgument, operation: operation, reason: parts.joined(separator: "; "))
            }
            var ordered: [(TPMAlgorithm, [UInt8])] = []
            for bank in allocated {
                let digest = digests[bank.hash] ?? []
                guard digest.count == bank.hash.digestSize else {
                    throw TPMError(.invalidArgument, operation: operation,
                                   reason: "the \(bank.hash.name) digest has \(digest.count) bytes, not \(bank.hash.digestSize ?? 0)")
                }
                ordered.append((bank.hash, digest))
            }
            try esys.pcrExtend(pcr, ordered)
        }
    }

    /// Extends `pcr` with the hash of `data` in every allocated bank, and returns the digests
    /// it extended (what an event log records for the event).
    @discardableResult
    public func extend(pcr: Int, hashing data: [UInt8]) throws(TPMError) -> [TPMAlgorithm: [UInt8]] {
        var digests: [TPMAlgorithm: [UInt8]] = [:]
        for hash in try allocatedBanks() {
            guard let digest = hash.hash(data) else {
                throw TPMError(.invalidArgument, operation: "PCR extend \(pcr)",
                               reason: "bank \(hash.name) is allocated but this build cannot compute \(hash.name)")
            }
            digests[hash] = digest
        }
        try extend(pcr: pcr, digests: digests)
        return digests
    }
}
