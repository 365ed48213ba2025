import Testing
@testable import TPMWire

/// Checks shared by the hostile-input tests of every parser.
enum Hostile {
    /// Every proper prefix of a valid encoding must be refused with a WireError (never a trap,
    /// never a silent success), and the whole encoding must parse.
    static func expectEveryTruncationRefused(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation,
                                             _ parse: ([UInt8]) throws(WireError) -> Void) {
        #expect(throws: Never.self, sourceLocation: sourceLocation) { try parse(bytes) }
        for length in 0..<bytes.count {
            let error = #expect(throws: WireError.self, "prefix of \(length) bytes", sourceLocation: sourceLocation) {
                try parse(Array(bytes.prefix(length)))
            }
            if let error {
                #expect([.truncated, .sizeTooLarge, .invalidValue].contains(error.code),
                        "prefix of \(length): \(error)", sourceLocation: sourceLocation)
            }
        }
        // and one byte too many
        let trailing = #expect(throws: WireError.self, sourceLocation: sourceLocation) { try parse(bytes + [0]) }
        #expect(trailing?.code == .trailingBytes || trailing?.code == .invalidValue, sourceLocation: sourceLocation)
    }

    /// Overwrites bytes at `offset` and returns the parser's error.
    static func patched(_ bytes: [UInt8], at offset: Int, with patch: [UInt8]) -> [UInt8] {
        var b = bytes
        b.replaceSubrange(offset..<(offset + patch.count), with: patch)
        return b
    }
}
