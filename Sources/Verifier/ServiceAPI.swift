/// The JSON bodies of the VMV host's HTTPS API (docs/api.md), shared by the server and its
/// clients so that both sides read the same field names. Binary TPM structures travel base64
/// (standard alphabet, padded) in the encodings tpm2-tools writes; digests and nonces as hex.
///
/// These are wire shapes only: nothing in them is trusted until the quote checks say so.
public enum ServiceAPI {
    public static let version = 1

    /// `POST /v1/quote`
    public struct QuoteRequest: Codable, Sendable, Equatable {
        /// Hex, 16–64 bytes.
        public var nonce: String
        /// tpm2-tools syntax (`sha256:15`); nil: the VMV PCR in every allocated bank.
        public var pcrSelection: String?
        /// The log the verifier already has; nil: the whole current epoch.
        public var log: LogCursor?

        public init(nonce: String, pcrSelection: String? = nil, log: LogCursor? = nil) {
            self.nonce = nonce
            self.pcrSelection = pcrSelection
            self.log = log
        }
    }

    /// Records with seq >= `since` of epoch `epoch`.
    public struct LogCursor: Codable, Sendable, Equatable {
        public var epoch: UInt32
        public var since: UInt64
        public init(epoch: UInt32, since: UInt64) {
            self.epoch = epoch
            self.since = since
        }
    }

    public struct QuoteResponse: Codable, Sendable {
        public var version: Int
        public var quote: Quote
        public var binding: Binding
        public var log: Log?
        public var ak: AK
        public var ek: EK
        public var host: Host

        public init(version: Int = ServiceAPI.version, quote: Quote, binding: Binding, log: Log?, ak: AK, ek: EK, host: Host) {
            self.version = version
            self.quote = quote
            self.binding = binding
            self.log = log
            self.ak = ak
            self.ek = ek
            self.host = host
        }
    }

    public struct Quote: Codable, Sendable, Equatable {
        /// base64 TPMS_ATTEST (`tpm2_quote -m`)
        public var message: String
        /// base64 TPMT_SIGNATURE (`tpm2_quote -s`)
        public var signature: String
        /// base64 PCR values in tpm2-tools' serialized format (`tpm2_quote -o`)
        public var pcrs: String
        /// tpm2-tools syntax, the selection quoted
        public var pcrSelection: String

        public init(message: String, signature: String, pcrs: String, pcrSelection: String) {
            self.message = message
            self.signature = signature
            self.pcrs = pcrs
            self.pcrSelection = pcrSelection
        }
    }

    /// How extraData commits to the nonce and the TLS key (`QuoteBinding`).
    public struct Binding: Codable, Sendable, Equatable {
        public var scheme: String
        /// hex SHA-256 of the SPKI DER of the server certificate the VMV presents
        public var tlsKeyHash: String
        public var leafIndex: Int
        public var leafCount: Int
        /// hex audit path, bottom up
        public var proof: [String]

        public init(scheme: String = QuoteBinding.scheme, tlsKeyHash: String, leafIndex: Int, leafCount: Int, proof: [String]) {
            self.scheme = scheme
            self.tlsKeyHash = tlsKeyHash
            self.leafIndex = leafIndex
            self.leafCount = leafCount
            self.proof = proof
        }
    }

    /// A part of one epoch's TCG event log.
    public struct Log: Codable, Sendable, Equatable {
        public var epoch: UInt32
        public var since: UInt64
        /// The first seq not included; the quote beside it accounts for exactly the records before it.
        public var nextSeq: UInt64
        /// base64 the epoch's TCG_PCR_EVENT Spec ID header record
        public var header: String
        /// base64 concatenated TCG_PCR_EVENT2 records with since <= seq < nextSeq
        public var records: String
        public var epochInfo: EpochInfo

        public init(epoch: UInt32, since: UInt64, nextSeq: UInt64, header: String, records: String, epochInfo: EpochInfo) {
            self.epoch = epoch
            self.since = since
            self.nextSeq = nextSeq
            self.header = header
            self.records = records
            self.epochInfo = epochInfo
        }
    }

    public struct EpochInfo: Codable, Sendable, Equatable {
        /// "open", "closed" or "broken"
        public var state: String
        /// Why the epoch is broken or was started (TPM reset, unexplained PCR state, …).
        public var reason: String?
        /// The PCR values the epoch starts from, bank name → hex, when not the initial value.
        public var startedFrom: [String: String]?
        public var resetCount: UInt32?
        public var restartCount: UInt32?

        public init(state: String, reason: String? = nil, startedFrom: [String: String]? = nil,
                    resetCount: UInt32? = nil, restartCount: UInt32? = nil) {
            self.state = state
            self.reason = reason
            self.startedFrom = startedFrom
            self.resetCount = resetCount
            self.restartCount = restartCount
        }
    }

