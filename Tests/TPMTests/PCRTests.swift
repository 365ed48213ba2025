import Crypto
import TestSupport
import Testing
import TPM
import TPMWire

/// PCR reads and extends against a swtpm the test starts, checked against values computed
/// here with swift-crypto and against tpm2_pcrread on the same swtpm.
@Suite struct PCRTests {
    static func hashConcatenation(_ hash: TPMAlgorithm, _ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        switch hash {
        case .sha1: Array(Insecure.SHA1.hash(data: a + b))
        case .sha256: Array(SHA256.hash(data: a + b))
        case .sha384: Array(SHA384.hash(data: a + b))
        default: []
        }
    }

    @Test func infoReportsTheSimulatorAndItsTwoBanks() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        defer { Task { await tpm.close() } }
        let info = try await tpm.info()
        #expect(info.manufacturer == "IBM")
        #expect(info.specFamily == "2.0")
        #expect(info.pcrCount == 24)
        #expect(info.allocatedBanks == [.sha1, .sha256])
        // swtpm implements sha384/sha512 too, unallocated: listed without PCRs.
        #expect(info.pcrBanks.banks.contains { $0.hash == .sha384 && $0.pcrs.isEmpty })
        await tpm.close()
    }

    @Test func extendWritesEveryBankAndReadsBackWhatToolsRead() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        let selection = try PCRSelection(parsing: "sha1:16,23+sha256:16,23")
        let before = try await tpm.readPCRs(selection)

        var digests: [TPMAlgorithm: [UInt8]] = [:]
        digests[.sha1] = (0..<20).map { _ in UInt8.random(in: 0...255) }
        digests[.sha256] = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try await tpm.extend(pcr: 16, digests: digests)

        let after = try await tpm.readPCRs(selection)
        for hash in [TPMAlgorithm.sha1, .sha256] {
            let old = try #require(before[hash, 16])
            #expect(after[hash, 16] == Self.hashConcatenation(hash, old, digests[hash] ?? []))
            #expect(after[hash, 23] == before[hash, 23], "PCR 23 was not extended")
        }
        #expect(after != before)
        // The peer reads the same values from the same TPM.
        #expect(try TPM2Tools(simulator).pcrRead("sha1:16,23+sha256:16,23") == after)
        await tpm.close()
    }

    @Test func readsMoreThanEightPCRsInPieces() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        for pcr in [0, 7, 8, 15, 23] {
            try await tpm.extend(pcr: pcr, digests: [.sha1: [UInt8](repeating: UInt8(pcr), count: 20),
                                                     .sha256: [UInt8](repeating: UInt8(pcr), count: 32)])
        }
        // 48 values: six TPM2_PCR_Read calls at eight values each.
        let all = try await tpm.readPCRs(PCRSelection(parsing: "sha1:all+sha256:all"))
        #expect(all.banks[.sha1]?.count == 24)
        #expect(all.banks[.sha256]?.count == 24)
        #expect(try TPM2Tools(simulator).pcrRead("sha1:all+sha256:all") == all)
        // PCRs 17-22 start at all ones on a PC Client TPM; 16 is untouched here.
        #expect(all[.sha256, 17] == [UInt8](repeating: 0xFF, count: 32))
        #expect(all[.sha256, 16] == [UInt8](repeating: 0, count: 32))
        await tpm.close()
    }

    @Test func hashingExtendHashesTheDataInEveryBank() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        let selection = try PCRSelection(parsing: "sha1:15+sha256:15")
        let before = try await tpm.readPCRs(selection)
        let data = Array("vmv measurement".utf8)
        let written = try await tpm.extend(pcr: 15, hashing: data)
        #expect(written[.sha1] == Array(Insecure.SHA1.hash(data: data)))
        #expect(written[.sha256] == Array(SHA256.hash(data: data)))
        let after = try await tpm.readPCRs(selection)
        for hash in [TPMAlgorithm.sha1, .sha256] {
            #expect(after[hash, 15] == Self.hashConcatenation(hash, before[hash, 15] ?? [], written[hash] ?? []))
        }
        await tpm.close()
    }

    @Test func refusesUnallocatedBanksMissingBanksAndBadDigests() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        let unallocated = await #expect(throws: TPMError.self) {
            try await tpm.readPCRs(PCRSelection(parsing: "sha384:0"))
        }
        #expect(unallocated?.code == .invalidArgument)
        #expect(unallocated?.reason == "bank sha384 is not allocated on this TPM (allocated: sha1, sha256)")

        let missing = await #expect(throws: TPMError.self) {
            try await tpm.extend(pcr: 16, digests: [.sha256: [UInt8](repeating: 1, count: 32)])
        }
        #expect(missing?.reason == "no digest for allocated bank sha1")

        let short = await #expect(throws: TPMError.self) {
            try await tpm.extend(pcr: 16, digests: [.sha1: [UInt8](repeating: 1, count: 20), .sha256: [1, 2, 3]])
        }
        #expect(short?.reason == "the sha256 digest has 3 bytes, not 32")

        let outOfRange = await #expect(throws: TPMError.self) {
            try await tpm.extend(pcr: 24, digests: [.sha1: [UInt8](repeating: 1, count: 20),
                                                    .sha256: [UInt8](repeating: 1, count: 32)])
        }
        #expect(outOfRange?.reason == "PCR 24 does not exist on this TPM")
        // Nothing was extended by the refused calls.
        let pcr16 = try await tpm.readPCRs(PCRSelection(parsing: "sha256:16"))
        #expect(pcr16[.sha256, 16] == [UInt8](repeating: 0, count: 32))
        await tpm.close()
    }
}
