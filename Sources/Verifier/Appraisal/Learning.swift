import Crypto
import FoundationEssentials
import TPMWire

/// Reference documents made from artefacts and from measurements of known-good systems: what
/// the `refs` commands write. Nothing here decides trust; it writes what an operator vouches for.
public enum ReferenceLearning {
    public static func sha256(_ bytes: [UInt8]) -> String { Hex.encode(Array(SHA256.hash(data: bytes))) }

    static func provenance(_ by: String, _ from: [String: String]) -> Provenance {
        Provenance(by: "vmv-verifier " + by, at: Date().formatted(.iso8601), from: from)
    }

    /// A kernel reference from its files: the image's SHA-256 and release (bzImage header), the
    /// vmlinux's build id, and optionally the initrd and command line it is booted with. No
    /// run-time roots: Linux patches its text at boot (alternatives, static keys, paravirt), so
    /// the bytes in memory are not the bytes in the file (docs/verification.md).
    public static func kernel(image: [UInt8], imageName: String, vmlinux: [UInt8]?, vmlinuxName: String?, systemMap: [UInt8]?,
                              systemMapName: String?, initrd: [UInt8]?, commandLine: String?, id: String?) throws(ReferenceError) -> KernelReference {
        let version: String
        do { version = try KernelArtifacts.bzImageVersion(image) } catch { throw ReferenceError("\(imageName): \(error.reason)") }
        let release = KernelArtifacts.release(fromVersion: version)
        var buildID: String?
        var from = ["image": imageName, "image.sha256": sha256(image)]
        if let vmlinux, let vmlinuxName {
            do { buildID = try KernelArtifacts.elfBuildID(vmlinux) } catch { throw ReferenceError("\(vmlinuxName): \(error.reason)") }
            from["vmlinux"] = vmlinuxName
            from["vmlinux.sha256"] = sha256(vmlinux)
        }
        if let systemMap, let systemMapName {
            from["system-map"] = systemMapName
            from["system-map.sha256"] = sha256(systemMap)
        }
        let imageDigest = sha256(image)
        return KernelReference(
            id: id ?? "linux-\(sanitizedID(release))-\(imageDigest.prefix(12))", release: release, buildId: buildID, banner: version,
            image: DigestSet(["sha256": imageDigest]), initrd: initrd.map { DigestSet(["sha256": sha256($0)]) },
            commandLine: commandLine.map { DigestSet(["sha256": sha256(Array($0.utf8))]) }, regions: [:],
            source: vmlinux != nil ? "vmlinux" : systemMap != nil ? "system-map" : "image",
            generated: provenance("refs add-kernel", from))
    }

    /// A VMV reference from its binary and configuration file.
    public static func vmv(binary: [UInt8]?, binaryName: String?, config: [UInt8]?, configName: String?, version: String?,
                           id: String?) -> VMVReference {
        var from: [String: String] = [:]
        if let binaryName { from["binary"] = binaryName }
        if let configName { from["config"] = configName }
        let b = binary.map { sha256($0) }, c = config.map { sha256($0) }
        let tag = (b ?? c ?? "").prefix(12)
        return VMVReference(id: id ?? "vmv-\(version.map { sanitizedID($0) + "-" } ?? "")\(tag)", version: version,
                            binary: b.map { DigestSet(["sha256": $0]) }, config: c.map { DigestSet(["sha256": $0]) },
                            generated: provenance("refs add-vmv", from))
    }

    /// A kernel reference from one domain's verified measurements: its run-time region roots
    /// (what the VMV measured in memory: that is what later measurements must equal), its
    /// kernel image, initrd and command line digests when the log has them.
    public static func kernel(learnedFrom domain: DomainFacts, evidence: [String: String], id: String?) throws(ReferenceError) -> KernelReference {
        var regions: [String: RegionReference] = [:]
        var image: DigestSet?, initrd: DigestSet?, commandLine: DigestSet?
        var release: String?, buildID: String?
        for f in domain.facts.sorted(by: { $0.lastSeq < $1.lastSeq }) {   // the latest value wins
            switch f.kind {
            case VMVEventRecord.Kind.memoryRegion.name:
                if let s = f.subject, let root = f.merkleRoot, let pages = f.pages {
                    if let other = regions[s], other.merkleRoot != root {
                        throw ReferenceError("domain \(domain.displayName): \(s) was measured with two roots in this epoch (\(other.merkleRoot ?? "") and \(root)); a known-good guest measures the same every time")
                    }
                    regions[s] = RegionReference(merkleRoot: root, pages: pages)
                }
            case VMVEventRecord.Kind.kernelImage.name: image = f.digest
            case VMVEventRecord.Kind.initrd.name: initrd = f.digest
            case VMVEventRecord.Kind.commandLine.name: commandLine = f.digest
            default: break
            }
            release = f.attributes["kernel.release"] ?? f.attributes["release"] ?? release
            buildID = f.attributes["kernel.buildId"] ?? f.attributes["buildId"] ?? buildID
        }
        guard !regions.isEmpty || image != nil else {
            throw ReferenceError("domain \(domain.displayName): the log has no kernel measurement of it to learn from")
        }
        let tag = regions["kernel.text"]?.merkleRoot ?? image?.values.values.first ?? ""
        var from = evidence
        from["domain"] = domain.displayName
        from["domain.uuid"] = domain.uuid
        return KernelReference(id: id ?? "linux-\(release.map { sanitizedID($0) + "-" } ?? "")learned-\(tag.prefix(12))", release: release,
                               buildId: buildID, image: image, initrd: initrd, commandLine: commandLine, regions: regions,
                               source: "learned", generated: provenance("refs learn", from))
    }

