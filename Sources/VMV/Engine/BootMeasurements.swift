import Crypto
import Foundation
import Introspection
import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// The VMV's own measurements when it starts, before any guest's: its executable, its
/// configuration, and the platform facts it can read by itself (its domain's kernel, and the
/// hypervisor as `/sys/hypervisor` shows it). FLASK's mode and the launch log, which need
/// libxenctrl and xenstore, are `XSMMeasurements`; Xen's build id comes later.
public enum BootMeasurements {
    /// - Parameters:
    ///   - executable: the running binary (`/proc/self/exe` resolves to it and reads the
    ///     mapped file even if it was replaced on disk since).
    ///   - configurationFile: the file the configuration was read from; nil when the VMV runs
    ///     on its defaults, whose text (`VMVConfiguration.text`) is measured instead.
    public static func collect(
        executable: String = "/proc/self/exe", configurationFile: String?, configuration: VMVConfiguration,
        sysfs: String = "/sys"
    ) throws(MeasurementLogError) -> [Measurement] {
        var out: [Measurement] = []

        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable
        let (digest, size) = try sha256(ofFile: executable)
        out.append(Measurement(kind: .vmvBinary, subject: VMVEventRecord.sanitized(path, maxBytes: VMVEventRecord.maxSubject),
                               contentDigest: TCGDigest(algorithm: .sha256, bytes: digest),
                               attributes: [("size", String(size))]))

        if let configurationFile {
            guard let bytes = try LogFiles.read(configurationFile) else {
                throw MeasurementLogError(.notFound, "\(configurationFile): the configuration file does not exist")
            }
            out.append(Measurement.content(.vmvConfig, subject: VMVEventRecord.sanitized(configurationFile, maxBytes: VMVEventRecord.maxSubject),
                                           hashing: bytes, attributes: [("pcr", String(configuration.pcr)), ("source", "file")]))
        } else {
            out.append(Measurement.content(.vmvConfig, subject: "defaults", hashing: Array(configuration.text.utf8),
                                           attributes: [("pcr", String(configuration.pcr)), ("source", "defaults")]))
        }

        var names = utsname()
        uname(&names)
        let kernel: [(String, String)] = [
            ("kernel.release", field(&names.release)), ("kernel.version", field(&names.version)),
            ("machine", field(&names.machine)), ("hostname", field(&names.nodename)),
        ]
        out.append(facts(subject: "vmv-domain.kernel", kernel))

        if let type = text(sysfs + "/hypervisor/type") {
            var hypervisor: [(String, String)] = [("hypervisor.type", type)]
            if let major = text(sysfs + "/hypervisor/version/major"), let minor = text(sysfs + "/hypervisor/version/minor") {
                hypervisor.append(("xen.version", "\(major).\(minor)\(text(sysfs + "/hypervisor/version/extra") ?? "")"))
            }
            if let changeset = text(sysfs + "/hypervisor/properties/changeset") { hypervisor.append(("xen.changeset", changeset)) }
            if let uuid = text(sysfs + "/hypervisor/uuid") { hypervisor.append(("vmv-domain.uuid", uuid)) }
            out.append(facts(subject: "hypervisor", hypervisor))
        }
        return out
    }

    /// A platform record of facts: the attributes, and as content digest the SHA-256 of the
    /// same facts as `key=value` lines in key order (what a reference value can name).
    static func facts(subject: String, _ pairs: [(String, String)]) -> Measurement {
        let clean = pairs.map { ($0.0, VMVEventRecord.sanitized($0.1)) }
        let attributes = VMVEventRecord.Attribute.canonical(clean)
        let text = attributes.map { "\($0.key)=\($0.value)\n" }.joined()
        return Measurement(kind: .platform, subject: subject,
                           contentDigest: TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Array(text.utf8)))),
                           attributes: clean)
    }

    static func sha256(ofFile path: String) throws(MeasurementLogError) -> (digest: [UInt8], size: Int) {
        let fd = try LogFiles.open(path, O_RDONLY)
        defer { close(fd) }
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var size = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LogFiles.error("read", path)
            }
            if n == 0 { break }
            hasher.update(data: chunk[0..<n])
            size += n
        }
        return (Array(hasher.finalize()), size)
    }

    private static func text(_ path: String) -> String? {
        guard let bytes = try? LogFiles.read(path) else { return nil }
        let s = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? nil : s
    }

    private static func field<T>(_ tuple: inout T) -> String {
        withUnsafeBytes(of: &tuple) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

extension MeasurementEngine {
    /// Measures the VMV itself (see `BootMeasurements`): what `vmv serve` does first of all,
    /// right after recovery.
    ///
    /// On Xen it also records FLASK's mode, the VMV's label and the launch log
    /// (`XSMMeasurements`), through `xen` or a `XenHost` it opens; off Xen there is nothing to ask.
    public func measureBoot(configurationFile: String?, configuration: VMVConfiguration, xen: XenHost? = nil) async throws -> [LogRecord] {
        var out: [LogRecord] = []
        for m in try BootMeasurements.collect(configurationFile: configurationFile, configuration: configuration) {
            out.append(try await measure(m))
        }
        if let host = try xen ?? XSMMeasurements.openXen() {
            out += try await measureXSM(host: host)
        }
        return out
    }
}
