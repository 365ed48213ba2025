import TPMWire
import Verifier

/// A TPM quote as the API serves it: the bytes tpm2-tools would write for it.
public struct SignedQuote: Sendable, Hashable {
    /// TPMS_ATTEST as signed (`tpm2_quote -m`).
    public let message: [UInt8]
    /// TPMT_SIGNATURE (`tpm2_quote -s`).
    public let signature: [UInt8]
    /// The quoted PCR values in tpm2-tools' serialized PCR file format (`tpm2_quote -o`).
    public let pcrs: [UInt8]
    /// The selection the quote covers.
    public let selection: PCRSelection
    /// What the quote covers beyond the PCRs, decided at the moment of the quote (the log
    /// position whose records the quoted PCR values account for).
    public let logPosition: LogPosition?

    public init(message: [UInt8], signature: [UInt8], pcrs: [UInt8], selection: PCRSelection, logPosition: LogPosition? = nil) {
        self.message = message
        self.signature = signature
        self.pcrs = pcrs
        self.selection = selection
        self.logPosition = logPosition
    }
}

/// The end of the log a quote accounts for: its epoch and the first seq it does not cover.
public struct LogPosition: Sendable, Hashable {
    public let epoch: UInt32
    public let nextSeq: UInt64
    public init(epoch: UInt32, nextSeq: UInt64) {
        self.epoch = epoch
        self.nextSeq = nextSeq
    }
}

/// One request's share of a batched quote.
public struct BatchedQuote: Sendable {
    public let quote: SignedQuote
    public let proof: BindingProof
}

/// Turns concurrent quote requests into few TPM quotes (`vmv-merkle-sha256-v1`, see
/// `QuoteBinding`).
///
/// The first request for a PCR selection opens a batch and waits `window`; requests for the
/// same selection that arrive meanwhile join it; the batch is quoted when the window ends or at
/// once when it holds `maxBatch` requests. While the TPM works on one batch the next one fills,
/// so under load every TPM quote serves many verifiers. With batching off every request gets a
/// TPM quote of its own (a batch of one, whose root is its leaf).
public actor QuoteBatcher {
    public struct Configuration: Sendable {
        public var enabled: Bool
        public var window: Duration
        public var maxBatch: Int
        public init(enabled: Bool, window: Duration, maxBatch: Int) {
            self.enabled = enabled
            self.window = window
            self.maxBatch = max(1, min(maxBatch, QuoteBinding.maxLeafCount))
        }
    }

    /// Takes one TPM quote of `selection` with `qualifyingData`.
    public typealias Signer = @Sendable (_ selection: PCRSelection, _ qualifyingData: [UInt8]) async throws -> SignedQuote

    public let configuration: Configuration
    /// SHA-256 of the SPKI of the certificate this server presents.
    public nonisolated let tlsKeyHash: [UInt8]
    private let signer: Signer
    private let metrics: ServerMetrics?

    private struct Batch {
        let id: UInt64
        var leaves: [[UInt8]] = []
        var waiters: [CheckedContinuation<BatchedQuote, any Error>] = []
    }
    private var open: [PCRSelection: Batch] = [:]
    private var nextID: UInt64 = 0

    public init(configuration: Configuration, tlsKeyHash: [UInt8], metrics: ServerMetrics? = nil, signer: @escaping Signer) {
        self.configuration = configuration
        self.tlsKeyHash = tlsKeyHash
        self.metrics = metrics
        self.signer = signer
    }

    /// A quote of `selection` whose qualifying data commits to `nonce` and this server's TLS
    /// key, with the proof of that commitment. `nonce` must be 16–64 bytes.
    public func quote(nonce: [UInt8], selection: PCRSelection) async throws -> BatchedQuote {
        precondition(QuoteBinding.nonceSizes.contains(nonce.count), "nonce sizes are checked by the caller")
        let leaf = QuoteBinding.leaf(nonce: nonce, tlsKeyHash: tlsKeyHash)
        guard configuration.enabled else {
            let signed = try await sign(selection, [leaf])
            return BatchedQuote(quote: signed, proof: BindingTree(leaves: [leaf]).proof(for: 0))
        }
        return try await withCheckedThrowingContinuation { continuation in
            var batch = open[selection] ?? {
                nextID += 1
                let id = nextID
                let window = configuration.window
                Task { [weak self] in
                    try? await Task.sleep(for: window)
                    await self?.flush(selection, id: id)
                }
                return Batch(id: id)
            }()
            batch.leaves.append(leaf)
            batch.waiters.append(continuation)
            open[selection] = batch
            if batch.leaves.count >= configuration.maxBatch {
                let id = batch.id
                Task { await self.flush(selection, id: id) }
            }
        }
    }

    /// Quotes the open batch `id` of `selection` (if it is still open) and answers its waiters.
    private func flush(_ selection: PCRSelection, id: UInt64) async {
        guard let batch = open[selection], batch.id == id else { return }   // already flushed (full)
        open[selection] = nil
        let tree = BindingTree(leaves: batch.leaves)
        do {
            let signed = try await sign(selection, batch.leaves, tree: tree)
            for (index, waiter) in batch.waiters.enumerated() {
                waiter.resume(returning: BatchedQuote(quote: signed, proof: tree.proof(for: index)))
            }
        } catch {
            for waiter in batch.waiters { waiter.resume(throwing: error) }
        }
    }

    private func sign(_ selection: PCRSelection, _ leaves: [[UInt8]], tree: BindingTree? = nil) async throws -> SignedQuote {
        let root = (tree ?? BindingTree(leaves: leaves)).root
        let start = ContinuousClock.now
        do {
            let signed = try await signer(selection, root)
            metrics?.recordQuote(batchSize: leaves.count, batched: configuration.enabled, duration: ContinuousClock.now - start)
            return signed
        } catch {
            metrics?.recordError(kind: "tpm_quote")
            throw error
        }
    }
}
