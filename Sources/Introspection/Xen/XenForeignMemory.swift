import CXen
#if canImport(Glibc)
import Glibc
#endif

/// Frames of a guest mapped read-only into this process by one `xenforeignmemory_map` call.
/// Valid only inside the closure that receives it: the pages are unmapped when it returns, so
/// neither the struct nor a buffer from it may be kept.
public struct XenMappedFrames {
    public let domain: UInt32
    public let frames: [UInt64]
    private let base: UnsafeRawPointer
    private let errors: [Int32]

    init(domain: UInt32, frames: [UInt64], base: UnsafeRawPointer, errors: [Int32]) {
        self.domain = domain
        self.frames = frames
        self.base = base
        self.errors = errors
    }

    public var count: Int { frames.count }

    /// The bytes of the `index`th frame, or why Xen would not map it (its per-page errno).
    /// A frame that failed is never touched: reading an unmapped page would fault.
    public func page(_ index: Int) -> Result<UnsafeRawBufferPointer, XenError> {
        guard frames.indices.contains(index) else {
            return .failure(XenError(.invalidArgument, operation: "mapped frames", domain: domain,
                                     reason: "frame index \(index) outside the batch of \(frames.count)"))
        }
        let err = errors[index]
        guard err == 0 else {
            // libxenforeignmemory reports per-page errors as negative errno values.
            let e = err < 0 ? -err : err
            return .failure(XenError(e == EACCES || e == EPERM ? .permissionDenied : .mappingFailed,
                                     operation: "xenforeignmemory_map", domain: domain, errno: e,
                                     reason: "frame 0x\(String(frames[index], radix: 16)) was not mapped: \(String(cString: strerror(e)))"))
        }
        return .success(UnsafeRawBufferPointer(start: base + index * XenHost.pageSize, count: XenHost.pageSize))
    }
}

extension XenHost {
    /// Largest batch handed to one `xenforeignmemory_map` call.
    public static let maximumMappingBatch = 1024

    /// Maps `frames` of `domain` **read-only** (PROT_READ) in one batch and passes them to `body`.
    /// Frame numbers are those the guest's page tables hold: MFNs for PV, GFNs for PVH/HVM.
    /// Per-frame failures (a hole, a frame XSM denies) are reported per frame by
    /// `XenMappedFrames.page(_:)`; only a failure of the whole call throws.
    public func withMappedFrames<R>(domain: UInt32, frames: [UInt64],
                                    _ body: (XenMappedFrames) throws -> R) throws -> R {
        guard !frames.isEmpty, frames.count <= XenHost.maximumMappingBatch else {
            throw XenError(.invalidArgument, operation: "xenforeignmemory_map", domain: domain,
                           reason: "a batch holds 1 to \(XenHost.maximumMappingBatch) frames, not \(frames.count)")
        }
        var errors = [Int32](repeating: 0, count: frames.count)
        let pfns = frames.map { xen_pfn_t($0) }
        let mapped = pfns.withUnsafeBufferPointer { p in
            errors.withUnsafeMutableBufferPointer { e in
                xenforeignmemory_map(foreignMemory, domain, PROT_READ, p.count, p.baseAddress, e.baseAddress)
            }
        }
        guard let mapped else {
            throw XenError.call("xenforeignmemory_map", domain: domain, errno: errno,
                                "mapping \(frames.count) frame(s) from 0x\(String(frames[0], radix: 16))")
        }
        defer { _ = xenforeignmemory_unmap(foreignMemory, mapped, frames.count) }
        let view = XenMappedFrames(domain: domain, frames: frames, base: UnsafeRawPointer(mapped), errors: errors)
        return try body(view)
    }

    /// Copies one frame of `domain` (read-only mapping, then unmapped).
    public func readFrame(domain: UInt32, frame: UInt64) throws -> [UInt8] {
        try withMappedFrames(domain: domain, frames: [frame]) { m in
            try Array(m.page(0).get())
        }
    }
}
