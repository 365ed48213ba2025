import CTSS2
import Logging
import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// How often and how patiently a command is sent again when the TPM answers TPM_RC_RETRY,
/// TPM_RC_YIELDED or TPM_RC_TESTING. ESYS itself submits a command up to five times at once;
/// these retries come on top, with a growing pause, for a TPM that is busy for longer
/// (self-test after power-on, a firmware TPM sharing its core).
public struct RetryPolicy: Sendable, Hashable {
    /// Calls of the ESYS function in all, the first one included.
    public var attempts: Int
    /// Pause after the first failed attempt; doubled after each further one.
    public var firstDelay: Duration
    public var maxDelay: Duration

    public init(attempts: Int = 6, firstDelay: Duration = .milliseconds(10), maxDelay: Duration = .seconds(1)) {
        self.attempts = max(1, attempts)
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
    }

    public static let `default` = RetryPolicy()
}

/// One ESYS context over one TCTI, and the raw commands the `TPM` actor is built from.
///
/// Not thread-safe and not Sendable: only the `TPM` actor owns one, and uses it from the
/// actor's own thread. Every ESYS-allocated output is freed before a function returns, and
/// every transient object or session a function creates is flushed by the same function,
/// on every path (there is no resource manager in front of swtpm).
final class ESYSConnection {
    private(set) var esys: OpaquePointer?
    private var tcti: OpaquePointer?
    /// Memory of a TCTI initialised directly (device, swtpm); nil for the loader's.
    private var directTCTI: UnsafeMutableRawPointer?
    let configuration: TCTIConfiguration
    let retryPolicy: RetryPolicy
    let logger: Logger
    /// Set when a failure means this context can no longer be trusted (the connection dropped,
    /// ESYS lost its state): the actor opens a new one before the next command.
    private(set) var isBroken = false

    /// ESYS_TRs of persistent objects looked up in this context (ESYS keeps their metadata).
    private var persistentObjects: [UInt32: ESYS_TR] = [:]
    /// AK handles checked by `attestationKeyObject(at:)` in this context.
    private var verifiedAttestationKeys: Set<UInt32> = []
    /// Allocated PCR banks, read once per context: they change only across a reset.
    private var cachedBanks: PCRSelection?

    init(_ configuration: TCTIConfiguration, retryPolicy: RetryPolicy, logger: Logger) throws(TPMError) {
        self.configuration = configuration
        self.retryPolicy = retryPolicy
        self.logger = logger
        Self.quietenTSSLogging()
        try openTCTI()
        let rc = Esys_Initialize(&esys, tcti, nil)
        guard rc == TSS2_RC_SUCCESS else {
            closeTCTI()
            throw TPMError(operation: "Esys_Initialize(\(configuration))", rc: rc)
        }
    }

    deinit {
        for (_, object) in persistentObjects {
            var handle = object
            _ = Esys_TR_Close(esys, &handle)
        }
        Esys_Finalize(&esys)
        closeTCTI()
    }

    /// tpm2-tss logs its own errors to stderr. Every failure reaches the caller as a `TPMError`
    /// with the decoded response code, so the library's lines would only say the same twice.
    /// An explicit TSS2_LOG in the environment still wins.
    private static func quietenTSSLogging() {
        setenv("TSS2_LOG", "all+NONE", 0)
    }

    private func openTCTI() throws(TPMError) {
        switch configuration {
        case .device(let path):
            try initDirect(Tss2_Tcti_Device_Init, path, "Tss2_Tcti_Device_Init(\(path))")
        case .swtpm(let conf):
            try initDirect(Tss2_Tcti_Swtpm_Init, conf.isEmpty ? nil : conf, "Tss2_Tcti_Swtpm_Init(\(conf))")
        case .loader(let text):
            let rc = Tss2_TctiLdr_Initialize(text, &tcti)
            guard rc == TSS2_RC_SUCCESS else { throw TPMError(operation: "Tss2_TctiLdr_Initialize(\(text))", rc: rc) }
        case .simulator:
            throw TPMError(.configuration, operation: "open TPM",
                           reason: "'simulator' is resolved to a swtpm TCTI by TPM.open, not opened directly")
        }
    }

