import ConfigFile

/// libFuzzer target for the configuration reader (the strict TOML subset behind `vmv serve`
/// and `vmv-verifier serve`): never a trap, and every error names a line the text has.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigFile(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let lines = bytes.reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
    do {
        var reader = try ConfigReader(parsing: String(decoding: bytes, as: UTF8.self), file: "fuzz.toml", directory: "/etc/vmv")
        for name in ["tpm", "listen", "t"] {
            try reader.table(name) { (t: inout ConfigReader.Table) throws(ConfigurationError) in
                _ = try t.string("s")
                _ = try t.integer("i", in: -5...5)
                _ = try t.boolean("b")
                _ = try t.strings("a")
                if let (p, line) = try t.string("path") { _ = try t.nonEmptyPath(p, line, "path") }
            }
        }
        try reader.finish()
    } catch {
        if let line = error.line {
            precondition(line >= 1 && line <= lines, "an error at line \(line) of a text with \(lines) lines: \(error)")
        }
    }
    return 0
}
