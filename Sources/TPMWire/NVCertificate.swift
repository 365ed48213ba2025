/// Certificates as TPMs store them in NV (EK certificates at 0x01c00002, 0x01c0000a, …).
public enum NVCertificate {
    /// An NV index is often larger than the DER certificate in it, and padded with 00 or FF.
    /// The outer SEQUENCE header says where the certificate ends; what follows is dropped only
    /// if it is all padding (anything else is left for the certificate parser to refuse).
    public static func trimmingPadding(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count >= 4, bytes[0] == 0x30 else { return bytes }
        var length = 0
        var header = 2
        let first = Int(bytes[1])
        if first < 0x80 {
            length = first
        } else {
            let count = first & 0x7F
            guard count >= 1, count <= 3, bytes.count >= 2 + count else { return bytes }
            for i in 0..<count { length = length << 8 | Int(bytes[2 + i]) }
            header += count
        }
        let end = header + length
        guard end < bytes.count else { return bytes }
        let tail = bytes[end...]
        guard tail.allSatisfy({ $0 == 0x00 }) || tail.allSatisfy({ $0 == 0xFF }) else { return bytes }
        return Array(bytes[..<end])
    }
}
