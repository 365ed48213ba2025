import TPMWire

/// The evidence of one quote, parsed: what `tpm2_quote -m/-s/-o` wrote, the AK, and
/// optionally the replay of an event log. Nothing in it is trusted until a `QuoteVerifier` says so.
public struct QuoteEvidence: Sendable {
    /// The TPMS_ATTEST bytes exactly as signed.
    public let message: [UInt8]
    public let attest: TPMSAttest
    public let signature: TPMTSignature
    public let ak: AttestationKey
    /// The PCR values supplied beside the quote, with the selection the file claims.
    public let pcrs: PCRFile
    /// The replay of the event log supplied beside the quote, if one was.
    public let eventLog: TCGReplay?

    public init(attest: TPMSAttest, message: [UInt8], signature: TPMTSignature, ak: AttestationKey,
                pcrs: PCRFile, eventLog: TCGReplay? = nil) {
        self.message = message
        self.attest = attest
        self.signature = signature
        self.ak = ak
        self.pcrs = pcrs
        self.eventLog = eventLog
    }

    /// Parses the message (TPMS_ATTEST) and signature (TPMT_SIGNATURE) files.
    public init(message: [UInt8], signature: [UInt8], ak: AttestationKey, pcrs: PCRFile,
                eventLog: TCGReplay? = nil) throws(EvidenceError) {
        let attest: TPMSAttest, sig: TPMTSignature
        do { attest = try TPMSAttest(wireBytes: message) } catch {
            throw EvidenceError("message: not a TPMS_ATTEST: \(error.reason)")
        }
        do { sig = try TPMTSignature(wireBytes: signature) } catch {
            throw EvidenceError("signature: not a TPMT_SIGNATURE: \(error.reason)")
        }
        self.init(attest: attest, message: message, signature: sig, ak: ak, pcrs: pcrs, eventLog: eventLog)
    }
}

/// The name of a quote rule: stable, for programs (`--json`) and for people (messages).
public struct QuoteRule: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let signature = QuoteRule(rawValue: "signature")
    public static let magic = QuoteRule(rawValue: "magic")
    public static let type = QuoteRule(rawValue: "type")
    public static let nonce = QuoteRule(rawValue: "nonce")
    public static let selection = QuoteRule(rawValue: "selection")
    public static let pcrDigest = QuoteRule(rawValue: "pcrDigest")
    public static let akAttributes = QuoteRule(rawValue: "akAttributes")
    public static let eventLogReplay = QuoteRule(rawValue: "eventLogReplay")
    public static let eventLogCoverage = QuoteRule(rawValue: "eventLogCoverage")
    public static let eventLogUnquoted = QuoteRule(rawValue: "eventLogUnquoted")
}

/// One rule's answer, as swift-certificates' `PolicyEvaluationResult`.
public enum QuotePolicyResult: Hashable, Sendable {
    case meetsPolicy
    case failsToMeetPolicy(reason: String)
}

/// One rule a quote must meet. Rules are small and independent; a `QuoteVerifier` runs a set
/// of them and collects every failure.
public protocol QuotePolicy: Sendable {
    var rule: QuoteRule { get }
    func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult
}

/// A failed rule and why.
public struct QuoteFailure: Hashable, Sendable, CustomStringConvertible {
    public let rule: QuoteRule
    public let reason: String
    public var description: String { "\(rule): \(reason)" }
}

/// The verdict on a quote.
public enum QuoteVerdict: Hashable, Sendable {
    case valid
    /// Every rule that failed, in the verifier's order.
    case rejected([QuoteFailure])

    public var isValid: Bool { self == .valid }

    public var failures: [QuoteFailure] {
        if case .rejected(let f) = self { f } else { [] }
    }
}

/// Checks quote evidence against a set of policies; valid only when every one is met.
public struct QuoteVerifier: Sendable {
    public var policies: [any QuotePolicy]

    public init(policies: [any QuotePolicy]) {
        self.policies = policies
    }

    /// Every rule of a quote check: the signature by the AK, magic, type, the nonce, the exact
    /// PCR selection, the PCR values against pcrDigest, the AK's attributes (when known), and
    /// with an event log its replay, its coverage of changed PCRs, and no events beyond the quote.
    public static func standard(nonce: [UInt8], selection: PCRSelection) -> QuoteVerifier {
        QuoteVerifier(policies: [
            SignatureVerifiesWithAK(),
            MagicIsTPMGenerated(),
            TypeIsQuote(),
            NonceMatches(nonce),
            SelectionMatches(selection),
            PCRValuesMatchDigest(),
            AKIsRestrictedSigningKey(),
            EventLogReplaysToQuotedValues(),
            EventLogCoversChangedPCRs(),
            EventLogHasOnlyQuotedPCRs(),
        ])
    }

    public func check(_ evidence: QuoteEvidence) -> QuoteVerdict {
        var failures: [QuoteFailure] = []
        for policy in policies {
            if case .failsToMeetPolicy(let reason) = policy.evaluate(evidence) {
                failures.append(QuoteFailure(rule: policy.rule, reason: reason))
            }
        }
        return failures.isEmpty ? .valid : .rejected(failures)
    }
}

/// Equality that takes the same time wherever the first difference is: for nonces and
/// anything else an attacker could probe byte by byte. The lengths are not secret.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
