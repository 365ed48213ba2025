import TPMWire

/// The signature verifies over the TPMS_ATTEST bytes with the AK; the scheme fits the key type
/// and, when the AK's TPMT_PUBLIC is known, is the scheme and hash the key is restricted to.
public struct SignatureVerifiesWithAK: QuotePolicy {
    public let rule = QuoteRule.signature
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        let sig = evidence.signature
        if let scheme = evidence.ak.tpmPublic?.key.scheme, scheme.scheme != .null,
           scheme.scheme != sig.scheme || scheme.hash != sig.hash {
            return .failsToMeetPolicy(reason: "signed with \(sig.scheme.name)/\(sig.hash.name), but the AK's scheme is \(scheme.scheme.name)/\(scheme.hash?.name ?? "none")")
        }
        if let failure = evidence.ak.verificationFailure(of: sig, over: evidence.message) {
            return .failsToMeetPolicy(reason: failure)
        }
        return .meetsPolicy
    }
}

/// magic is TPM_GENERATED_VALUE: the TPM made the structure itself (it never signs external
/// data that starts with this value with a restricted key).
public struct MagicIsTPMGenerated: QuotePolicy {
    public let rule = QuoteRule.magic
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        let magic = evidence.attest.magic
        return magic == TPMSAttest.generatedValue ? .meetsPolicy
            : .failsToMeetPolicy(reason: "magic is 0x\(String(magic, radix: 16)), not TPM_GENERATED_VALUE (0xff544347)")
    }
}

/// The attestation is a quote (TPM_ST_ATTEST_QUOTE), not another signed statement.
public struct TypeIsQuote: QuotePolicy {
    public let rule = QuoteRule.type
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        let type = evidence.attest.type
        return type == .quote ? .meetsPolicy : .failsToMeetPolicy(reason: "attestation is \(type), not TPM_ST_ATTEST_QUOTE")
    }
}

/// extraData equals the verifier's nonce (compared in constant time): the quote is fresh.
public struct NonceMatches: QuotePolicy {
    public let rule = QuoteRule.nonce
    public let nonce: [UInt8]
    public init(_ nonce: [UInt8]) { self.nonce = nonce }

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        let extra = evidence.attest.extraData
        if constantTimeEqual(extra, nonce) { return .meetsPolicy }
        return .failsToMeetPolicy(reason: extra.count == nonce.count
            ? "extraData differs from the nonce"
            : "extraData has \(extra.count) bytes, the nonce \(nonce.count)")
    }
}

/// The quote's signed PCR selection is exactly the required one: the same banks and PCRs,
/// no more, no fewer.
public struct SelectionMatches: QuotePolicy {
    public let rule = QuoteRule.selection
    public let required: PCRSelection
    public init(_ required: PCRSelection) { self.required = required }

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let quoted = evidence.attest.quote?.pcrSelect else {
            return .failsToMeetPolicy(reason: "not a quote: it selects no PCRs")
        }
        if quoted.isSameSelection(as: required) { return .meetsPolicy }
        return .failsToMeetPolicy(reason: "quote selects \(quoted.nonEmptyDescription), required \(required.nonEmptyDescription)"
            + selectionDifference(quoted, required, "quote"))
    }
}

/// The supplied PCR values are exactly the quoted ones (the file selects what the quote
/// selects) and hash to pcrDigest. The digest uses the signature's hash, as the TPM computes
/// it (TPM2_Quote hashes the PCRs with the signing scheme's hash) and tpm2_checkquote checks it.
public struct PCRValuesMatchDigest: QuotePolicy {
    public let rule = QuoteRule.pcrDigest
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let quote = evidence.attest.quote else {
            return .failsToMeetPolicy(reason: "not a quote: there is no pcrDigest")
        }
        let supplied = evidence.pcrs.selection
        guard supplied.isSameSelection(as: quote.pcrSelect) else {
            return .failsToMeetPolicy(reason: "the PCR file holds \(supplied.nonEmptyDescription), the quote covers \(quote.pcrSelect.nonEmptyDescription)"
                + selectionDifference(supplied, quote.pcrSelect, "PCR file"))
        }
        guard let values = evidence.pcrs.values.values(in: quote.pcrSelect) else {
            return .failsToMeetPolicy(reason: "the PCR file lacks a value the quote covers")
        }
        let hash = evidence.signature.hash
        guard let digest = hash.hash(values.flatMap { $0 }) else {
            return .failsToMeetPolicy(reason: "cannot hash the PCR values with \(hash.name)")
        }
        return constantTimeEqual(digest, quote.pcrDigest) ? .meetsPolicy
            : .failsToMeetPolicy(reason: "the \(hash.name) digest of the supplied PCR values is \(Hex.encode(digest)), the quote's pcrDigest is \(Hex.encode(quote.pcrDigest))")
    }
}

