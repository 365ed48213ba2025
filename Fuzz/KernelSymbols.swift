import Introspection
import TPMWire

/// libFuzzer target for the symbol sources the locator trusts to refine its ranges: System.map
/// text and vmlinux ELF files. Never traps; a map that parses has `_stext` or `_text`, and the
/// same bytes parse the same way twice.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKernelSymbols(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let text = String(decoding: bytes, as: UTF8.self)
    let first = Result { () throws(WireError) in try KernelSymbols(systemMap: text, origin: "fuzz") }
    let second = Result { () throws(WireError) in try KernelSymbols(systemMap: text, origin: "fuzz") }
    precondition(first == second, "System.map parsing is not deterministic")
    if case .success(let s) = first { precondition(s.stext != nil, "a parsed map without _stext") }
    if let s = try? KernelSymbols(vmlinux: MappedFile(bytes: bytes, name: "fuzz vmlinux")) {
        precondition(s.stext != nil, "a parsed vmlinux without _stext")
    }
    return 0
}
