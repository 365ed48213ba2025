/// Why the measurement log (store, recovery or engine) could not do what was asked: a code for
/// programs and a reason for operators that names the file, epoch or record and what to do.
public struct MeasurementLogError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// A file operation failed (the reason names the file and the system's error).
        case io
        /// Another process holds the state directory's lock.
        case locked
        /// A log file is damaged somewhere other than a torn tail.
        case damaged
        /// The PCR holds a value the VMV's log cannot explain on a fresh epoch: something else
        /// extends it.
        case foreignPCR
        /// The configuration or the TPM does not allow what is asked (no computable bank, a PCR
        /// out of range, …).
        case configuration
        /// A TPM operation failed.
        case tpm
        /// The measurement cannot be logged as given (a field too long, a reserved kind, …).
        case invalidMeasurement
        /// The engine was closed, or stopped after a failure that makes further appends unsafe.
        case closed
        /// No log, epoch or record where one was asked for.
        case notFound
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}
