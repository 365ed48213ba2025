/// Hex encoding of bytes, as tpm2-tools prints and reads them.
public enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes hex (an optional `0x` prefix, upper or lower case, no separators).
    public static func decode(_ text: String, field: String = "hex") throws(WireError) -> [UInt8] {
        var utf8 = Array(text.utf8)
        if utf8.count >= 2, utf8[0] == UInt8(ascii: "0"), utf8[1] | 0x20 == UInt8(ascii: "x") { utf8.removeFirst(2) }
        guard utf8.count % 2 == 0 else {
            throw WireError(.syntax, "\(field): odd number of hex digits (\(utf8.count))")
        }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]) else { throw notHex(utf8, i, field) }
            guard let lo = nibble(utf8[i + 1]) else { throw notHex(utf8, i + 1, field) }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func notHex(_ utf8: [UInt8], _ i: Int, _ field: String) -> WireError {
        WireError(.syntax, "\(field): byte 0x\(String(utf8[i], radix: 16)) at position \(i) is not a hex digit")
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
