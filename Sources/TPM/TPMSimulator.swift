import FoundationEssentials
import Logging
import Synchronization
import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// swtpm as vmv's embedded TPM: a state directory provisioned by `swtpm_setup` (EK and EK
/// certificate from a local CA of its own), and `swtpm socket` on free loopback ports.
///
/// The state directory holds:
///
///     tpm/                  swtpm's state (tpm2-00.permall: seeds, persistent objects, NV)
///     ca/                   the simulator's EK CA (swtpm_localca): swtpm-localca-rootca-cert.pem
///                           is the root to trust, issuercert.pem the intermediate that signs
///     swtpm_setup.conf      points swtpm_setup at ca/ instead of /var/lib/swtpm-localca
///     swtpm.log             swtpm's own log
///     swtpm.pid, swtpm.tcti while running: who, and how to reach it
///
/// Keeping the CA inside the state directory means nothing needs root or touches
/// /var/lib/swtpm-localca, and each simulator is its own "TPM manufacturer".
public final class TPMSimulator: Sendable {
    public let stateDirectory: String
    public let port: Int
    public let pid: Int32
    /// True when this process started swtpm as its child (and so reaps it).
    private let isChild: Bool
    /// Ephemeral simulators remove their state directory when stopped.
    private let removesStateOnStop: Bool
    private let stopped = Mutex(false)

    /// `swtpm:host=127.0.0.1,port=N` (the control channel is on N+1).
    public var tcti: TCTIConfiguration { .swtpm(configuration: "host=127.0.0.1,port=\(port)") }

    /// PCR banks a new simulator allocates: two, so that "every allocated bank" is exercised.
    public static let defaultBanks: [TPMAlgorithm] = [.sha1, .sha256]

    private init(stateDirectory: String, port: Int, pid: Int32, isChild: Bool, removesStateOnStop: Bool) {
        self.stateDirectory = stateDirectory
        self.port = port
        self.pid = pid
        self.isChild = isChild
        self.removesStateOnStop = removesStateOnStop
    }

    deinit {
        if isChild { stop() }
    }

    // MARK: Paths

