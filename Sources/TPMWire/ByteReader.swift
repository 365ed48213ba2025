/// A cursor over untrusted bytes. Every read is bounds-checked and names the field it reads,
/// so a short or inflated input becomes a `WireError` that says where, never a trap.
///
/// TPM structures are big-endian; the TCG event log is little-endian. Both are here.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public private(set) var end: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
    }

    public init(_ bytes: ArraySlice<UInt8>) {
        self.init(Array(bytes))
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    @inline(__always)
    mutating func need(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) {
        guard count >= 0, count <= end - offset else {
            throw WireError.truncated(field(), needed: count, available: end - offset)
        }
    }

    public mutating func readUInt8(_ field: @autoclosure () -> String) throws(WireError) -> UInt8 {
        try need(1, field())
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readUInt16(_ field: @autoclosure () -> String) throws(WireError) -> UInt16 {
        try need(2, field())
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    public mutating func readUInt32(_ field: @autoclosure () -> String) throws(WireError) -> UInt32 {
        try need(4, field())
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }

    public mutating func readUInt64(_ field: @autoclosure () -> String) throws(WireError) -> UInt64 {
        try need(8, field())
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }

    public mutating func readUInt16LE(_ field: @autoclosure () -> String) throws(WireError) -> UInt16 {
        try need(2, field())
        defer { offset += 2 }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    public mutating func readUInt32LE(_ field: @autoclosure () -> String) throws(WireError) -> UInt32 {
        try need(4, field())
        var v: UInt32 = 0
        for i in (0..<4).reversed() { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }

    public mutating func readUInt64LE(_ field: @autoclosure () -> String) throws(WireError) -> UInt64 {
        try need(8, field())
        var v: UInt64 = 0
        for i in (0..<8).reversed() { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }

    public mutating func readBytes(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) -> [UInt8] {
        try need(count, field())
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    public mutating func skip(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) {
        try need(count, field())
        offset += count
    }

    /// A TPM2B: a big-endian UInt16 size, then that many bytes. `max` is the structure's
    /// own limit (for example the digest size of the largest hash), checked before the
    /// bytes are touched.
    public mutating func readSized(_ field: @autoclosure () -> String, max: Int = Int(UInt16.max)) throws(WireError) -> [UInt8] {
        let size = Int(try readUInt16("\(field()).size"))
        guard size <= max else {
            throw WireError(.sizeTooLarge, "\(field()): size \(size) exceeds the limit of \(max)")
        }
        guard size <= remaining else {
            throw WireError(.sizeTooLarge, "\(field()): size \(size) exceeds the \(remaining) bytes left")
        }
        return try readBytes(size, field())
    }

    /// A reader over the next `count` bytes, which this reader then skips.
    public mutating func subReader(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) -> ByteReader {
        try need(count, field())
        var sub = self
        sub.end = offset + count
        offset += count
        return sub
    }

    /// Fails unless every byte has been consumed: a structure that must fill its buffer.
    public func expectEnd(_ structure: @autoclosure () -> String) throws(WireError) {
        guard offset == end else {
            throw WireError(.trailingBytes, "\(structure()): \(end - offset) unexpected bytes after the structure")
        }
    }
}

/// Serialises TPM structures (big-endian) and event-log records (little-endian).
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ v: UInt8) { bytes.append(v) }

    public mutating func write(_ v: UInt16) {
        bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff))
    }

    public mutating func write(_ v: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(shift)) & 0xff)) }
    }

    public mutating func write(_ v: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(shift)) & 0xff)) }
    }

    public mutating func writeLE(_ v: UInt16) {
        bytes.append(UInt8(v & 0xff)); bytes.append(UInt8(v >> 8))
    }

    public mutating func writeLE(_ v: UInt32) {
        for shift in stride(from: 0, through: 24, by: 8) { bytes.append(UInt8((v >> UInt32(shift)) & 0xff)) }
    }

    public mutating func writeLE(_ v: UInt64) {
        for shift in stride(from: 0, through: 56, by: 8) { bytes.append(UInt8((v >> UInt64(shift)) & 0xff)) }
    }

    public mutating func write<C: Collection>(bytes b: C) where C.Element == UInt8 {
        bytes.append(contentsOf: b)
    }

    /// A TPM2B: big-endian UInt16 size, then the bytes.
    public mutating func writeSized<C: Collection>(_ b: C) where C.Element == UInt8 {
        precondition(b.count <= Int(UInt16.max), "TPM2B payload over 65535 bytes")
        write(UInt16(b.count))
        bytes.append(contentsOf: b)
    }
}

/// A structure with a TPM wire encoding: a throwing initialiser from bytes, and a serialiser back.
public protocol TPMWireCodable: Sendable {
    init(from reader: inout ByteReader) throws(WireError)
    func write(to writer: inout ByteWriter)
}

extension TPMWireCodable {
    /// Parses a whole buffer as this structure; trailing bytes are an error.
    public init(wireBytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(wireBytes)
        self = try Self(from: &reader)
        try reader.expectEnd(String(describing: Self.self))
    }

    public var wireBytes: [UInt8] {
        var w = ByteWriter()
        write(to: &w)
        return w.bytes
    }
}