    /// The two-call pattern of a TCTI's own init: ask the size, allocate, initialise.
    private func initDirect(
        _ initialise: (OpaquePointer?, UnsafeMutablePointer<Int>?, UnsafePointer<CChar>?) -> TSS2_RC,
        _ conf: String?, _ operation: String
    ) throws(TPMError) {
        var size = 0
        var rc = initialise(nil, &size, conf)
        guard rc == TSS2_RC_SUCCESS else { throw TPMError(operation: operation, rc: rc) }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        rc = initialise(OpaquePointer(memory), &size, conf)
        guard rc == TSS2_RC_SUCCESS else {
            memory.deallocate()
            throw TPMError(operation: operation, rc: rc)
        }
        tcti = OpaquePointer(memory)
        directTCTI = memory
    }

    private func closeTCTI() {
        if let memory = directTCTI {
            ctss2_tcti_finalize(tcti)
            memory.deallocate()
            directTCTI = nil
            tcti = nil
        } else if tcti != nil {
            Tss2_TctiLdr_Finalize(&tcti)
        }
    }

    // MARK: Sending commands

    /// Runs one ESYS call and turns its response code into success or a `TPMError`:
    /// - RETRY / YIELDED / TESTING: the call is repeated after a pause (see `RetryPolicy`);
    /// - INITIALIZE on anything but Startup: the TPM was powered on without TPM2_Startup
    ///   (a swtpm restarted without `startup-clear`), so Startup(CLEAR) is sent and the call
    ///   repeated once;
    /// - a transport or TSS-layer failure marks this context broken.
    func command(_ operation: @autoclosure () -> String, _ call: () -> TSS2_RC) throws(TPMError) {
        var attempt = 1
        var delay = retryPolicy.firstDelay
        var startedUp = false
        while true {
            let rc = call()
            if rc == TSS2_RC_SUCCESS { return }
            let error = TPMError(operation: operation(), rc: rc)
            guard error.code == .tpm else {
                isBroken = true
                throw error
            }
            let base = error.tpmBaseCode ?? 0
            if base == CTSS2_RC_RETRY || base == CTSS2_RC_YIELDED || base == CTSS2_RC_TESTING {
                guard attempt < retryPolicy.attempts else {
                    throw TPMError(.tpm, operation: error.operation, rc: rc,
                                   reason: "\(error.reason); still so after \(attempt) attempts")
                }
                logger.debug("TPM busy, retrying", metadata: [
                    "operation": "\(error.operation)", "rc": "0x\(String(rc, radix: 16))", "attempt": "\(attempt)"])
                Self.sleep(delay)
                delay = min(delay * 2, retryPolicy.maxDelay)
                attempt += 1
                continue
            }
            if base == CTSS2_RC_INITIALIZE && !startedUp {
                startedUp = true
                try startup()
                continue
            }
            throw error
        }
    }

