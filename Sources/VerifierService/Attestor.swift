import FoundationEssentials
import NIOConcurrencyHelpers
import Verifier
import VerifierClient
import X509

/// Attests one claimed host with the code `vmv-verifier attest` runs (`AttestationRun`): the
/// same nonce, binding, AK, clock, replay and appraisal checks, with the host's replay state
/// coming from the fleet store instead of a state file.
public struct Attestor: Sendable {
    public var tls: ClientTLSFiles
    /// Reference sets by name (the configuration's `[references]`).
    public var references: [String: ReferenceSet]
    /// AK CA roots for hosts registered without a pinned AK.
    public var akCA: [Certificate]
    /// An attempt that takes longer is abandoned and the host counted unreachable.
    public var timeout: Duration

    public init(tls: ClientTLSFiles, references: [String: ReferenceSet], akCA: [Certificate], timeout: Duration) {
        self.tls = tls
        self.references = references
        self.akCA = akCA
        self.timeout = timeout
    }

    public func attest(_ claimed: ClaimedHost) async -> AttemptResult {
        let r = claimed.registration
        guard let refs = references[r.referenceSet] else {
            return .internalError("reference set '\(r.referenceSet)' is not in the configuration (known: \(references.keys.sorted().joined(separator: ", ")))")
        }
        let trust: AKTrust
        if let pin = r.akPin {
            trust = .pinned(pin)
        } else if !akCA.isEmpty {
            trust = .certificateAuthority(akCA)
        } else {
            return .internalError("the host has no pinned AK and the service has no [trust] ak_ca")
        }
        let store = ClaimedStateStore(claimed.state)
        let run = AttestationRun(url: r.url, tls: tls, akTrust: trust, references: refs, store: store)
        let timeout = self.timeout
        do {
            let outcome = try await withThrowingTaskGroup(of: AttestationRun.Outcome?.self) { group in
                group.addTask { try await run.run() }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let outcome = first else {
                    throw HostError("no answer within \(timeout)")
                }
                return outcome
            }
            return .answered(outcome, newState: store.saved)
        } catch let e as HostError {
            return e.status == nil ? .unreachable(e.description) : .hostError(e.description)
        } catch let e as EvidenceError {
            return .internalError(e.reason)
        } catch {
            return .unreachable("\(error)")
        }
    }
}

/// The per-host state of one attempt: what the store had at the claim, and what the run
/// would store; the service writes it with the verdict, in one transaction under the lease.
final class ClaimedStateStore: HostStateStore {
    let initial: HostState?
    private let box = NIOLockedValueBox<HostState?>(nil)

    init(_ initial: HostState?) { self.initial = initial }

    var saved: HostState? { box.withLockedValue { $0 } }

    func load(host: String) async throws -> HostState? { initial }

    func save(_ state: HostState) async throws { box.withLockedValue { $0 = state } }
}
