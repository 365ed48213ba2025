import CTSS2

/// tpm2-tss' own marshalling, for checking the PCR file layouts against the library that
/// tpm2-tools uses. tpm2-tools 5.4 (Debian 12) writes only the serialized and values formats;
/// `-F marshaled` (tpm2-tools 5.8) is Tss2_MU_TPML_PCR_SELECTION_Marshal, Tss2_MU_UINT32_Marshal
/// and Tss2_MU_TPML_DIGEST_Marshal of the same structures, which is what this reproduces.
public enum TSSMarshal {
    static let selectionSize = MemoryLayout<TPML_PCR_SELECTION>.size
    static let digestListSize = MemoryLayout<TPML_DIGEST>.size

    /// Loads a serialized PCR file (a dump of the C structures on this little-endian host) into
    /// tpm2-tss' structures and marshals them the way `tpm2_quote -F marshaled` does.
    public static func marshaledPCRFile(fromSerialized bytes: [UInt8]) throws -> [UInt8] {
        guard selectionSize == 132, digestListSize == 532, bytes.count >= selectionSize + 4 else {
            throw HarnessError("unexpected C layout or short file")
        }
        var selection = TPML_PCR_SELECTION()
        withUnsafeMutableBytes(of: &selection) { $0.copyBytes(from: bytes[0..<selectionSize]) }
        let count = bytes[selectionSize..<(selectionSize + 4)].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard bytes.count == selectionSize + 4 + Int(count) * digestListSize else { throw HarnessError("bad serialized size") }
        var out = [UInt8](repeating: 0, count: 8192)
        var offset = 0
        try check(out.withUnsafeMutableBufferPointer { Tss2_MU_TPML_PCR_SELECTION_Marshal(&selection, $0.baseAddress, $0.count, &offset) })
        try check(out.withUnsafeMutableBufferPointer { Tss2_MU_UINT32_Marshal(count, $0.baseAddress, $0.count, &offset) })
        for i in 0..<Int(count) {
            var list = TPML_DIGEST()
            let start = selectionSize + 4 + i * digestListSize
            withUnsafeMutableBytes(of: &list) { $0.copyBytes(from: bytes[start..<(start + digestListSize)]) }
            try check(out.withUnsafeMutableBufferPointer { Tss2_MU_TPML_DIGEST_Marshal(&list, $0.baseAddress, $0.count, &offset) })
        }
        return Array(out[0..<offset])
    }

    /// Unmarshals a marshaled PCR file with tpm2-tss and dumps the structures as the serialized
    /// format holds them: what tpm2_checkquote 5.8 reads a marshaled file into.
    public static func serializedPCRFile(fromMarshaled bytes: [UInt8]) throws -> [UInt8] {
        var selection = TPML_PCR_SELECTION()
        var offset = 0
        try check(bytes.withUnsafeBufferPointer { Tss2_MU_TPML_PCR_SELECTION_Unmarshal($0.baseAddress, $0.count, &offset, &selection) })
        var count: UInt32 = 0
        try check(bytes.withUnsafeBufferPointer { Tss2_MU_UINT32_Unmarshal($0.baseAddress, $0.count, &offset, &count) })
        var out = withUnsafeBytes(of: &selection) { Array($0) }
        withUnsafeBytes(of: count.littleEndian) { out += $0 }
        for _ in 0..<count {
            var list = TPML_DIGEST()
            try check(bytes.withUnsafeBufferPointer { Tss2_MU_TPML_DIGEST_Unmarshal($0.baseAddress, $0.count, &offset, &list) })
            out += withUnsafeBytes(of: &list) { Array($0) }
        }
        guard offset == bytes.count else { throw HarnessError("\(bytes.count - offset) bytes after the marshaled structures") }
        return out
    }

    private static func check(_ rc: TSS2_RC) throws {
        guard rc == 0 else { throw HarnessError("tpm2-tss marshalling failed: 0x\(String(rc, radix: 16))") }
    }
}