    /// A kernel reference from `vmv introspect kernel --json` of a known-good guest (its
    /// release, region roots and page counts).
    public static func kernel(introspection json: [UInt8], name: String, id: String?) throws(ReferenceError) -> KernelReference {
        struct Report: Decodable {
            struct Region: Decodable {
                struct Measurement: Decodable { var root: String; var pageCount: Int }
                var name: String
                var measurement: Measurement
            }
            struct Symbols: Decodable { var buildID: String? }
            var release: String
            var regions: [Region]
            var symbols: Symbols?
        }
        let report: Report
        do { report = try JSONDecoder().decode(Report.self, from: Data(json)) } catch {
            throw ReferenceError("\(name): not the JSON of `vmv introspect kernel --json` (\(ReferenceDocument.describe(error)))")
        }
        var regions: [String: RegionReference] = [:]
        for r in report.regions {
            regions["kernel." + r.name] = RegionReference(merkleRoot: r.measurement.root.lowercased(), pages: r.measurement.pageCount)
        }
        guard !regions.isEmpty else { throw ReferenceError("\(name): the measurement has no regions") }
        let doc = KernelReference(
            id: id ?? "linux-\(sanitizedID(report.release))-learned-\((regions["kernel.text"]?.merkleRoot ?? "").prefix(12))",
            release: report.release, buildId: report.symbols?.buildID, regions: regions, source: "learned",
            generated: provenance("refs learn", ["introspection": name, "introspection.sha256": sha256(json)]))
        try ReferenceDocument.kernel(doc).validate(name)
        return doc
    }

    /// The platform's references from its verified records: the VMV binary and configuration,
    /// and every platform subject with its digest.
    public static func platform(learnedFrom facts: EpochFacts, evidence: [String: String]) -> (VMVReference?, HypervisorReference?) {
        var binary: DigestSet?, config: DigestSet?
        var subjects: [String: PlatformExpectation] = [:]
        for f in facts.platform.sorted(by: { $0.lastSeq < $1.lastSeq }) {
            switch f.kind {
            case VMVEventRecord.Kind.vmvBinary.name: binary = f.digest
            case VMVEventRecord.Kind.vmvConfig.name: config = f.digest
            case VMVEventRecord.Kind.platform.name:
                if let s = f.subject {
                    subjects[s] = PlatformExpectation(digest: f.digest, attributes: f.digest == nil ? f.attributes : nil)
                }
            default: break
            }
        }
        let vmv = (binary != nil || config != nil) ? VMVReference(
            id: "vmv-learned-\((binary ?? config)?.values.values.first?.prefix(12) ?? "")", version: nil, binary: binary, config: config,
            generated: provenance("refs learn --platform", evidence)) : nil
        let tag = sha256(Array(subjects.keys.sorted().map { "\($0)=\(subjects[$0]?.digest?.values.values.first ?? "")" }.joined(separator: "\n").utf8))
        let hypervisor = subjects.isEmpty ? nil : HypervisorReference(id: "platform-learned-\(tag.prefix(12))", subjects: subjects,
                                                                       generated: provenance("refs learn --platform", evidence))
        return (vmv, hypervisor)
    }

    /// Letters, digits and . _ - + only (an id); anything else becomes '_'.
    public static func sanitizedID(_ s: String) -> String {
        String(String.UnicodeScalarView(s.unicodeScalars.prefix(64).map { c in
            (c.properties.isAlphabetic && c.isASCII) || ("0"..."9").contains(c) || ".-_+".unicodeScalars.contains(c) ? c : "_"
        }))
    }
}
