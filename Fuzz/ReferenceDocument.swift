import Verifier

/// libFuzzer target for reference documents (`--refs DIR`): parsing never traps, and a
/// document that parses writes JSON that parses back to the same document.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReferenceDocument(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let doc = try? ReferenceDocument(json: bytes, name: "fuzz") {
        precondition((try? ReferenceDocument(json: doc.json(), name: "again")) == doc, "a document does not survive its own JSON")
    }
    return 0
}