    /// `$XDG_STATE_HOME/vmv/swtpm`, else `$HOME/.local/state/vmv/swtpm`.
    public static func defaultStateDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return state + "/vmv/swtpm"
        }
        return (environment["HOME"] ?? "/root") + "/.local/state/vmv/swtpm"
    }

    /// The simulator's EK certificate chain: the root CA to trust, and the intermediate that
    /// signed the EK certificates.
    public static func certificateAuthority(stateDirectory: String) -> (root: String, issuer: String) {
        (stateDirectory + "/ca/swtpm-localca-rootca-cert.pem", stateDirectory + "/ca/issuercert.pem")
    }

    public var certificateAuthority: (root: String, issuer: String) {
        Self.certificateAuthority(stateDirectory: stateDirectory)
    }

    public static func isProvisioned(stateDirectory: String) -> Bool {
        FileManager.default.fileExists(atPath: stateDirectory + "/tpm/tpm2-00.permall")
    }

    // MARK: Provisioning

    /// Manufactures a TPM in `stateDirectory` with swtpm_setup: RSA-2048 EK at 0x81010001
    /// with its certificate in NV 0x01c00002, ECC P-384 EK at 0x81010016 with its certificate
    /// in NV 0x01c00016, and `banks` allocated. The EKs use the TCG templates (no
    /// `--allow-signing`, which would make the EK a signing key unlike any real TPM's).
    public static func provision(
        stateDirectory: String, banks: [TPMAlgorithm] = defaultBanks, logger: Logger = Logger(label: "vmv.tpm")
    ) throws(TPMError) {
        let operation = "swtpm_setup \(stateDirectory)"
        guard !isProvisioned(stateDirectory: stateDirectory) else { return }
        guard let setup = Subprocess.find("swtpm_setup") else {
            throw TPMError(.simulator, operation: operation,
                           reason: "swtpm_setup is not installed (Debian: apt-get install swtpm-tools, or run scripts/setup.sh)")
        }
        let ca = stateDirectory + "/ca"
        try makeDirectory(stateDirectory + "/tpm", operation)
        try makeDirectory(ca, operation)
        try write("""
            statedir = \(ca)
            signingkey = \(ca)/signkey.pem
            issuercert = \(ca)/issuercert.pem
            certserial = \(ca)/certserial

            """, to: ca + "/swtpm-localca.conf", operation)
        try write("""
            --platform-manufacturer vmv
            --platform-version 2.1
            --platform-model swtpm

            """, to: ca + "/swtpm-localca.options", operation)
        try write("""
            create_certs_tool = \(Subprocess.find("swtpm_localca") ?? "/usr/bin/swtpm_localca")
            create_certs_tool_config = \(ca)/swtpm-localca.conf
            create_certs_tool_options = \(ca)/swtpm-localca.options

            """, to: stateDirectory + "/swtpm_setup.conf", operation)
        let bankList = banks.map(\.name).joined(separator: ",")
        let (status, output) = try Subprocess.run(setup, [
            "--tpm2", "--tpmstate", stateDirectory + "/tpm",
            "--config", stateDirectory + "/swtpm_setup.conf",
            "--create-ek-cert", "--pcr-banks", bankList, "--not-overwrite",
        ], operation: operation)
        guard status == 0, isProvisioned(stateDirectory: stateDirectory) else {
            throw TPMError(.simulator, operation: operation,
                           reason: "swtpm_setup exited with status \(status): \(lastLines(output))")
        }
        logger.info("provisioned a swtpm", metadata: ["state": "\(stateDirectory)", "banks": "\(bankList)"])
    }

    // MARK: Running

    /// What `vmv tpm simulator status` reports.
    public enum Status: Sendable, Hashable, CustomStringConvertible {
        case notProvisioned
        case stopped
        case running(pid: Int32, tcti: TCTIConfiguration)

        public var description: String {
            switch self {
            case .notProvisioned: "not provisioned"
            case .stopped: "stopped"
            case .running(let pid, let tcti): "running, pid \(pid), TCTI \(tcti)"
            }
        }
    }

    public static func status(stateDirectory: String) -> Status {
        if let running = running(stateDirectory: stateDirectory) { return .running(pid: running.pid, tcti: running.tcti) }
        return isProvisioned(stateDirectory: stateDirectory) ? .stopped : .notProvisioned
    }

    /// The swtpm running for `stateDirectory`, if its pid file names a live swtpm on this
    /// state; stale files of a dead one are removed.
    public static func running(stateDirectory: String) -> TPMSimulator? {
        guard let pidText = try? String(contentsOfFile: stateDirectory + "/swtpm.pid", encoding: .utf8),
              let pid = Int32(pidText.filter { !$0.isWhitespace }),
              let tctiText = try? String(contentsOfFile: stateDirectory + "/swtpm.tcti", encoding: .utf8),
              let portText = tctiText.split(separator: "port=").last,
              let port = Int(portText.filter(\.isNumber))
        else { return nil }
        let commandLine = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        guard Glibc.kill(pid, 0) == 0, commandLine.contains("swtpm"), commandLine.contains(stateDirectory + "/tpm") else {
            removeRunFiles(stateDirectory)
            return nil
        }
        return TPMSimulator(stateDirectory: stateDirectory, port: port, pid: pid, isChild: false, removesStateOnStop: false)
    }

    /// Provisions `stateDirectory` if needed and starts swtpm on two free loopback ports.
    ///
    /// - Parameters:
    ///   - startupClear: swtpm sends TPM2_Startup(CLEAR) itself (what tpm2-tools expect).
    ///     Without it the TPM waits for TPM2_Startup, which `TPM` then sends.
    ///   - detached: swtpm gets a session of its own and outlives this process (for
    ///     `vmv tpm simulator start`); otherwise it is this process's child and is stopped
    ///     when this object goes away.
    public static func start(
        stateDirectory: String, banks: [TPMAlgorithm] = defaultBanks, startupClear: Bool = true,
        detached: Bool = false, logger: Logger = Logger(label: "vmv.tpm")
    ) throws(TPMError) -> TPMSimulator {
        try start(stateDirectory: stateDirectory, banks: banks, startupClear: startupClear, detached: detached,
                  removesStateOnStop: false, logger: logger)
    }

    private static func start(
        stateDirectory: String, banks: [TPMAlgorithm], startupClear: Bool, detached: Bool,
        removesStateOnStop: Bool, logger: Logger
    ) throws(TPMError) -> TPMSimulator {
        let operation = "swtpm socket \(stateDirectory)"
        if let running = running(stateDirectory: stateDirectory) {
            throw TPMError(.simulator, operation: operation,
                           reason: "a swtpm is already running on this state (pid \(running.pid), TCTI \(running.tcti))")
        }
        try provision(stateDirectory: stateDirectory, banks: banks, logger: logger)
        // A free pair can be taken by someone else before swtpm binds it: then swtpm exits
        // at once, and another pair is tried.
        var lastError = TPMError(.simulator, operation: operation, reason: "no attempt made")
        for _ in 0..<5 {
            let port = try LoopbackPorts.freePair(operation)
            do {
                let simulator = try launch(stateDirectory: stateDirectory, port: port, startupClear: startupClear,
                                           detached: detached, removesStateOnStop: removesStateOnStop, operation)
                logger.debug("swtpm started", metadata: ["pid": "\(simulator.pid)", "tcti": "\(simulator.tcti)"])
                return simulator
            } catch {
                lastError = error
                guard error.reason.contains("in use") else { throw error }
            }
        }
        throw lastError
    }

    /// Runs `swtpm socket` on `port` (data) and `port + 1` (control) and waits until it answers.
    private static func launch(
        stateDirectory: String, port: Int, startupClear: Bool, detached: Bool, removesStateOnStop: Bool,
        _ operation: String
    ) throws(TPMError) -> TPMSimulator {
        guard let swtpm = Subprocess.find("swtpm") else {
            throw TPMError(.simulator, operation: operation,
                           reason: "swtpm is not installed (Debian: apt-get install swtpm, or run scripts/setup.sh)")
        }
        var flags = "not-need-init"
        if startupClear { flags += ",startup-clear" }
        let log = stateDirectory + "/swtpm.log"
        let pid = try Subprocess.spawn(swtpm, [
            "socket", "--tpm2",
            "--tpmstate", "dir=\(stateDirectory)/tpm",
            "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
            "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
            "--flags", flags,
            "--log", "file=\(log),level=1",
        ], mapping: [], outputFile: log, newSession: detached, operation: operation)
        let simulator = TPMSimulator(stateDirectory: stateDirectory, port: port, pid: pid, isChild: !detached,
                                     removesStateOnStop: removesStateOnStop)
        // Ready once it answers a TPM command; or it exits, saying why in its log.
        for _ in 0..<200 {
            if let status = Subprocess.exitStatusIfExited(pid) {
                simulator.stopped.withLock { $0 = true }
                let logText = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw TPMError(.simulator, operation: operation,
                               reason: "swtpm exited with status \(status): \(lastLines(logText))")
            }
            if LoopbackPorts.answers(port) {
                try write("\(pid)\n", to: stateDirectory + "/swtpm.pid", operation)
                try write("\(simulator.tcti)\n", to: stateDirectory + "/swtpm.tcti", operation)
                return simulator
            }
            usleep(25_000)
        }
        simulator.stop()
        throw TPMError(.simulator, operation: operation, reason: "swtpm did not answer on port \(port) within 5 s")
    }

    /// A simulator on a temporary state directory that is removed when it stops.
    ///
    /// The first one in a process is provisioned (about a second and a half: RSA key generation
    /// and the CA); later ones with the same banks start from a copy of it, and so share its
    /// EK and CA. `fresh` provisions one from scratch instead: a TPM with seeds and an EK CA
    /// of its own, another manufacturer's TPM for tests that need two.
    public static func ephemeral(
        banks: [TPMAlgorithm] = defaultBanks, startupClear: Bool = true, fresh: Bool = false,
        logger: Logger = Logger(label: "vmv.tpm")
    ) throws(TPMError) -> TPMSimulator {
        let directory = try makeTemporaryDirectory("vmv-swtpm")
        do throws(TPMError) {
            if !fresh {
                let template = try TemplateCache.shared.directory(for: banks, logger: logger)
                for item in ["tpm", "ca"] {
                    do {
                        try FileManager.default.copyItem(atPath: template + "/" + item, toPath: directory + "/" + item)
                    } catch {
                        throw TPMError(.simulator, operation: "copy simulator template", reason: "\(error)")
                    }
                }
            }
            return try start(stateDirectory: directory, banks: banks, startupClear: startupClear, detached: false,
                             removesStateOnStop: true, logger: logger)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Stops swtpm: SIGTERM, then SIGKILL after three seconds. Idempotent.
    public func stop() {
        let already = stopped.withLock { value in
            defer { value = true }
            return value
        }
        guard !already else { return }
        Glibc.kill(pid, SIGTERM)
        var gone = false
        for _ in 0..<150 {
            if isChild ? Subprocess.exitStatusIfExited(pid) != nil : Glibc.kill(pid, 0) != 0 {
                gone = true
                break
            }
            usleep(20_000)
        }
        if !gone {
            Glibc.kill(pid, SIGKILL)
            if isChild { Subprocess.waitForExit(pid) }
        }
        Self.removeRunFiles(stateDirectory)
        if removesStateOnStop { try? FileManager.default.removeItem(atPath: stateDirectory) }
    }

    /// Kills swtpm at once (SIGKILL), as a crash would: for fault tests. The state directory
    /// stays; `restart()` brings the same TPM back on the same ports.
    public func kill() {
        Glibc.kill(pid, SIGKILL)
        if isChild { Subprocess.waitForExit(pid) }
        stopped.withLock { $0 = true }
        Self.removeRunFiles(stateDirectory)
    }

    /// Starts swtpm again on the same state and the same ports (a power cycle: PCRs reset,
    /// persistent objects and NV kept). The old process must be gone.
    public func restart(startupClear: Bool = true) throws(TPMError) -> TPMSimulator {
        try Self.launch(stateDirectory: stateDirectory, port: port, startupClear: startupClear, detached: false,
                        removesStateOnStop: removesStateOnStop, "swtpm restart \(stateDirectory)")
    }

    // MARK: Helpers

    private static func removeRunFiles(_ stateDirectory: String) {
        try? FileManager.default.removeItem(atPath: stateDirectory + "/swtpm.pid")
        try? FileManager.default.removeItem(atPath: stateDirectory + "/swtpm.tcti")
    }

    private static func makeDirectory(_ path: String, _ operation: String) throws(TPMError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw TPMError(.simulator, operation: operation, reason: "cannot create \(path): \(error)")
        }
    }

    static func makeTemporaryDirectory(_ prefix: String) throws(TPMError) -> String {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let base = buffer.baseAddress, let made = mkdtemp(base) else { return nil }
            return String(cString: made)
        }
        guard let made else {
            throw TPMError(.simulator, operation: "mkdtemp \(base)", reason: Subprocess.errnoText())
        }
        return made
    }

    private static func write(_ text: String, to path: String, _ operation: String) throws(TPMError) {
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw TPMError(.simulator, operation: operation, reason: "cannot write \(path): \(error)")
        }
    }

    private static func lastLines(_ text: String, _ count: Int = 6) -> String {
        text.split(separator: "\n").suffix(count).joined(separator: " | ")
    }

    /// Provisioned state directories that ephemeral simulators copy, one per bank set, made
    /// once per process and removed at exit.
    private final class TemplateCache: Sendable {
        static let shared = TemplateCache()
        private let directories = Mutex<[String: String]>([:])

        func directory(for banks: [TPMAlgorithm], logger: Logger) throws(TPMError) -> String {
            let key = banks.map(\.name).joined(separator: ",")
            // Provisioning under the lock: concurrent first callers wait for one provisioning.
            return try directories.withLock { (known: inout [String: String]) throws(TPMError) -> String in
                if let directory = known[key] { return directory }
                let directory = try TPMSimulator.makeTemporaryDirectory("vmv-swtpm-template")
                do throws(TPMError) {
                    try TPMSimulator.provision(stateDirectory: directory, banks: banks, logger: logger)
                } catch {
                    try? FileManager.default.removeItem(atPath: directory)
                    throw error
                }
                if known.isEmpty { atexit { TemplateCache.shared.removeAll() } }
                known[key] = directory
                return directory
            }
        }

        func removeAll() {
            for directory in directories.withLock({ Array($0.values) }) {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }
}
