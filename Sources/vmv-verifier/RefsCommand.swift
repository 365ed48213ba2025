import ArgumentParser
import FoundationEssentials
import TPMWire
import Verifier
import VerifierClient

/// `vmv-verifier refs …`: reference-value documents (measurements/README.md).
struct RefsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refs",
        abstract: "Make and check reference-value documents (vmv-reference/v1).",
        subcommands: [AddKernel.self, AddVMV.self, Learn.self, Policy.self, Check.self]
    )

    struct Directory: ParsableArguments {
        @Option(help: ArgumentHelp("The reference directory (measurements/).", valueName: "dir"))
        var refs: String

        @Flag(help: "Replace a document of the same id.")
        var force = false

        /// DIR/<kind>-<id>.json (policy: DIR/policy.json).
        static func name(_ document: ReferenceDocument) -> String {
            document.kind == "policy" ? "policy.json" : "\(document.kind)-\(document.id).json"
        }

        /// Writes `document` as `name(document)` in DIR, after checking that the directory stays
        /// consistent with it.
        func write(_ document: ReferenceDocument) throws -> String {
            let name = Self.name(document)
            let path = refs + "/" + name
            try FileManager.default.createDirectory(atPath: refs, withIntermediateDirectories: true)
            let bytes = document.json()
            if let existing = FileManager.default.contents(atPath: path), Array(existing) != bytes, !force, document.kind != "policy" {
                throw malformedInput("\(path) exists with other content; --force replaces it")
            }
            // The directory must still load with the new document in it.
            var documents: [(name: String, document: ReferenceDocument)] = []
            for other in (try? FileManager.default.contentsOfDirectory(atPath: refs)) ?? [] where other.hasSuffix(".json") && other != name {
                let p = refs + "/" + other
                guard let data = FileManager.default.contents(atPath: p) else { continue }
                documents.append((p, try ReferenceDocument(json: Array(data), name: p)))
            }
            documents.append((path, document))
            _ = try ReferenceSet(documents: documents)
            try AtomicFile.write(path, bytes, mode: 0o644)
            return path
        }
    }

    static func read(_ path: String) throws -> [UInt8] {
        do { return try InputFile.bytes(path) } catch { throw malformedInput(error.description) }
    }

    static func run(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let e as ReferenceError {
            throw malformedInput(e.reason)
        } catch let e as EvidenceError {
            throw malformedInput(e.reason)
        } catch let e as HostError {
            throw malformedInput(e.description)
        }
    }

    struct AddKernel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-kernel",
            abstract: "A kernel reference from its files: image SHA-256, release, build id (no run-time roots: learn those).")

        @OptionGroup var dir: Directory
        @Option(help: ArgumentHelp("The kernel image a domain boots (vmlinuz, a bzImage).", valueName: "file")) var image: String
        @Option(help: ArgumentHelp("Its vmlinux (for the GNU build id).", valueName: "file")) var vmlinux: String?
        @Option(help: ArgumentHelp("Its System.map (recorded in the provenance).", valueName: "file")) var systemMap: String?
        @Option(help: ArgumentHelp("The initrd it is booted with.", valueName: "file")) var initrd: String?
        @Option(help: ArgumentHelp("The command line it is booted with.", valueName: "text")) var cmdline: String?
        @Option(help: ArgumentHelp("The document's id (default: linux-<release>-<image digest>).", valueName: "id")) var id: String?

        func run() async throws {
            try await RefsCommand.run {
                let k = try ReferenceLearning.kernel(
                    image: try read(image), imageName: image, vmlinux: try vmlinux.map(read), vmlinuxName: vmlinux,
                    systemMap: try systemMap.map(read), systemMapName: systemMap, initrd: try initrd.map(read), commandLine: cmdline, id: id)
                let doc = ReferenceDocument.kernel(k)
                try doc.validate("kernel \(k.id)")
                print("\(try dir.write(doc)): kernel \(k.id), release \(k.release ?? "?")\(k.buildId.map { ", build id \($0)" } ?? "")")
            }
        }
    }

    struct AddVMV: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-vmv", abstract: "A VMV reference: the SHA-256 of its binary and of its configuration file.")

        @OptionGroup var dir: Directory
        @Option(help: ArgumentHelp("The vmv executable.", valueName: "file")) var binary: String?
        @Option(help: ArgumentHelp("Its configuration file.", valueName: "file")) var config: String?
        @Option(help: "A version label.") var version: String?
        @Option(help: "The document's id.") var id: String?

        func validate() throws {
            guard binary != nil || config != nil else { throw ValidationError("give --binary, --config or both") }
        }

        func run() async throws {
            try await RefsCommand.run {
                let v = ReferenceLearning.vmv(binary: try binary.map(read), binaryName: binary, config: try config.map(read),
                                              configName: config, version: version, id: id)
                let doc = ReferenceDocument.vmv(v)
                try doc.validate("vmv \(v.id)")
                print("\(try dir.write(doc)): vmv \(v.id)")
            }
        }
    }

    struct Learn: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Learn run-time references from a known-good system: saved evidence, a live host, or an introspection JSON.",
            discussion: """
                From evidence (--from, saved by `attest --save-evidence`) or a live host (URL with \
                the TLS options and --ak/--ak-ca), the evidence is checked again (signature, binding, \
                replay, every record) and the verified records of each --domain become a kernel \
                reference (its region roots, image, initrd and command line), and its domain \
                configuration digest (libxl's record, which holds the domain's UUID) goes into its \
                policy.json entry with that kernel; --platform writes a vmv \
                and a hypervisor reference from the platform's records. From --introspection (the \
                JSON of `vmv introspect kernel --json` of a known-good guest) the region roots. \
                Run-time text differs from the kernel file because Linux patches itself at boot, so \
                these roots are learned from memory, never computed from the file.
                """)

        @OptionGroup var dir: Directory
        @Argument(help: "A live VMV host to learn from: https://HOST:PORT.") var url: String?
        @Option(help: ArgumentHelp("Evidence saved by `attest --save-evidence`.", valueName: "file")) var from: String?
        @Option(help: ArgumentHelp("JSON of `vmv introspect kernel --json`.", valueName: "file")) var introspection: String?
        @Option(name: .customLong("domain"), help: ArgumentHelp("A domain (name or UUID) to learn its kernel from; repeatable.", valueName: "name"))
        var domains: [String] = []
        @Flag(help: "Also learn the platform: the VMV binary and configuration, and the platform records.") var platform = false
        @Option(help: "The id of the kernel document (one --domain only).") var id: String?
        @Option(help: ArgumentHelp("The AK pin (for a live host, or to check saved evidence's AK).", valueName: "file")) var ak: String?
        @Option(help: ArgumentHelp("PEM AK CA certificate(s).", valueName: "file")) var akCa: String?
        @Option(help: ArgumentHelp("PEM CA of the host's server certificate (live host).", valueName: "file")) var ca: String?
        @Option(help: ArgumentHelp("PEM client certificate (live host).", valueName: "file")) var cert: String?
        @Option(help: ArgumentHelp("PEM client key (live host).", valueName: "file")) var key: String?
        @Flag(help: "Live host: do not check the server certificate's host name.") var insecureSkipHostnameVerification = false

        func validate() throws {
            let sources = [url != nil, from != nil, introspection != nil].filter { $0 }.count
            guard sources == 1 else { throw ValidationError("give exactly one of URL, --from and --introspection") }
            if url != nil {
                guard ca != nil, cert != nil, key != nil else { throw ValidationError("a live host needs --ca, --cert and --key") }
                guard ak != nil || akCa != nil else { throw ValidationError("a live host needs --ak or --ak-ca") }
            }
            if introspection == nil, domains.isEmpty, !platform { throw ValidationError("name at least one --domain, or --platform") }
            if id != nil, domains.count > 1 { throw ValidationError("--id names one document: give one --domain") }
        }

        func run() async throws {
            try await RefsCommand.run {
                if let introspection {
                    let k = try ReferenceLearning.kernel(introspection: try read(introspection), name: introspection, id: id)
                    print("\(try dir.write(.kernel(k))): kernel \(k.id), \(k.regions.keys.sorted().joined(separator: ", "))")
                    return
                }
                let trust = try akTrust(ak: ak, akCa: akCa)
                let evidence: SavedEvidence
                var origin: [String: String]
                if let url, let ca, let cert, let key {
                    let run = AttestationRun(url: url, tls: ClientTLSFiles(ca: ca, certificate: cert, key: key,
                                                                           skipHostnameVerification: insecureSkipHostnameVerification),
                                             akTrust: trust, references: ReferenceSet(), store: nil)
                    evidence = try await run.run().evidence
                    origin = ["host": evidence.host]
                } else {
                    guard let from else { return }
                    evidence = try SavedEvidence.load(from)
                    origin = ["evidence": from, "host": evidence.host]
                }
                let facts = try await evidence.verifiedFacts(akTrust: trust)
                origin["epoch"] = String(facts.epoch)
                origin["receivedAt"] = evidence.receivedAt
                for name in domains {
                    guard let d = facts.domains.values.first(where: { $0.name == name || $0.uuid == name }) else {
                        throw ReferenceError("the evidence has no domain \(name) (it has \(facts.domains.values.map(\.displayName).sorted().joined(separator: ", ")))")
                    }
                    let k = try ReferenceLearning.kernel(learnedFrom: d, evidence: origin, id: id)
                    try ReferenceDocument.kernel(k).validate("kernel \(k.id)")
                    // Guests booted from one kernel measure the same: the first one's document
                    // serves the others (only its provenance would differ).
                    let existingPath = dir.refs + "/" + Directory.name(.kernel(k))
                    if !dir.force, let bytes = FileManager.default.contents(atPath: existingPath),
                       case .kernel(var existing)? = try? ReferenceDocument(json: Array(bytes), name: existingPath) {
                        existing.generated = k.generated
                        if existing == k {
                            print("\(existingPath): kernel \(k.id) from \(d.displayName): the same as the reference already there")
                            try learnDomainConfig(of: d, kernel: k.id, origin: origin)
                            continue
                        }
                    }
                    print("\(try dir.write(.kernel(k))): kernel \(k.id) from \(d.displayName): \(k.regions.keys.sorted().joined(separator: ", "))")
                    try learnDomainConfig(of: d, kernel: k.id, origin: origin)
                }
                if platform {
                    let (v, h) = ReferenceLearning.platform(learnedFrom: facts, evidence: origin)
                    if let v { print("\(try dir.write(.vmv(v))): vmv \(v.id)") }
                    if let h { print("\(try dir.write(.hypervisor(h))): hypervisor \(h.id): \(h.subjects.keys.sorted().joined(separator: ", "))") }
                }
            }
        }

        /// libxl's record of a domain's build holds the domain's UUID, so no file a verifier has
        /// gives its digest: the domainConfig digests of a known-good domain are learned into its
        /// policy.json entry (with the kernel just learned), or its domainConfig records stay unknown.
        func learnDomainConfig(of d: DomainFacts, kernel: String, origin: [String: String]) throws {
            let digests = d.facts.filter { $0.kind == VMVEventRecord.Kind.domainConfig.name }.compactMap(\.digest)
            guard !digests.isEmpty else { return }
            let path = dir.refs + "/policy.json"
            var policy = PolicyDocument(id: "policy")
            if let data = FileManager.default.contents(atPath: path), case .policy(let p) = try ReferenceDocument(json: Array(data), name: path) {
                policy = p
            }
            let name = d.name, uuid = d.name == nil ? d.uuid : nil
            if let i = policy.domains.firstIndex(where: { $0.name == name && $0.uuid == uuid }) {
                policy.domains[i].kernels = Array(Set(policy.domains[i].kernels + [kernel])).sorted()
                var known = policy.domains[i].domainConfig ?? []
                for c in digests where !known.contains(c) { known.append(c) }
                policy.domains[i].domainConfig = known
            } else {
                policy.domains.append(PolicyDocument.Domain(name: name, uuid: uuid, kernels: [kernel], domainConfig: digests))
            }
            var from = origin
            from["domain"] = d.displayName
            policy.generated = Provenance(by: "vmv-verifier refs learn", at: Date().formatted(.iso8601), from: from)
            let doc = ReferenceDocument.policy(policy)
            try doc.validate(path)
            print("\(try dir.write(doc)): policy entry for \(d.displayName): kernel \(kernel), its domain configuration")
        }
    }

    struct Policy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Edit DIR/policy.json: which domains may run which kernels, what the platform must run.",
            discussion: """
                Without a policy every reference in the directory applies to every domain and to \
                the platform, and a VM must have kernel.text measured. With one, a domain not named \
                in it (and no --other entry) gets unknown verdicts.
                """)

        @OptionGroup var dir: Directory
        @Option(name: .customLong("domain"), help: ArgumentHelp("The domain's name.", valueName: "name")) var domain: String?
        @Option(help: "The domain's UUID.") var uuid: String?
        @Flag(help: "The entry for domains no other entry names.") var other = false
        @Option(name: .customLong("kernel"), help: ArgumentHelp("A kernel id the domain may run; repeatable.", valueName: "id")) var kernels: [String] = []
        @Option(name: .customLong("require"), help: ArgumentHelp("A subject that must be measured (kernel.text, kernel.rodata, …); repeatable. With a domain: for it; without: the default.", valueName: "subject"))
        var require: [String] = []
        @Option(name: .customLong("vmv"), help: ArgumentHelp("A vmv id the platform may run; repeatable.", valueName: "id")) var vmvs: [String] = []
        @Option(name: .customLong("hypervisor"), help: ArgumentHelp("A hypervisor id the platform may run; repeatable.", valueName: "id")) var hypervisors: [String] = []
        @Option(help: ArgumentHelp("The XSM/Flask mode the platform must run in: enforcing or permissive.", valueName: "mode")) var xsmMode: String?
        @Option(help: ArgumentHelp("The FLASK policy file the platform must have loaded (its SHA-256 is recorded; needs --xsm-mode).", valueName: "file"))
        var xsmPolicy: String?

        func run() async throws {
            try await RefsCommand.run {
                let path = dir.refs + "/policy.json"
                var policy = PolicyDocument(id: "policy")
                if let data = FileManager.default.contents(atPath: path), case .policy(let p) = try ReferenceDocument(json: Array(data), name: path) {
                    policy = p
                }
                if domain != nil || uuid != nil || other {
                    var entry = PolicyDocument.Domain(name: domain, uuid: uuid, kernels: kernels, require: require.isEmpty ? nil : require)
                    if other {
                        entry.name = nil; entry.uuid = nil
                        policy.otherDomains = entry
                    } else if let i = policy.domains.firstIndex(where: { $0.name == domain && $0.uuid == uuid }) {
                        entry.kernels = Array(Set(policy.domains[i].kernels + kernels)).sorted()
                        entry.domainConfig = policy.domains[i].domainConfig
                        if require.isEmpty { entry.require = policy.domains[i].require }
                        policy.domains[i] = entry
                    } else {
                        policy.domains.append(entry)
                    }
                } else if !require.isEmpty {
                    policy.require = require
                }
                var from: [String: String] = [:]
                if xsmPolicy != nil, xsmMode == nil { throw ReferenceError("--xsm-policy needs --xsm-mode (enforcing or permissive)") }
                if !vmvs.isEmpty || !hypervisors.isEmpty || xsmMode != nil {
                    var p = policy.platform ?? .init()
                    if !vmvs.isEmpty { p.vmv = vmvs }
                    if !hypervisors.isEmpty { p.hypervisor = hypervisors }
                    if let xsmMode {
                        var digest: DigestSet?
                        if let xsmPolicy {
                            let hex = ReferenceLearning.sha256(try RefsCommand.read(xsmPolicy))
                            digest = DigestSet(["sha256": hex])
                            from["xsm.policy"] = "\(xsmPolicy) sha256:\(hex)"
                        }
                        p.xsm = .init(mode: xsmMode, policy: digest)
                    }
                    policy.platform = p
                }
                policy.generated = Provenance(by: "vmv-verifier refs policy", at: Date().formatted(.iso8601), from: from)
                let doc = ReferenceDocument.policy(policy)
                try doc.validate(path)
                print("\(try dir.write(doc)): \(policy.domains.count) domain entr\(policy.domains.count == 1 ? "y" : "ies")\(policy.otherDomains != nil ? " and otherDomains" : "")")
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load a reference directory and list what it holds (exit 2 if it does not load).")

        @Argument(help: "The reference directory.") var refs: String

        func run() async throws {
            try await RefsCommand.run {
                let set = try ReferenceSet(directory: refs)
                for (id, k) in set.kernels.sorted(by: { $0.key < $1.key }) {
                    print("kernel      \(id)  release \(k.release ?? "?")  \(k.source)  regions: \(k.regions.keys.sorted().joined(separator: ",").nonEmpty ?? "none")")
                }
                for (id, _) in set.vmvs.sorted(by: { $0.key < $1.key }) { print("vmv         \(id)") }
                for (id, h) in set.hypervisors.sorted(by: { $0.key < $1.key }) { print("hypervisor  \(id)  \(h.subjects.keys.sorted().joined(separator: ","))") }
                if let p = set.policy {
                    print("policy      \(p.id)  \(p.domains.count) domain entries\(p.otherDomains != nil ? " + otherDomains" : "")"
                          + (p.platform?.xsm.map { "  xsm \($0.mode)\($0.policy?.values["sha256"].map { " policy sha256:\($0)" } ?? "")" } ?? ""))
                } else {
                    print("policy      none: every reference applies to every domain (open)")
                }
            }
        }
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
