#if canImport(Glibc)
import Glibc
#endif

/// A failure of a Xen operation, with the call that failed, the domain it was about, the errno
/// Xen or the kernel gave, and what it means for the operator.
public struct XenError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// This machine is not a Xen domain with the privcmd driver (or libxen is unusable).
        case notOnXen
        /// Xen, XSM/Flask or xenstored refused (EPERM/EACCES).
        case permissionDenied
        /// The domain does not exist (any more).
        case noSuchDomain
        /// A hypercall or library call failed for another reason.
        case callFailed
        /// A foreign mapping of one or more frames failed.
        case mappingFailed
        /// An argument that cannot name anything in Xen (out-of-range frame, empty batch, …).
        case invalidArgument
    }

    public let code: Code
    /// The library call or xenstore path concerned, e.g. `xc_vcpu_getcontext`.
    public let operation: String
    public let domain: UInt32?
    public let errno: Int32?
    public let reason: String

    public init(_ code: Code, operation: String, domain: UInt32? = nil, errno: Int32? = nil, reason: String) {
        self.code = code
        self.operation = operation
        self.domain = domain
        self.errno = errno
        self.reason = reason
    }

    /// Builds the error for a failed C call from its errno.
    static func call(_ operation: String, domain: UInt32? = nil, errno err: Int32, _ what: String) -> XenError {
        let code: Code
        switch err {
        case EPERM, EACCES: code = .permissionDenied
        case ESRCH: code = .noSuchDomain
        default: code = .callFailed
        }
        var reason = "\(what): \(String(cString: strerror(err)))"
        if code == .permissionDenied {
            reason += " (Xen's XSM/Flask policy, xenstored's node permissions or a restricted privcmd refused it)"
        }
        return XenError(code, operation: operation, domain: domain, errno: err, reason: reason)
    }

    public var description: String {
        var s = "Xen: \(operation)"
        if let domain { s += " (domain \(domain))" }
        s += ": \(reason)"
        if let errno { s += " [errno \(errno)]" }
        return s
    }
}