    public struct AK: Codable, Sendable, Equatable {
        /// base64 TPM2B_PUBLIC
        public var publicArea: String
        /// hex TPM Name (nameAlg ‖ H(TPMT_PUBLIC))
        public var name: String
        /// "0x81010003"
        public var handle: String
        /// PEM AK certificates issued at enrollment, newest first
        public var certificates: [String]

        enum CodingKeys: String, CodingKey {
            case publicArea = "public"
            case name, handle, certificates
        }

        public init(publicArea: String, name: String, handle: String, certificates: [String]) {
            self.publicArea = publicArea
            self.name = name
            self.handle = handle
            self.certificates = certificates
        }
    }

    public struct EK: Codable, Sendable, Equatable {
        /// PEM EK certificate from the TPM's NV, if the TPM has one
        public var certificate: String?
        /// base64 TPM2B_PUBLIC of the EK the AK was created under
        public var publicArea: String?

        enum CodingKeys: String, CodingKey {
            case certificate
            case publicArea = "public"
        }

        public init(certificate: String?, publicArea: String?) {
            self.certificate = certificate
            self.publicArea = publicArea
        }
    }

    public struct Host: Codable, Sendable, Equatable {
        public var hostname: String
        public var vmvVersion: String
        public var pcr: Int

        public init(hostname: String, vmvVersion: String, pcr: Int) {
            self.hostname = hostname
            self.vmvVersion = vmvVersion
            self.pcr = pcr
        }
    }

    /// `GET /v1/ak`
    public struct AKResponse: Codable, Sendable, Equatable {
        public var ak: AK
        public var ek: EK
        public init(ak: AK, ek: EK) {
            self.ak = ak
            self.ek = ek
        }
    }

    /// `POST /v1/enroll/activate`
    public struct ActivateRequest: Codable, Sendable, Equatable {
        /// base64 TPM2B_ID_OBJECT
        public var credentialBlob: String
        /// base64 TPM2B_ENCRYPTED_SECRET
        public var secret: String
        public init(credentialBlob: String, secret: String) {
            self.credentialBlob = credentialBlob
            self.secret = secret
        }
    }

    public struct ActivateResponse: Codable, Sendable, Equatable {
        /// hex `ActivationProof`
        public var proof: String
        public init(proof: String) { self.proof = proof }
    }

    /// `POST /v1/enroll/certificate`
    public struct CertificateRequest: Codable, Sendable, Equatable {
        /// PEM AK certificate
        public var certificate: String
        public init(certificate: String) { self.certificate = certificate }
    }

    /// `GET /v1/domains`
    public struct DomainsResponse: Codable, Sendable, Equatable {
        public var domains: [Domain]
        /// Why there are no domains to show (no Xen on this host), if so.
        public var note: String?
        public init(domains: [Domain], note: String? = nil) {
            self.domains = domains
            self.note = note
        }
    }

    public struct Domain: Codable, Sendable, Equatable {
        public var domid: UInt32
        public var name: String
        public var uuid: String
        /// "pv", "pvh" or "hvm"
        public var type: String
        /// "running", "paused", "shutdown", "dying", …
        public var state: String
        /// subject (e.g. "kernel.text") → seq of its last measurement record
        public var measurements: [String: UInt64]
        /// What the VMV's guest measurer knows (absent when it has not measured the domain):
        /// the incarnation it measured, its kernel release, when it last measured it and when a
        /// pass last recorded something (ISO 8601 UTC), the roots last recorded (subject → hex
        /// Merkle root), and its last error.
        public var incarnation: String?
        public var kernelRelease: String?
        public var lastMeasured: String?
        public var lastChanged: String?
        public var roots: [String: String]?
        public var lastError: String?

        public init(domid: UInt32, name: String, uuid: String, type: String, state: String, measurements: [String: UInt64],
                    incarnation: String? = nil, kernelRelease: String? = nil, lastMeasured: String? = nil, lastChanged: String? = nil,
                    roots: [String: String]? = nil, lastError: String? = nil) {
            self.domid = domid
            self.name = name
            self.uuid = uuid
            self.type = type
            self.state = state
            self.measurements = measurements
            self.incarnation = incarnation
            self.kernelRelease = kernelRelease
            self.lastMeasured = lastMeasured
            self.lastChanged = lastChanged
            self.roots = roots
            self.lastError = lastError
        }
    }

    /// `GET /healthz`
    public struct Health: Codable, Sendable, Equatable {
        /// "ok" or "unavailable"
        public var status: String
        public var reason: String?
        public init(status: String, reason: String? = nil) {
            self.status = status
            self.reason = reason
        }
    }

    /// Every 4xx/5xx body.
    public struct ErrorResponse: Codable, Sendable, Equatable {
        public struct Body: Codable, Sendable, Equatable {
            /// Stable, for programs: bad_request, bad_nonce, bad_selection, log_gone, not_found,
            /// too_large, rate_limited, unavailable, internal, …
            public var code: String
            public var message: String
            public init(code: String, message: String) {
                self.code = code
                self.message = message
            }
        }
        public var error: Body
        public init(code: String, message: String) { error = Body(code: code, message: message) }
    }
}
