import TPMWire

/// libFuzzer target for tpm2-tools PCR files. The first byte picks the format (and, for
/// `values`, one of a few selections); the rest is the file. Never traps; whatever parses
/// writes back in every format and reads back to the same selection and values.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPCRFile(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let first = input.first else { return 0 }
    let format = PCRFileFormat.allCases[Int(first % 3)]
    let selections = ["sha256:0,1,15", "sha1:0,15+sha256:0,1,15", "sha256:all", "sha384:0+sha512:23"]
    let selection = try? PCRSelection(parsing: selections[Int(first / 3) % selections.count])
    guard let file = try? PCRFile(bytes: Array(input.dropFirst()), format: format, selection: selection) else { return 0 }
    for out in PCRFileFormat.allCases {
        guard let written = try? file.bytes(format: out) else {
            preconditionFailure("a parsed PCR file cannot be written as \(out)")
        }
        guard let again = try? PCRFile(bytes: written, format: out, selection: file.selection) else {
            preconditionFailure("a written \(out) PCR file does not parse")
        }
        precondition(again.values == file.values && again.selection.isSameSelection(as: file.selection),
                     "\(out) round trip changes the PCR file")
    }
    return 0
}
