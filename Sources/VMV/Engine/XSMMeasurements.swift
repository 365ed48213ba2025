import Crypto
import Introspection
import TPMWire

/// The platform's security configuration as platform records (docs/domp.md, "Attesting the
/// policy"): FLASK's mode as Xen reports it to the VMV (subject `xsm`), and each launch event
/// dom0's builder extended into the launch PCR before the VMV ran (subject `launch.<kind>`), the
/// loaded policy's hash among them (`launch.xsm-policy`, content digest = the policy's SHA-256).
/// A verifier's platform verdict requires the expected policy in enforcing mode.
public enum XSMMeasurements {
    /// Subject of the record of FLASK's mode and the VMV's label.
    public static let subject = "xsm"

    public static func collect(status: XSMStatus, launch: LaunchLog?) -> [Measurement] {
        var facts: [(String, String)] = [("xsm.mode", status.mode.rawValue)]
        if let label = status.label { facts.append(("xsm.label", label)) }
        var out = [BootMeasurements.facts(subject: subject, facts)]
        guard let launch else { return out }
        for event in launch.events {
            // A file event's content is the file it names; the others are their own text.
            let digest = event.sha256 ?? Array(SHA256.hash(data: event.text))
            var attributes: [(String, String)] = [
                (LaunchEvent.recordAttribute, String(decoding: event.text, as: UTF8.self)),
                (LaunchEvent.pcrAttribute, String(launch.pcr)),
            ]
            if let size = event.size { attributes.append(("size", String(size))) }
            out.append(Measurement(kind: .platform, subject: event.subject,
                                   contentDigest: TCGDigest(algorithm: .sha256, bytes: digest), attributes: attributes))
        }
        return out
    }
}

extension MeasurementEngine {
    /// Records FLASK's mode, the VMV's label and the launch log (see `XSMMeasurements`): part of
    /// the VMV's boot measurements when it runs on Xen.
    public func measureXSM(host: XenHost) async throws -> [LogRecord] {
        let measurements = XSMMeasurements.collect(status: try host.xsmStatus(), launch: try host.launchLog())
        var out: [LogRecord] = []
        for m in measurements { out.append(try await measure(m)) }
        return out
    }
}

extension XSMMeasurements {
    /// A `XenHost` when this VMV runs on Xen with privcmd; nil off Xen (`XenError.notOnXen`).
    /// Any other failure (privcmd refused, xenstore unreachable) is an error: on Xen the
    /// platform's security facts must be recorded or the boot measurements fail.
    static func openXen() throws -> XenHost? {
        do {
            return try XenHost()
        } catch let error as XenError where error.code == .notOnXen {
            return nil
        }
    }
}
