import CXen
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Read access to xenstore (libxenstore). Permissions are xenstored's node ACLs: a VMV domP
/// reads only what dom0 granted it (`xenstore-chmod … r<vmv domid>`).
public final class XenStore: Sendable {
    nonisolated(unsafe) let handle: OpaquePointer

    public init() throws {
        guard let h = xs_open(0) else {
            let err = errno
            throw XenError(err == EACCES ? .permissionDenied : .notOnXen, operation: "xs_open", errno: err,
                           reason: "cannot connect to xenstore (is xenstored running and /dev/xen/xenbus present?): \(String(cString: strerror(err)))")
        }
        handle = h
    }

    deinit { xs_close(handle) }

    /// The value at `path`, or nil when the node does not exist.
    public func read(_ path: String) throws -> String? {
        var length: UInt32 = 0
        guard let raw = xs_read(handle, xs_transaction_t(XBT_NULL), path, &length) else {
            let err = errno
            if err == ENOENT { return nil }
            throw XenError.call("xs_read \(path)", errno: err, "reading xenstore")
        }
        defer { free(raw) }
        let bytes = UnsafeRawBufferPointer(start: raw, count: Int(length))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The children of `path`, or [] when the node does not exist.
    public func directory(_ path: String) throws -> [String] {
        var count: UInt32 = 0
        guard let list = xs_directory(handle, xs_transaction_t(XBT_NULL), path, &count) else {
            let err = errno
            if err == ENOENT { return [] }
            throw XenError.call("xs_directory \(path)", errno: err, "listing xenstore")
        }
        defer { free(list) }  // one allocation holds the array and the strings
        return (0..<Int(count)).compactMap { list[$0].map { String(cString: $0) } }
    }
}

/// A domain appearing or going away, as `@introduceDomain` / `@releaseDomain` report it.
public enum XenDomainEvent: Sendable, Equatable {
    case introduced(XenDomainInfo)
    case released(id: UInt32, name: String?)
}

extension XenHost {
    /// Domains coming and going, from a xenstore watch on `@introduceDomain` and `@releaseDomain`.
    /// The first events are the domains present when the watch starts, so one loop over the
    /// sequence sees every domain once. Xen's watch events do not say which domain changed; each
    /// one is answered by listing the domains again and reporting the difference.
    public func domainEvents() throws -> XenDomainEvents {
        try XenDomainEvents(host: self)
    }
}

/// The sequence behind `XenHost.domainEvents()`. A dedicated thread waits on the watch's file
/// descriptor; cancelling the consuming task (or dropping the iterator) stops it.
public struct XenDomainEvents: AsyncSequence, Sendable {
    public typealias Element = XenDomainEvent
    private let stream: AsyncThrowingStream<XenDomainEvent, any Error>

    init(host: XenHost) throws {
        let watch = try XenStore()  // its own connection: watch events arrive on it
        for path in ["@introduceDomain", "@releaseDomain"] {
            guard xs_watch(watch.handle, path, "vmv") else {
                throw XenError.call("xs_watch \(path)", errno: errno, "watching domains")
            }
        }
        let (stream, continuation) = AsyncThrowingStream<XenDomainEvent, any Error>.makeStream()
        let stop = StopFlag()
        continuation.onTermination = { _ in stop.set() }
        let thread = Thread {
            XenDomainEvents.run(host: host, watch: watch, stop: stop, continuation: continuation)
        }
        thread.name = "vmv-xen-domain-watch"
        thread.start()
        self.stream = stream
    }

    public func makeAsyncIterator() -> AsyncThrowingStream<XenDomainEvent, any Error>.Iterator {
        stream.makeAsyncIterator()
    }

    private static func run(host: XenHost, watch: XenStore, stop: StopFlag,
                            continuation: AsyncThrowingStream<XenDomainEvent, any Error>.Continuation) {
        var known: [UInt32: XenDomainInfo] = [:]
        var pending = true  // report what is there at the start
        let fd = xs_fileno(watch.handle)
        while !stop.isSet {
            if pending {
                pending = false
                do {
                    let now = try host.domains()
                    let ids = Set(now.map(\.id))
                    for d in now where known[d.id] == nil || known[d.id]?.uuid != d.uuid {
                        known[d.id] = d
                        continuation.yield(.introduced(d))
                    }
                    for (id, d) in known where !ids.contains(id) {
                        known[id] = nil
                        continuation.yield(.released(id: id, name: d.name))
                    }
                } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 250)  // wake up now and then to notice cancellation
            if ready < 0 && errno != EINTR {
                continuation.finish(throwing: XenError.call("poll xenstore watch", errno: errno, "waiting for domain events"))
                return
            }
            guard ready > 0 else { continue }
            while let event = xs_check_watch(watch.handle) {
                free(event)
                pending = true
            }
            if errno != EAGAIN && errno != 0 && !pending {
                continuation.finish(throwing: XenError.call("xs_check_watch", errno: errno, "reading domain events"))
                return
            }
        }
        continuation.finish()
    }
}

/// Set once from the stream's termination handler, read by the watch thread.
private final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