    /// Blocks the TPM thread on purpose: the actor's operations stay atomic, and no other
    /// command can slip in between the halves of one (the object slots are few).
    private static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }

    /// TPM2_Startup(CLEAR). TPM_RC_INITIALIZE here means it was already started: success.
    func startup() throws(TPMError) {
        let rc = Esys_Startup(esys, TPM2_SU(TPM2_SU_CLEAR))
        if rc == TSS2_RC_SUCCESS || rc == CTSS2_RC_INITIALIZE { return }
        let error = TPMError(operation: "Esys_Startup(CLEAR)", rc: rc)
        if error.code != .tpm { isBroken = true }
        throw error
    }

    /// Flushes a transient object or session. A failure is logged, not thrown: this runs on
    /// cleanup paths, after the error that matters, and after a TPM restart the handle is
    /// gone anyway.
    func flush(_ handle: ESYS_TR) {
        guard handle != ESYS_TR_NONE else { return }
        let rc = Esys_FlushContext(esys, handle)
        if rc != TSS2_RC_SUCCESS {
            logger.debug("flush failed", metadata: ["rc": "0x\(String(rc, radix: 16))", "decoded": "\(TPMError.decode(rc))"])
        }
    }

    /// Runs `body` with a transient object or session that is flushed afterwards, whatever
    /// `body` does.
    func withFlushing<T>(_ handle: ESYS_TR, _ body: (ESYS_TR) throws(TPMError) -> T) throws(TPMError) -> T {
        defer { flush(handle) }
        return try body(handle)
    }

    // MARK: Capabilities

    private func capability(_ capability: TPM2_CAP, property: UInt32, count: UInt32, _ operation: String)
        throws(TPMError) -> (data: TPMS_CAPABILITY_DATA, more: Bool)
    {
        var more: TPMI_YES_NO = 0
        var data: UnsafeMutablePointer<TPMS_CAPABILITY_DATA>?
        try command(operation) {
            Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, capability, property, count, &more, &data)
        }
        defer { Esys_Free(data) }
        guard let value = data?.pointee else {
            throw TPMError(.tss, operation: operation, reason: "ESYS returned no capability data")
        }
        return (value, more != 0)
    }

    /// TPM properties (TPM2_CAP_TPM_PROPERTIES) from `first`, as many as the TPM returns.
    func properties(from first: UInt32, count: UInt32) throws(TPMError) -> [UInt32: UInt32] {
        var result: [UInt32: UInt32] = [:]
        var next = first
        while true {
            let (data, more) = try capability(TPM2_CAP(TPM2_CAP_TPM_PROPERTIES), property: next, count: count,
                                              "Esys_GetCapability(TPM_PROPERTIES 0x\(String(next, radix: 16)))")
            let list = data.data.tpmProperties
            let props = tupleElements(list.tpmProperty, as: TPMS_TAGGED_PROPERTY.self, count: Int(list.count))
            for p in props { result[p.property] = p.value }
            guard more, let last = props.last, last.property < first &+ count else { return result }
            next = last.property + 1
        }
    }

    /// The PCR banks the TPM implements, each with the PCRs allocated in it (TPM2_CAP_PCRS).
    /// A bank the TPM implements but has not allocated comes back with no PCRs.
    func pcrBanks() throws(TPMError) -> PCRSelection {
        if let cachedBanks { return cachedBanks }
        let (data, _) = try capability(TPM2_CAP(TPM2_CAP_PCRS), property: 0, count: 1, "Esys_GetCapability(PCRS)")
        let banks = try PCRSelection(data.data.assignedPCR, "Esys_GetCapability(PCRS)")
        cachedBanks = banks
        return banks
    }

    /// Handles of one type (TPM2_CAP_HANDLES): `0x80000000` transient objects, `0x81000000`
    /// persistent objects, `0x02000000`/`0x03000000` loaded/saved sessions.
    func handles(first: UInt32) throws(TPMError) -> [UInt32] {
        var result: [UInt32] = []
        var next = first
        let rangeEnd = (first & 0xFF00_0000) | 0x00FF_FFFF
        while next <= rangeEnd {
            let (data, more) = try capability(TPM2_CAP(TPM2_CAP_HANDLES), property: next, count: 64,
                                              "Esys_GetCapability(HANDLES 0x\(String(first, radix: 16)))")
            let list = data.data.handles
            let handles = tupleElements(list.handle, as: TPM2_HANDLE.self, count: Int(list.count))
                .filter { $0 >> 24 == first >> 24 }
            result += handles
            guard more, let last = handles.last, last < rangeEnd else { break }
            next = last + 1
        }
        return result
    }

    /// Whether a persistent object or NV index exists at `handle`.
    func hasHandle(_ handle: UInt32) throws(TPMError) -> Bool {
        let (data, _) = try capability(TPM2_CAP(TPM2_CAP_HANDLES), property: handle, count: 1,
                                       "Esys_GetCapability(HANDLES 0x\(String(handle, radix: 16)))")
        let list = data.data.handles
        return tupleElements(list.handle, as: TPM2_HANDLE.self, count: Int(list.count)).first == handle
    }

    /// Flushes transient objects and sessions a crashed earlier run left in a TPM that has
    /// no resource manager in front of it. Returns how many.
    func flushLeftovers() throws(TPMError) -> Int {
        var count = 0
        for first in [CTSS2_TRANSIENT_FIRST, CTSS2_LOADED_SESSION_FIRST] {
            for handle in try handles(first: first) {
                var object: ESYS_TR = ESYS_TR_NONE
                let rc = Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object)
                guard rc == TSS2_RC_SUCCESS else { continue }
                flush(object)
                count += 1
            }
        }
        return count
    }

    // MARK: PCRs

    /// One TPM2_PCR_Read: what it read (at most eight PCRs) and the PCR update counter.
    func pcrRead(_ selection: PCRSelection) throws(TPMError) -> (read: PCRSelection, digests: [[UInt8]], counter: UInt32) {
        let operation = "Esys_PCR_Read(\(selection))"
        var input = try selection.cValue(operation)
        var counter: UInt32 = 0
        var selectionOut: UnsafeMutablePointer<TPML_PCR_SELECTION>?
        var values: UnsafeMutablePointer<TPML_DIGEST>?
        try command(operation) {
            Esys_PCR_Read(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &input, &counter, &selectionOut, &values)
        }
        defer { Esys_Free(selectionOut); Esys_Free(values) }
        guard let read = selectionOut?.pointee, let digests = values?.pointee else {
            throw TPMError(.tss, operation: operation, reason: "ESYS returned no PCR values")
        }
        return (try PCRSelection(read, operation),
                tupleElements(digests.digests, as: TPM2B_DIGEST.self, count: Int(digests.count)).map(\.bytes),
                counter)
    }

    /// TPM2_PCR_Extend with one digest per bank, as TPML_DIGEST_VALUES.
    func pcrExtend(_ pcr: Int, _ digests: [(TPMAlgorithm, [UInt8])]) throws(TPMError) {
        let operation = "Esys_PCR_Extend(\(pcr))"
        var writer = ByteWriter()
        writer.write(UInt32(digests.count))
        for (hash, digest) in digests {
            writer.write(hash.rawValue)
            writer.write(bytes: digest)
        }
        var values = try unmarshal(writer.bytes, into: TPML_DIGEST_VALUES(), Tss2_MU_TPML_DIGEST_VALUES_Unmarshal,
                                   "\(operation): TPML_DIGEST_VALUES")
        try command(operation) {
            Esys_PCR_Extend(esys, ESYS_TR(UInt32(ESYS_TR_PCR0) + UInt32(pcr)), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &values)
        }
    }

    // MARK: Objects

    /// An ESYS_TR for a persistent object or NV index, cached for this context.
    func object(at handle: UInt32) throws(TPMError) -> ESYS_TR {
        if let known = persistentObjects[handle] { return known }
        var object: ESYS_TR = ESYS_TR_NONE
        try command("Esys_TR_FromTPMPublic(0x\(String(handle, radix: 16)))") {
            Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object)
        }
        persistentObjects[handle] = object
        return object
    }

    /// Forgets a cached persistent object (after it was evicted).
    func forget(_ handle: UInt32) {
        verifiedAttestationKeys.remove(handle)
        if var object = persistentObjects.removeValue(forKey: handle) {
            _ = Esys_TR_Close(esys, &object)
        }
    }

    /// The ESYS_TR of the AK at `handle`, once checked to be a restricted signing key: a quote
    /// is never signed with a key a verifier would not accept as an AK.
    func attestationKeyObject(at handle: UInt32) throws(TPMError) -> ESYS_TR {
        let object = try self.object(at: handle)
        if verifiedAttestationKeys.contains(handle) { return object }
        let operation = "AK at 0x\(String(handle, radix: 16))"
        let bytes = try marshal(try readPublic(object, operation).publicArea, Tss2_MU_TPM2B_PUBLIC_Marshal, operation)
        let publicArea = try parse(bytes, as: TPM2BPublic.self, operation).publicArea
        if let reason = TPM.AttestationKey.disqualification(of: publicArea) {
            throw TPMError(.unexpectedResponse, operation: operation,
                           reason: "the key at 0x\(String(handle, radix: 16)) cannot be an AK: \(reason)")
        }
        verifiedAttestationKeys.insert(handle)
        return object
    }

    struct PublicArea {
        var publicArea: TPM2B_PUBLIC
        var name: [UInt8]
        var qualifiedName: [UInt8]
    }

    func readPublic(_ object: ESYS_TR, _ operation: String) throws(TPMError) -> PublicArea {
        var outPublic: UnsafeMutablePointer<TPM2B_PUBLIC>?
        var name: UnsafeMutablePointer<TPM2B_NAME>?
        var qualifiedName: UnsafeMutablePointer<TPM2B_NAME>?
        try command("Esys_ReadPublic(\(operation))") {
            Esys_ReadPublic(esys, object, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &outPublic, &name, &qualifiedName)
        }
        defer { Esys_Free(outPublic); Esys_Free(name); Esys_Free(qualifiedName) }
        guard let outPublic, let name, let qualifiedName else {
            throw TPMError(.tss, operation: "Esys_ReadPublic(\(operation))", reason: "ESYS returned no public area")
        }
        return PublicArea(publicArea: outPublic.pointee, name: name.pointee.bytes, qualifiedName: qualifiedName.pointee.bytes)
    }

    /// TPM2_CreatePrimary: a transient primary object the caller must flush.
    func createPrimary(_ hierarchy: ESYS_TR, _ template: TPM2B_PUBLIC, _ operation: String) throws(TPMError) -> (ESYS_TR, TPM2B_PUBLIC) {
        var sensitive = TPM2B_SENSITIVE_CREATE()
        var inPublic = template
        var outside = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        var handle: ESYS_TR = ESYS_TR_NONE
        var outPublic: UnsafeMutablePointer<TPM2B_PUBLIC>?
        var creationData: UnsafeMutablePointer<TPM2B_CREATION_DATA>?
        var creationHash: UnsafeMutablePointer<TPM2B_DIGEST>?
        var ticket: UnsafeMutablePointer<TPMT_TK_CREATION>?
        try command("Esys_CreatePrimary(\(operation))") {
            Esys_CreatePrimary(esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               &sensitive, &inPublic, &outside, &creationPCR,
                               &handle, &outPublic, &creationData, &creationHash, &ticket)
        }
        defer { Esys_Free(outPublic); Esys_Free(creationData); Esys_Free(creationHash); Esys_Free(ticket) }
        guard let outPublic else {
            flush(handle)
            throw TPMError(.tss, operation: "Esys_CreatePrimary(\(operation))", reason: "ESYS returned no public area")
        }
        return (handle, outPublic.pointee)
    }

    /// TPM2_Create under `parent` (authorised by `session`): the new key's private and public parts.
    func create(parent: ESYS_TR, session: ESYS_TR, _ template: TPM2B_PUBLIC, _ operation: String)
        throws(TPMError) -> (TPM2B_PRIVATE, TPM2B_PUBLIC)
    {
        var sensitive = TPM2B_SENSITIVE_CREATE()
        var inPublic = template
        var outside = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        var outPrivate: UnsafeMutablePointer<TPM2B_PRIVATE>?
        var outPublic: UnsafeMutablePointer<TPM2B_PUBLIC>?
        var creationData: UnsafeMutablePointer<TPM2B_CREATION_DATA>?
        var creationHash: UnsafeMutablePointer<TPM2B_DIGEST>?
        var ticket: UnsafeMutablePointer<TPMT_TK_CREATION>?
        try command("Esys_Create(\(operation))") {
            Esys_Create(esys, parent, session, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &inPublic, &outside, &creationPCR,
                        &outPrivate, &outPublic, &creationData, &creationHash, &ticket)
        }
        defer { Esys_Free(outPrivate); Esys_Free(outPublic); Esys_Free(creationData); Esys_Free(creationHash); Esys_Free(ticket) }
        guard let outPrivate, let outPublic else {
            throw TPMError(.tss, operation: "Esys_Create(\(operation))", reason: "ESYS returned no key")
        }
        return (outPrivate.pointee, outPublic.pointee)
    }

    /// TPM2_Load: a transient object the caller must flush.
    func load(parent: ESYS_TR, session: ESYS_TR, _ privatePart: TPM2B_PRIVATE, _ publicPart: TPM2B_PUBLIC,
              _ operation: String) throws(TPMError) -> ESYS_TR
    {
        var inPrivate = privatePart
        var inPublic = publicPart
        var handle: ESYS_TR = ESYS_TR_NONE
        try command("Esys_Load(\(operation))") {
            Esys_Load(esys, parent, session, ESYS_TR_NONE, ESYS_TR_NONE, &inPrivate, &inPublic, &handle)
        }
        return handle
    }

    /// TPM2_EvictControl(owner): persists a loaded object at `handle`, or removes the
    /// persistent object at `handle` when `object` is that persistent object.
    func evictControl(_ object: ESYS_TR, persistentHandle: UInt32, _ operation: String) throws(TPMError) {
        var newObject: ESYS_TR = ESYS_TR_NONE
        try command("Esys_EvictControl(\(operation))") {
            Esys_EvictControl(esys, ESYS_TR_RH_OWNER, object, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                              persistentHandle, &newObject)
        }
        if newObject != ESYS_TR_NONE {
            var closing = newObject
            _ = Esys_TR_Close(esys, &closing)
        }
    }

    /// A policy session satisfied with PolicySecret(TPM_RH_ENDORSEMENT): the authorisation the
    /// TCG EK templates' authPolicy asks for. A session serves one command (the policy digest
    /// is consumed), so every use of the EK gets a fresh one; the caller flushes it.
    func endorsementPolicySession() throws(TPMError) -> ESYS_TR {
        var symmetric = TPMT_SYM_DEF()
        symmetric.algorithm = TPMI_ALG_SYM(TPM2_ALG_NULL)
        var session: ESYS_TR = ESYS_TR_NONE
        try command("Esys_StartAuthSession(policy)") {
            Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  nil, TPM2_SE(TPM2_SE_POLICY), &symmetric, TPMI_ALG_HASH(TPM2_ALG_SHA256), &session)
        }
        var timeout: UnsafeMutablePointer<TPM2B_TIMEOUT>?
        var ticket: UnsafeMutablePointer<TPMT_TK_AUTH>?
        do {
            try command("Esys_PolicySecret(endorsement)") {
                Esys_PolicySecret(esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                  nil, nil, nil, 0, &timeout, &ticket)
            }
        } catch {
            flush(session)
            throw error
        }
        Esys_Free(timeout)
        Esys_Free(ticket)
        return session
    }

    /// TPM2_ActivateCredential: the AK (password) and the EK (a fresh endorsement policy session).
    func activateCredential(ak: ESYS_TR, ek: ESYS_TR, credentialBlob: [UInt8], encryptedSecret: [UInt8]) throws(TPMError) -> [UInt8] {
        let operation = "Esys_ActivateCredential"
        var blob = try TPM2B_ID_OBJECT.make(credentialBlob, "\(operation): credential blob")
        var secret = try TPM2B_ENCRYPTED_SECRET.make(encryptedSecret, "\(operation): encrypted secret")
        return try withFlushing(try endorsementPolicySession()) { session throws(TPMError) in
            var certInfo: UnsafeMutablePointer<TPM2B_DIGEST>?
            try command(operation) {
                Esys_ActivateCredential(esys, ak, ek, ESYS_TR_PASSWORD, session, ESYS_TR_NONE, &blob, &secret, &certInfo)
            }
            defer { Esys_Free(certInfo) }
            guard let certInfo else { throw TPMError(.tss, operation: operation, reason: "ESYS returned no credential") }
            return certInfo.pointee.bytes
        }
    }

    /// TPM2_Quote with the key's own signing scheme: TPMS_ATTEST bytes and the marshalled
    /// TPMT_SIGNATURE.
    func quote(_ key: ESYS_TR, qualifyingData: [UInt8], _ selection: PCRSelection) throws(TPMError) -> (attest: [UInt8], signature: [UInt8]) {
        let operation = "Esys_Quote(\(selection))"
        var data = try TPM2B_DATA.make(qualifyingData, "\(operation): qualifying data")
        var scheme = TPMT_SIG_SCHEME()
        scheme.scheme = TPMI_ALG_SIG_SCHEME(TPM2_ALG_NULL)
        var pcrSelect = try selection.cValue(operation)
        var quoted: UnsafeMutablePointer<TPM2B_ATTEST>?
        var signature: UnsafeMutablePointer<TPMT_SIGNATURE>?
        try command(operation) {
            Esys_Quote(esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &data, &scheme, &pcrSelect, &quoted, &signature)
        }
        defer { Esys_Free(quoted); Esys_Free(signature) }
        guard let quoted, let signature else { throw TPMError(.tss, operation: operation, reason: "ESYS returned no quote") }
        return (quoted.pointee.bytes, try marshal(signature.pointee, Tss2_MU_TPMT_SIGNATURE_Marshal, "\(operation): TPMT_SIGNATURE"))
    }

    // MARK: NV

    /// The whole contents of an NV index, read in chunks of at most `chunk` bytes, authorised
    /// by the index itself with an empty password (how EK certificate indices are readable).
    func nvRead(index: UInt32, chunk: Int) throws(TPMError) -> [UInt8] {
        let name = "NV 0x\(String(index, radix: 16))"
        let nv = try object(at: index)
        var nvPublic: UnsafeMutablePointer<TPM2B_NV_PUBLIC>?
        var nvName: UnsafeMutablePointer<TPM2B_NAME>?
        try command("Esys_NV_ReadPublic(\(name))") {
            Esys_NV_ReadPublic(esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nvPublic, &nvName)
        }
        let size = Int(nvPublic?.pointee.nvPublic.dataSize ?? 0)
        Esys_Free(nvPublic)
        Esys_Free(nvName)
        var contents: [UInt8] = []
        contents.reserveCapacity(size)
        while contents.count < size {
            let length = UInt16(min(chunk, size - contents.count))
            let offset = UInt16(contents.count)
            var data: UnsafeMutablePointer<TPM2B_MAX_NV_BUFFER>?
            try command("Esys_NV_Read(\(name), offset \(offset))") {
                Esys_NV_Read(esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, length, offset, &data)
            }
            let piece = data?.pointee.bytes ?? []
            Esys_Free(data)
            guard !piece.isEmpty else {
                throw TPMError(.unexpectedResponse, operation: "Esys_NV_Read(\(name))", reason: "the TPM returned no data at offset \(offset)")
            }
            contents += piece
        }
        return contents
    }
}