/// An AK given as TPM2B_PUBLIC is a restricted signing key that never left its TPM:
/// restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin. (A PEM key says nothing
/// about attributes; its trust comes from elsewhere, such as an AK certificate.)
public struct AKIsRestrictedSigningKey: QuotePolicy {
    public let rule = QuoteRule.akAttributes
    public static let required = TPMAObject.attestationKey
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let attributes = evidence.ak.tpmPublic?.objectAttributes else { return .meetsPolicy }
        let missing = Self.required.subtracting(attributes)
        return missing.isEmpty ? .meetsPolicy
            : .failsToMeetPolicy(reason: "the AK lacks \(missing) (it has \(attributes))")
    }
}

/// With an event log: every quoted PCR the log has events for replays to its quoted value.
public struct EventLogReplaysToQuotedValues: QuotePolicy {
    public let rule = QuoteRule.eventLogReplay
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let log = evidence.eventLog, let quote = evidence.attest.quote else { return .meetsPolicy }
        var mismatches: [String] = []
        for (bank, pcr) in quote.pcrSelect.pairs {
            guard let replayed = log.values[bank, pcr], let quoted = evidence.pcrs.values[bank, pcr] else { continue }
            if replayed != quoted { mismatches.append("\(bank.name):\(pcr)") }
        }
        return mismatches.isEmpty ? .meetsPolicy
            : .failsToMeetPolicy(reason: "the event log replays to other values than quoted for \(mismatches.joined(separator: ", "))")
    }
}

/// With an event log: every quoted PCR that is not at its initial value has events in the
/// log, so nothing measured into it goes unexplained.
public struct EventLogCoversChangedPCRs: QuotePolicy {
    public let rule = QuoteRule.eventLogCoverage
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let log = evidence.eventLog, let quote = evidence.attest.quote else { return .meetsPolicy }
        var uncovered: [String] = []
        for (bank, pcr) in quote.pcrSelect.pairs where !log.covers(pcr: pcr, bank: bank) {
            guard let quoted = evidence.pcrs.values[bank, pcr] else { continue }
            if quoted != log.initialValue(pcr: pcr, bank: bank) { uncovered.append("\(bank.name):\(pcr)") }
        }
        return uncovered.isEmpty ? .meetsPolicy
            : .failsToMeetPolicy(reason: "quoted PCRs changed but without events in the log: \(uncovered.joined(separator: ", "))")
    }
}

/// With an event log: the log has no events for PCRs the quote does not cover (such events
/// would be unverified claims). PCRs are compared by index: a log extends every bank, and one
/// quoted bank is enough to check an event.
public struct EventLogHasOnlyQuotedPCRs: QuotePolicy {
    public let rule = QuoteRule.eventLogUnquoted
    public init() {}

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard let log = evidence.eventLog else { return .meetsPolicy }
        let quoted = Set(evidence.attest.quote?.pcrSelect.pairs.map(\.pcr) ?? [])
        let logged = Set(log.covered.pairs.map(\.pcr))
        let unquoted = logged.subtracting(quoted).sorted()
        return unquoted.isEmpty ? .meetsPolicy
            : .failsToMeetPolicy(reason: "the event log has events for PCRs the quote does not cover: \(unquoted.map(String.init).joined(separator: ","))")
    }
}

extension PCRSelection {
    /// tpm2-tools syntax without empty banks; "nothing" for an empty selection.
    var nonEmptyDescription: String {
        let s = PCRSelection(banks: banks.filter { !$0.pcrs.isEmpty }).description
        return s.isEmpty ? "nothing" : s
    }
}

/// " (quote has extra …; lacks …)": what `a` selects beyond `b`, and what it misses.
func selectionDifference(_ a: PCRSelection, _ b: PCRSelection, _ name: String) -> String {
    func describe(_ byBank: [TPMAlgorithm: Set<Int>]) -> String {
        byBank.keys.sorted().compactMap { bank in
            guard let pcrs = byBank[bank], !pcrs.isEmpty else { return nil }
            return "\(bank.name):" + pcrs.sorted().map(String.init).joined(separator: ",")
        }.joined(separator: "+")
    }
    let x = a.pcrsByBank, y = b.pcrsByBank
    var extra: [TPMAlgorithm: Set<Int>] = [:], missing: [TPMAlgorithm: Set<Int>] = [:]
    for (bank, pcrs) in x { extra[bank] = pcrs.subtracting(y[bank] ?? []) }
    for (bank, pcrs) in y { missing[bank] = pcrs.subtracting(x[bank] ?? []) }
    var parts: [String] = []
    let e = describe(extra), m = describe(missing)
    if !e.isEmpty { parts.append("\(name) has extra \(e)") }
    if !m.isEmpty { parts.append("\(name) lacks \(m)") }
    return parts.isEmpty ? "" : " (" + parts.joined(separator: "; ") + ")"
}
