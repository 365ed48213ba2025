import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// TCP ports on 127.0.0.1: for swtpm, and for the test harnesses that start servers.
///
/// Ports are chosen below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a port
/// kept across a restart (swtpm power-cycled on the port its TCTI names, a host restarted on its
/// URL) is then never taken meanwhile by some outgoing connection's automatic local port.
public enum LoopbackPorts {
    /// Two consecutive free ports P, P+1 (the swtpm TCTI puts the control channel on P+1).
    static func freePair(_ operation: String) throws(TPMError) -> Int {
        guard let port = free(count: 2) else {
            throw TPMError(.simulator, operation: operation, reason: "found no two consecutive free loopback ports below the ephemeral range")
        }
        return port
    }

    /// A port P such that P ..< P + count are free on 127.0.0.1 and none is in `avoiding`;
    /// nil when 200 random tries found none.
    public static func free(count: Int = 1, avoiding: Set<Int> = []) -> Int? {
        let range = 10000..<max(10001, ephemeralStart() - count)
        for _ in 0..<200 {
            let port = Int.random(in: range)
            let ports = port..<(port + count)
            if ports.allSatisfy({ !avoiding.contains($0) && canBind($0) }) { return port }
        }
        return nil
    }

    /// Whether nothing holds `port` on 127.0.0.1 (a bind without SO_REUSEADDR succeeds).
    public static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// The first port of the kernel's ephemeral range (32768 when it cannot be read).
    static func ephemeralStart() -> Int {
        let text = FileManager.default.contents(atPath: "/proc/sys/net/ipv4/ip_local_port_range").map { String(decoding: $0, as: UTF8.self) }
        guard let low = text?.split(whereSeparator: \.isWhitespace).first.flatMap({ Int($0) }), low > 10001 else { return 32768 }
        return low
    }

    /// Whether a TPM answers on 127.0.0.1:port: TPM2_GetRandom(8) gets a response, any response
    /// (TPM_RC_INITIALIZE from a TPM still waiting for Startup counts), within 200 ms.
    static func answers(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = loopback(port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return false }
        // tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8
        let command: [UInt8] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8]
        guard command.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == command.count else {
            return false
        }
        var header = [UInt8](repeating: 0, count: 10)
        let received = header.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }
        return received == 10 && header[0] == 0x80
    }

    static func loopback(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        return address
    }
}
