import Crypto
import CryptoExtras
import Foundation
import Testing
import TPMWire
@testable import Verifier

/// The OAEP encoding and RSA public operation MakeCredential uses, checked by decrypting with
/// implementations that are not ours: swift-crypto (empty label) and openssl (with a label).
@Suite struct RSAOAEPTests {
    static func primitives(_ key: _RSA.Encryption.PrivateKey) throws -> (modulus: [UInt8], exponent: UInt32) {
        let p = try key.publicKey.getKeyPrimitives()
        let exponent = p.publicExponent.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return (Array(p.modulus), exponent)
    }

    @Test(arguments: [2048, 3072])
    func swiftCryptoDecryptsWhatWeEncrypt(bits: Int) throws {
        let key = try _RSA.Encryption.PrivateKey(keySize: .init(bitCount: bits))
        let (modulus, exponent) = try Self.primitives(key)
        for length in [0, 1, 32, bits / 8 - 66] {
            let message = RSAOAEP.randomBytes(length)
            let ciphertext = try RSAOAEP.encrypt(message, modulus: modulus, exponent: exponent, hash: .sha256, label: [])
            #expect(ciphertext.count == bits / 8)
            #expect(Array(try key.decrypt(ciphertext, padding: .PKCS1_OAEP_SHA256)) == message)
        }
    }

    @Test func openSSLDecryptsWithTheIdentityLabel() throws {
        let key = try _RSA.Encryption.PrivateKey(keySize: .bits2048)
        let (modulus, exponent) = try Self.primitives(key)
        let seed = RSAOAEP.randomBytes(32)
        let label = "IDENTITY".labelBytes
        let ciphertext = try RSAOAEP.encrypt(seed, modulus: modulus, exponent: exponent, hash: .sha256, label: label)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("oaep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try key.pemRepresentation.write(to: dir.appendingPathComponent("key.pem"), atomically: true, encoding: .utf8)
        try Data(ciphertext).write(to: dir.appendingPathComponent("ct.bin"))
        let decrypt = { (labelHex: String) throws -> [UInt8] in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            p.arguments = ["pkeyutl", "-decrypt", "-inkey", dir.appendingPathComponent("key.pem").path,
                           "-in", dir.appendingPathComponent("ct.bin").path,
                           "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                           "-pkeyopt", "rsa_mgf1_md:sha256", "-pkeyopt", "rsa_oaep_label:\(labelHex)"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = Pipe()
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw RSAOAEP.Failure.invalidKey("openssl refused") }
            return Array(data)
        }
        #expect(try decrypt(Hex.encode(label)) == seed)
        // The label is bound: the same ciphertext does not decrypt under another label.
        #expect(throws: RSAOAEP.Failure.self) { try decrypt(Hex.encode("IDENTITY".utf8)) }
    }

    @Test func refusesWhatOAEPCannotCarryAndBadKeys() throws {
        let key = try _RSA.Encryption.PrivateKey(keySize: .bits2048)
        let (modulus, exponent) = try Self.primitives(key)
        #expect(throws: RSAOAEP.Failure.messageTooLong(191, max: 190)) {
            try RSAOAEP.encrypt(RSAOAEP.randomBytes(191), modulus: modulus, exponent: exponent, hash: .sha256, label: [])
        }
        #expect(throws: RSAOAEP.Failure.self) {
            try RSAOAEP.encrypt([1], modulus: [0xFF] + [UInt8](repeating: 0, count: 255), exponent: 65537, hash: .sha256, label: [])
        }
        #expect(throws: RSAOAEP.Failure.self) {
            try RSAOAEP.encrypt([1], modulus: [0x01, 0x01], exponent: 65537, hash: .sha256, label: [])
        }
        #expect(throws: RSAOAEP.Failure.unsupportedHash(.sm3_256)) {
            try RSAOAEP.encrypt([1], modulus: modulus, exponent: exponent, hash: .sm3_256, label: [])
        }
    }
}
