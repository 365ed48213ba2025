import Verifier

// Module Verifier shares its name with swift-certificates' `Verifier` type, and TPM has an
// `AttestationKey` of its own: the verifier's key type under a name of its own here.
typealias VerificationKey = AttestationKey
