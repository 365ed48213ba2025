import Foundation
import TPMWire

/// What a domain was built from, as the toolstack recorded it: the kernel image, initrd and
/// command line (the load-time facts of a guest), and the domain's configuration.
///
/// On Xen 4.17 with xl/libxl (docs/introspection.md, "Load-time facts"), two places hold it:
/// - libxl's userdata `/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json` (root-only, dom0):
///   the domain's whole `libxl_domain_config` as JSON, for every guest type; `xl list -l`
///   prints the same object. `b_info.kernel`, `b_info.ramdisk`, `b_info.cmdline` (Xen ≥ 4.10;
///   earlier `b_info["type.pv"]`), `c_info.type/name/uuid`, `b_info.bootloader`.
/// - xenstore `/vm/<uuid>/image/{ostype,kernel,ramdisk,cmdline}`, written by libxl for PV
///   guests only (PVH and HVM get just `/vm/<uuid>/{name,uuid,start_time}`).
public struct DomainBuildConfig: Sendable, Hashable {
    public enum Source: String, Sendable, Hashable {
        case libxlJSON = "libxl-json"
        case xenstore
    }

    public var source: Source
    /// Where it was read: the userdata file, or the xenstore directory.
    public var origin: String
    public var name: String?
    public var uuid: String?
    public var type: String?
    /// dom0 paths of the kernel image and initrd the domain was built from.
    public var kernel: String?
    public var ramdisk: String?
    public var cmdline: String?
    /// A bootloader (pygrub) picked the kernel from the guest's own disk: `kernel` then names
    /// a temporary copy, gone after the build.
    public var bootloader: String?
    /// The configuration's bytes as stored (the domainConfig record hashes them); nil for xenstore.
    public var bytes: [UInt8]?

    /// The userdata file libxl keeps for a domain (`libxl__userdata_path`).
    public static func libxlUserdataPath(domainID: UInt32, uuid: String, directory: String = "/var/lib/xen") -> String {
        "\(directory)/userdata-d.\(domainID).\(uuid.lowercased()).libxl-json"
    }

    /// Parses libxl's JSON (what libxl stores, ending in a NUL, or what `xl list -l` prints
    /// for one domain: `{"domid": N, "config": {…}}`).
    public init(libxlJSON bytes: [UInt8], origin: String) throws(DomainConfigError) {
        var text = bytes[...]
        while let last = text.last, last == 0 || last == 0x0a || last == 0x20 { text = text.dropLast() }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(text), options: [])
        } catch {
            throw DomainConfigError(origin, "not JSON: \(error.localizedDescription)")
        }
        guard var top = object as? [String: Any] else { throw DomainConfigError(origin, "the top level is not an object") }
        if let wrapped = top["config"] {
            guard let config = wrapped as? [String: Any] else { throw DomainConfigError(origin, "config: not an object") }
            top = config
        }
        guard let cInfo = top["c_info"] as? [String: Any] else { throw DomainConfigError(origin, "c_info: missing or not an object") }
        guard let bInfo = top["b_info"] as? [String: Any] else { throw DomainConfigError(origin, "b_info: missing or not an object") }
        func string(_ object: [String: Any], _ key: String, _ path: String) throws(DomainConfigError) -> String? {
            guard let value = object[key] else { return nil }
            guard let s = value as? String else { throw DomainConfigError(origin, "\(path).\(key): not a string") }
            return s
        }
        source = .libxlJSON
        self.origin = origin
        name = try string(cInfo, "name", "c_info")
        uuid = try string(cInfo, "uuid", "c_info")
        type = try string(cInfo, "type", "c_info")
        // Xen 4.10 moved kernel/ramdisk/cmdline out of the PV union into b_info itself.
        let pv = bInfo["type.pv"] as? [String: Any] ?? [:]
        func build(_ key: String) throws(DomainConfigError) -> String? {
            if let value = try string(bInfo, key, "b_info") { return value }
            return try string(pv, key, "b_info.type.pv")
        }
        kernel = try build("kernel")
        ramdisk = try build("ramdisk")
        cmdline = try build("cmdline")
        bootloader = try build("bootloader")
        self.bytes = bytes
    }

    /// From libxl's xenstore nodes under `/vm/<uuid>` (PV guests): `image/kernel`, … as
    /// `relative path → value`.
    public init(xenstoreVM nodes: [String: String], origin: String) {
        source = .xenstore
        self.origin = origin
        name = nodes["name"]
        uuid = nodes["uuid"]
        type = nodes["image/ostype"].map { $0 == "linux" ? "pv" : $0 }
        kernel = nodes["image/kernel"]
        ramdisk = nodes["image/ramdisk"]
        cmdline = nodes["image/cmdline"]
        bootloader = nil
        bytes = nil
    }
}

/// A domain configuration that could not be read as one: which file or node, and why.
public struct DomainConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public let origin: String
    public let reason: String
    init(_ origin: String, _ reason: String) {
        self.origin = origin
        self.reason = reason
    }
    public var description: String { "\(origin): \(reason)" }
}

extension DomainBuildConfig {
    /// The load-time measurements of this configuration for `domain`: the kernel image and
    /// initrd by the SHA-256 of the files (when `hashFile` can read them; a path it cannot
    /// read yields a note, not a record), the command line, and the configuration's bytes.
    func loadTimeMeasurements(
        domain: Measurement.Domain, attributes: [(String, String)],
        hashFile: (String) -> Result<(digest: [UInt8], size: Int), MeasurementLogError>
    ) -> (measurements: [Measurement], notes: [GuestMeasurementReport.LoadTimeFact]) {
        var out: [Measurement] = []
        var notes: [GuestMeasurementReport.LoadTimeFact] = []
        let subject = { (s: String) in VMVEventRecord.sanitized(s, maxBytes: VMVEventRecord.maxSubject) }
        for (kind, path) in [(Measurement.Kind.kernelImage, kernel), (.initrd, ramdisk)] {
            guard let path, !path.isEmpty else { continue }
            if bootloader != nil {
                notes.append(.init(kind: kind.name, subject: path, sha256: nil, seq: nil,
                                   note: "chosen by the bootloader \(bootloader ?? "") from the guest's disk: not a dom0 file"))
                continue
            }
            switch hashFile(path) {
            case .success(let (digest, size)):
                out.append(Measurement(kind: kind, domain: domain, subject: subject(path),
                                       contentDigest: TCGDigest(algorithm: .sha256, bytes: digest),
                                       attributes: attributes + [("size", String(size)), ("config.source", source.rawValue)]))
            case .failure(let error):
                notes.append(.init(kind: kind.name, subject: path, sha256: nil, seq: nil, note: "not measured: \(error.reason)"))
            }
        }
        if let cmdline {
            out.append(Measurement.content(.commandLine, subject: "cmdline", hashing: Array(cmdline.utf8), domain: domain,
                                           attributes: attributes + [("cmdline", VMVEventRecord.sanitized(cmdline)),
                                                                     ("config.source", source.rawValue)]))
        }
        if let bytes {
            out.append(Measurement.content(.domainConfig, subject: subject(origin), hashing: bytes, domain: domain,
                                           attributes: attributes + [("config.source", source.rawValue),
                                                                     ("config.type", type ?? "")]))
        }
        return (out, notes)
    }
}
