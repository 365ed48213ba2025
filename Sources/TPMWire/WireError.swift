/// Why a sequence of bytes is not the structure it claims to be.
///
/// One small struct with a code (for programs) and a reason (for people), in the style of
/// swift-certificates' errors. The reason always names the structure and field that failed.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// Fewer bytes than the structure needs.
        case truncated
        /// A size field larger than the structure allows or than the bytes that remain.
        case sizeTooLarge
        /// An algorithm identifier this implementation does not know or does not allow here.
        case unknownAlgorithm
        /// A count field beyond the structure's limit.
        case countTooLarge
        /// Bytes left over after a structure that must fill its buffer.
        case trailingBytes
        /// A field holding a value the specification does not allow.
        case invalidValue
        /// Text input (a PCR list, hex) that does not follow its syntax.
        case syntax
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }

    public static func truncated(_ field: String, needed: Int, available: Int) -> WireError {
        WireError(.truncated, "\(field): needs \(needed) bytes, only \(available) left")
    }
}
