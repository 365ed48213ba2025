import Foundation
import ConfigFile
import Testing
import TPM
import VMVServer

/// vmv.example.toml, the strict TOML subset, and every rejection naming the file, the line and
/// the reason.
@Suite struct ConfigurationTests {
    static let exampleFile: String = {
        // Tests/VMVServerTests/ConfigurationTests.swift → the package root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("vmv.example.toml").path
    }()

    static func parse(_ text: String) throws(ConfigurationError) -> ServerConfiguration {
        try ServerConfiguration.parse(text, file: "test.toml", relativeTo: "/etc/vmv")
    }

    @Test func exampleFileSetsEveryOptionToItsDefault() throws {
        let loaded = try ServerConfiguration.load(file: Self.exampleFile)
        let directory = URL(fileURLWithPath: Self.exampleFile).deletingLastPathComponent().path
        var expected = ServerConfiguration()
        expected.source = Self.exampleFile
        expected.stateDirectory = directory + "/" + expected.stateDirectory
        expected.certificate = directory + "/" + expected.certificate
        expected.privateKey = directory + "/" + expected.privateKey
        expected.clientCA = directory + "/" + expected.clientCA
        #expect(loaded == expected)
        // Every key the example sets is documented in docs/configuration.md.
        let docs = try String(contentsOfFile: directory + "/docs/configuration.md", encoding: .utf8)
        let text = try String(contentsOfFile: Self.exampleFile, encoding: .utf8)
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && line.contains(" = ") {
            let key = line.split(separator: " ")[0]
            #expect(docs.contains("`\(key)`"), "docs/configuration.md does not describe \(key)")
        }
        // --check prints settings that parse back to the same configuration.
        var reparsed = try ServerConfiguration.parse(loaded.summary, file: "summary", relativeTo: nil)
        reparsed.source = loaded.source
        #expect(reparsed == loaded)
    }

    @Test func valuesAreRead() throws {
        let c = try Self.parse("""
            [tpm]
            tcti = "swtpm:host=127.0.0.1,port=2321"   # a comment
            pcr = 14
            ak_handle = 0x8101_0010
            [listen]
            port = 9443
            [tls]
            certificate = "server.pem"
            key = '/abs/server.key'
            [quote]
            batching = false
            batch_window_ms = 0
            [measure]
            xen = "off"
            """)
        #expect(c.tcti == .swtpm(configuration: "host=127.0.0.1,port=2321"))
        #expect(c.pcr == 14)
        #expect(c.akHandle == 0x8101_0010)
        #expect(c.port == 9443)
        #expect(c.certificate == "/etc/vmv/server.pem")
        #expect(c.privateKey == "/abs/server.key")
        #expect(c.batching == false)
        #expect(c.batchWindowMilliseconds == 0)
        #expect(c.xen == .off)
        #expect(c.address == ServerConfiguration().address)
    }

    /// Each bad file, the line the error must name, and a phrase of the reason.
    static let rejected: [(text: String, line: Int, reason: String)] = [
        ("[tpm]\npcr = 15\nbogus = 1\n", 3, "unknown key 'bogus'"),
        ("[listen]\n\nport = 70000\n", 3, "outside 0–65535"),
        ("[listen]\nport = \"8443\"\n", 2, "must be an integer, not a string"),
        ("[tpm]\npcr = 23\n", 2, "static, non-resettable"),
        ("[tpm]\ntcti = \"\"\n", 2, "TCTI string is empty"),
        ("[tpm]\nak_handle = 0x01c00002\n", 2, "not a persistent handle"),
        ("[quote]\nbatching = \"yes\"\n", 2, "must be true or false"),
        ("[quote]\nmax_batch = 0\n", 2, "outside 1–65536"),
        ("[measure]\nxen = \"maybe\"\n", 2, "expected one of"),
        ("[logging]\nlevel = \"loud\"\n", 2, "expected one of"),
        ("[measurement_log]\nretain_epochs = -1\n", 2, "outside 0–1000000"),
        ("\n\n[tsl]\ncertificate = \"x\"\n", 3, "unknown table [tsl]"),
        ("port = 1\n", 1, "outside any table"),
        ("[tpm]\npcr = 15\npcr = 14\n", 3, "set twice"),
        ("[tpm]\n[tpm]\n", 2, "defined twice"),
        ("[tpm]\npcr = 1.5\n", 2, "float"),
        ("[tpm]\ntcti = \"simulator\n", 2, "not closed"),
        ("[tpm]\ntcti = simulator\n", 2, "strings need quotes"),
        ("[tpm]\npcr = 15 16\n", 2, "after the value"),
        ("[tpm]\npcr.x = 1\n", 2, "dotted keys"),
        ("[tpm]\ntcti = { a = 1 }\n", 2, "inline tables"),
        ("[[tpm]]\n", 1, "arrays of tables"),
        ("[listen]\nport = 007\n", 2, "not a value"),
        ("[listen]\nport = 99999999999999999999\n", 2, "not a value"),
        ("[tpm]\ntcti = \"a\\qb\"\n", 2, "unknown escape"),
        ("[tpm]\ntcti = [\n \"a\",\n", 2, "never closed"),
        ("[tpm]\ntcti = [\"a\", 1]\n", 2, "must be a string, not an array"),
        ("[tpm]\ntcti = " + String(repeating: "[", count: 40) + "\n", 2, "nested deeper"),
        ("[state]\ndirectory = \"\"\n", 2, "directory is empty"),
    ]

    @Test(arguments: rejected)
    func badFilesNameFileLineAndReason(text: String, line: Int, reason: String) {
        do {
            let c = try Self.parse(text)
            Issue.record("accepted: \(text.debugDescription) → \(c)")
        } catch {
            #expect(error.file == "test.toml")
            #expect(error.line == line, "\(error)")
            #expect(error.reason.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("test.toml:\(line): "))
        }
    }

    @Test func unreadableFileIsNamed() {
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(file: "/nonexistent/vmv.toml") }
        do { _ = try ServerConfiguration.load(file: "/nonexistent/vmv.toml") } catch {
            #expect(error.description.hasPrefix("/nonexistent/vmv.toml: cannot read"))
        }
    }

    /// Random bytes and mutations of the example: an error or a configuration, never a crash.
    @Test func hostileInputNeverTraps() throws {
        let example = Array(try String(contentsOfFile: Self.exampleFile, encoding: .utf8).utf8)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<2000 {
            var bytes = example
            for _ in 0..<(1 + round % 8) {
                let i = Int.random(in: 0..<bytes.count, using: &generator)
                switch round % 3 {
                case 0: bytes[i] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.remove(at: i)
                default: bytes.insert(UInt8.random(in: 0...127, using: &generator), at: i)
                }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            do { _ = try Self.parse(text) } catch {
                #expect(error.line.map { $0 >= 1 } ?? true)
                #expect(!error.reason.isEmpty)
            }
        }
    }
}
