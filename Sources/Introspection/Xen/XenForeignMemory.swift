import CXen
#if canImport(Glibc)
import Glibc
#endif

extension XenHost {
    /// Largest batch handed to one `xenforeignmemory_map` call.
    public static let maximumMappingBatch = 1024

    /// Maps `frames` of `domain` **read-only** (PROT_READ) in one batch and passes them to `body`;
    /// they are unmapped when it returns. Frame numbers are those the guest's page tables hold:
    /// MFNs for PV, GFNs for PVH/HVM. A frame Xen would not map (a hole, a frame XSM denies)
    /// fails alone, with its per-page errno, in `MappedFrames.page(_:)`, and is never touched;
    /// only a failure of the whole call throws.
    public func withMappedFrames<R>(domain: UInt32, frames: [UInt64],
                                    _ body: (MappedFrames) throws -> R) throws -> R {
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
        var pointers = [UnsafeRawPointer?](repeating: nil, count: frames.count)
        var failures: [Int: FrameError] = [:]
        for i in frames.indices {
            // libxenforeignmemory reports per-page errors as negative errno values.
            let e = errors[i] < 0 ? -errors[i] : errors[i]
            if e == 0 {
                pointers[i] = UnsafeRawPointer(mapped) + i * XenHost.pageSize
            } else {
                failures[i] = FrameError(frame: frames[i], code: .mappingFailed,
                                         reason: "domain \(domain): xenforeignmemory_map refused it: \(String(cString: strerror(e))) [errno \(e)]")
            }
        }
        return try body(MappedFrames(frames: frames, pointers: pointers, errors: failures))
    }

    /// Copies one frame of `domain` (read-only mapping, then unmapped).
    public func readFrame(domain: UInt32, frame: UInt64) throws -> [UInt8] {
        try withMappedFrames(domain: domain, frames: [frame]) { m in
            try Array(m.page(0))
        }
    }
}
