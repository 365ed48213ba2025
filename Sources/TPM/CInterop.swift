import CTSS2
import TPMWire

// How C values cross into Swift values, in one place.
//
// tpm2-tss structures import as Swift structs whose fixed arrays are homogeneous tuples (a
// TPM2B_ATTEST holds a 2,300-element tuple) and whose unions are structs of computed
// properties. Rather than reaching into those, a structure crosses the boundary in its TPM
// wire encoding: libtss2-mu marshals the C value, and TPMWire parses the bytes into the Swift
// value (and the other way round for inputs). One encoding, one parser, both already tested.

/// The `TPM2B_*` structures of shape `{ UINT16 size; BYTE buffer[N]; }`. The bytes start at
/// offset 2 (BYTE has alignment 1) in every one of them, so one implementation serves all.
protocol TPM2BBuffer {
    init()
}

extension TPM2BBuffer {
    static var capacity: Int { MemoryLayout<Self>.size - 2 }

    /// A buffer holding `bytes`; more than the C structure can hold is an invalid argument.
    static func make(_ bytes: [UInt8], _ field: String) throws(TPMError) -> Self {
        guard bytes.count <= capacity else {
            throw TPMError(.invalidArgument, operation: field,
                           reason: "\(bytes.count) bytes do not fit; at most \(capacity) allowed")
        }
        var value = Self()   // the importer zero-initialises
        withUnsafeMutableBytes(of: &value) { raw in
            raw.storeBytes(of: UInt16(bytes.count), toByteOffset: 0, as: UInt16.self)
            UnsafeMutableRawBufferPointer(rebasing: raw[2..<(2 + bytes.count)]).copyBytes(from: bytes)
        }
        return value
    }

    /// The buffer's bytes (the size is clamped to the capacity; ESYS fills these, never a peer).
    var bytes: [UInt8] {
        withUnsafeBytes(of: self) { raw in
            let size = Int(raw.load(fromByteOffset: 0, as: UInt16.self))
            return Array(raw[2..<(2 + min(size, Self.capacity))])
        }
    }
}

// TPM2B_NONCE and TPM2B_AUTH are C typedefs of TPM2B_DIGEST, so they are covered too.
extension TPM2B_DIGEST: TPM2BBuffer {}
extension TPM2B_DATA: TPM2BBuffer {}
extension TPM2B_ATTEST: TPM2BBuffer {}
extension TPM2B_NAME: TPM2BBuffer {}
extension TPM2B_MAX_NV_BUFFER: TPM2BBuffer {}
extension TPM2B_ID_OBJECT: TPM2BBuffer {}
extension TPM2B_ENCRYPTED_SECRET: TPM2BBuffer {}
extension TPM2B_PUBLIC_KEY_RSA: TPM2BBuffer {}
extension TPM2B_ECC_PARAMETER: TPM2BBuffer {}

/// Elements `0..<count` of a C array imported as a homogeneous tuple. `count` comes from a
/// structure ESYS unmarshalled and bounds-checked; it is clamped to the tuple anyway.
func tupleElements<Tuple, Element>(_ tuple: Tuple, as _: Element.Type, count: Int) -> [Element] {
    withUnsafeBytes(of: tuple) { raw in
        let capacity = raw.count / MemoryLayout<Element>.stride
        return (0..<min(max(count, 0), capacity)).map {
            raw.load(fromByteOffset: $0 * MemoryLayout<Element>.stride, as: Element.self)
        }
    }
}

/// `Tss2_MU_<T>_Marshal`: a C value to its TPM wire bytes.
func marshal<T>(
    _ value: T,
    _ function: (UnsafePointer<T>?, UnsafeMutablePointer<UInt8>?, Int, UnsafeMutablePointer<Int>?) -> TSS2_RC,
    _ name: String
) throws(TPMError) -> [UInt8] {
    var copy = value
    // The wire form is never larger than the C structure plus a little alignment slack.
    var buffer = [UInt8](repeating: 0, count: MemoryLayout<T>.size + 64)
    var offset = 0
    let rc = buffer.withUnsafeMutableBufferPointer { out in
        withUnsafePointer(to: &copy) { function($0, out.baseAddress, out.count, &offset) }
    }
    guard rc == TSS2_RC_SUCCESS else { throw TPMError(operation: name, rc: rc) }
    return Array(buffer[0..<offset])
}

/// `Tss2_MU_<T>_Unmarshal`: TPM wire bytes (from TPMWire's serialiser) to a C value; the
/// whole buffer must be consumed.
func unmarshal<T>(
    _ bytes: [UInt8],
    into initial: T,
    _ function: (UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<Int>?, UnsafeMutablePointer<T>?) -> TSS2_RC,
    _ name: String
) throws(TPMError) -> T {
    var value = initial
    var offset = 0
    let rc = bytes.withUnsafeBufferPointer { input in
        withUnsafeMutablePointer(to: &value) { function(input.baseAddress, input.count, &offset, $0) }
    }
    guard rc == TSS2_RC_SUCCESS else { throw TPMError(operation: name, rc: rc) }
    guard offset == bytes.count else {
        throw TPMError(.tss, operation: name, reason: "\(bytes.count - offset) bytes left over after the structure")
    }
    return value
}

/// Parses bytes libtss2-mu produced with a TPMWire parser; a failure there means tpm2-tss and
/// TPMWire disagree about a structure, which is reported, never trapped on.
func parse<T: TPMWireCodable>(_ bytes: [UInt8], as _: T.Type, _ operation: String) throws(TPMError) -> T {
    do {
        return try T(wireBytes: bytes)
    } catch {
        throw TPMError(.unexpectedResponse, operation: operation, reason: error.reason)
    }
}

extension PCRSelection {
    /// This selection as the C TPML_PCR_SELECTION ESYS takes.
    func cValue(_ operation: String) throws(TPMError) -> TPML_PCR_SELECTION {
        guard banks.count <= PCRSelection.maxBanks else {
            throw TPMError(.invalidArgument, operation: operation,
                           reason: "\(banks.count) banks selected; a TPML_PCR_SELECTION holds at most \(PCRSelection.maxBanks)")
        }
        return try unmarshal(wireBytes, into: TPML_PCR_SELECTION(), Tss2_MU_TPML_PCR_SELECTION_Unmarshal,
                             "\(operation): TPML_PCR_SELECTION")
    }

    init(_ c: TPML_PCR_SELECTION, _ operation: String) throws(TPMError) {
        let bytes = try marshal(c, Tss2_MU_TPML_PCR_SELECTION_Marshal, "\(operation): TPML_PCR_SELECTION")
        self = try parse(bytes, as: PCRSelection.self, operation)
    }
}
