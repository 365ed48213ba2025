import Foundation
import Synchronization
@testable import TPM

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy in front of swtpm's data port that answers TPM_RC_RETRY instead of swtpm for
/// the next `inject(n)` commands with a given command code, and forwards everything else.
///
/// The swtpm TCTI opens one connection per command, so the proxy reads one command per
/// connection: a 10-byte header (tag, size, command code), then the rest. The control channel
/// (port + 1, where the TCTI sets the locality) is relayed as is.
final class RetryInjectingProxy: Sendable {
    let port: Int
    private let target: Int
    private let commandCode: UInt32
    private let listener: Int32
    private let controlListener: Int32
    private let state = Mutex<(remaining: Int, seen: Int, running: Bool)>((0, 0, true))

    var tcti: TCTIConfiguration { .swtpm(configuration: "host=127.0.0.1,port=\(port)") }
    var remaining: Int { state.withLock { $0.remaining } }
    /// Commands with the code seen since the last `inject`.
    var seen: Int { state.withLock { $0.seen } }

    init(target: Int, commandCode: UInt32) throws {
        self.target = target
        self.commandCode = commandCode
        var pair: (Int32, Int32, Int)?
        for _ in 0..<32 where pair == nil {
            guard let data = Self.listen(0) else { continue }
            let dataPort = Self.port(of: data)
            if let control = Self.listen(dataPort + 1) { pair = (data, control, dataPort) } else { close(data) }
        }
        guard let (data, control, dataPort) = pair else { throw POSIXError(.EADDRINUSE) }
        listener = data
        controlListener = control
        port = dataPort
        Thread { [self] in serve() }.start()
        Thread { [self] in relayControl() }.start()
    }

    private static func listen(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = LoopbackPorts.loopback(port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else { close(fd); return nil }
        return fd
    }

    private static func port(of fd: Int32) -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Relays control-channel connections to swtpm's control port, both ways, until either side closes.
    private func relayControl() {
        while state.withLock({ $0.running }) {
            let client = accept(controlListener, nil, nil)
            guard client >= 0 else { continue }
            guard let upstream = Self.connect(target + 1) else { close(client); continue }
            var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)]
            var buffer = [UInt8](repeating: 0, count: 4096)
            relaying: while poll(&fds, 2, 2000) > 0 {
                for (i, other) in [(0, upstream), (1, client)] where fds[i].revents != 0 {
                    let n = buffer.withUnsafeMutableBytes { recv(fds[i].fd, $0.baseAddress, $0.count, 0) }
                    guard n > 0 else { break relaying }
                    Self.write(other, Array(buffer[0..<n]))
                }
            }
            close(upstream)
            close(client)
        }
    }

    private static func connect(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = LoopbackPorts.loopback(port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); return nil }
        return fd
    }

    func inject(_ count: Int) {
        state.withLock { $0.remaining = count; $0.seen = 0 }
    }

    func stop() {
        state.withLock { $0.running = false }
        for fd in [listener, controlListener] {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    private func serve() {
        while state.withLock({ $0.running }) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        guard let header = Self.read(client, 10) else { return }
        let size = Int(UInt32(header[2]) << 24 | UInt32(header[3]) << 16 | UInt32(header[4]) << 8 | UInt32(header[5]))
        let code = UInt32(header[6]) << 24 | UInt32(header[7]) << 16 | UInt32(header[8]) << 8 | UInt32(header[9])
        guard size >= 10, let body = Self.read(client, size - 10) else { return }
        let injectHere = state.withLock { s -> Bool in
            guard code == commandCode else { return false }
            s.seen += 1
            guard s.remaining > 0 else { return false }
            s.remaining -= 1
            return true
        }
        if injectHere {
            // tag TPM_ST_NO_SESSIONS, size 10, TPM_RC_RETRY
            Self.write(client, [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22])
            return
        }
        guard let upstream = Self.connect(target) else { return }
        defer { close(upstream) }
        Self.write(upstream, header + body)
        guard let responseHeader = Self.read(upstream, 10) else { return }
        let responseSize = Int(UInt32(responseHeader[2]) << 24 | UInt32(responseHeader[3]) << 16
                               | UInt32(responseHeader[4]) << 8 | UInt32(responseHeader[5]))
        guard responseSize >= 10, let responseBody = Self.read(upstream, responseSize - 10) else { return }
        Self.write(client, responseHeader + responseBody)
    }

    private static func read(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, count - done, 0) }
            guard n > 0 else { return nil }
            done += n
        }
        return buffer
    }

    private static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            done += n
        }
    }
}
