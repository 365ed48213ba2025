import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import TestSupport
import TPMWire
import Verifier
import VMVServer
import X509

/// The API over real mutual TLS on loopback, with a real swtpm behind it.
@Suite struct ServerTests {
    // MARK: Mutual TLS

    enum BadClient: String, CaseIterable, Sendable {
        case noCertificate, anotherCA, expired
    }

    @Test(arguments: BadClient.allCases)
    func handshakeRefused(_ bad: BadClient) async throws {
        try await TestServer.with { server in
        let pki = server.pki
        let client = switch bad {
        case .noCertificate: try server.client()
        case .anotherCA: try server.client(cert: pki.foreignCert, key: pki.foreignKey)
        case .expired: try server.client(cert: pki.expiredCert, key: pki.expiredKey)
        }
        let good = try server.verifierClient()
        do {
            let result = try await client.call(server.url + "/healthz")
            Issue.record("\(bad): the server answered \(result.status) \(result.text)")
        } catch {
            // The TLS layer refused it; nothing reached HTTP.
            let text = "\(error)"
            #expect(text.contains("SSL") || text.contains("TLS") || text.contains("handshake") || text.contains("remoteConnectionClosed"),
                    "\(bad): \(text)")
        }
        let metrics = try await good.call(server.url + "/metrics").text
        #expect(metric(metrics, #"vmv_http_requests_total{route="/healthz",status="200"}"#) == nil, "\(bad) reached /healthz")
        let health = try await good.call(server.url + "/healthz")
        #expect(health.status == 200)
        #expect(try health.decode(ServiceAPI.Health.self).status == "ok")
        }
    }

    /// A certificate for a server, from the right CA, does not make a verifier: its lack of the
    /// clientAuth EKU fails the handshake.
    @Test func serverCertificateIsNotAClientCertificate() async throws {
        try await TestServer.with { server in
        let client = try server.client(cert: server.pki.serverCert, key: server.pki.serverKey)
        let error = await #expect(throws: (any Error).self) { try await client.call(server.url + "/v1/ak") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("UNSUPPORTED_CERTIFICATE"))
        }
    }

    // MARK: Requests

    @Test func badRequestsGetClearErrors() async throws {
        try await TestServer.with({ $0.maxBodyBytes = 1024 }) { server in
        let client = try server.verifierClient()
        for size in [0, 8, 15, 65, 200] {
            let (result, _) = try await client.quote(server.url, nonce: randomNonce(size))
            #expect(result.status == 400, "nonce of \(size) bytes")
            #expect(result.errorCode == "bad_nonce")
        }
        let notHex = try await client.call(server.url + "/v1/quote", method: .POST, json: ServiceAPI.QuoteRequest(nonce: "zz" + String(repeating: "00", count: 31)))
        #expect(notHex.status == 400)
        #expect(notHex.text.contains("not a hex digit"))
        let notJSON = try await client.call(server.url + "/v1/quote", method: .POST, body: Array("{nonce:".utf8))
        #expect(notJSON.status == 400)
        #expect(notJSON.errorCode == "bad_request")
        let missing = try await client.call(server.url + "/v1/quote", method: .POST, body: Array("{}".utf8))
        #expect(missing.status == 400)
        #expect(missing.text.contains("nonce"))
        let tooLarge = try await client.call(server.url + "/v1/quote", method: .POST, body: Array(repeating: UInt8(ascii: " "), count: 4096))
        #expect(tooLarge.status == 413)
        #expect(tooLarge.errorCode == "too_large")
        let badSelection = try await client.quote(server.url, nonce: randomNonce(), selection: "sha256:99").0
        #expect(badSelection.status == 400)
        #expect(badSelection.errorCode == "bad_selection")
        let unallocated = try await client.quote(server.url, nonce: randomNonce(), selection: "sha512:15").0
        #expect(unallocated.status == 400)
        #expect(unallocated.errorCode == "bad_selection", "\(unallocated.text)")
        let unknown = try await client.call(server.url + "/v1/nothing")
        #expect(unknown.status == 404)
        #expect(unknown.errorCode == "not_found")
        for size in [16, 64] {
            let (result, response) = try await client.quote(server.url, nonce: randomNonce(size))
            #expect(result.status == 200, "nonce of \(size) bytes: \(result.text)")
            #expect(response != nil)
        }
        let metrics = try await client.call(server.url + "/metrics").text
        #expect((metric(metrics, #"vmv_errors_total{kind="bad_request"}"#) ?? 0) >= 8)
        }
    }

    // MARK: Quotes and batching

    @Test func concurrentQuotesAreBatchedAndEachProofVerifies() async throws {
        try await TestServer.with({
            $0.batchWindowMilliseconds = 200
            $0.ratePerSecond = 1000
            $0.rateBurst = 1000
        }) { server in
        let count = 24
        let client = try server.verifierClient(connections: count)
        let tlsKeyHash = try server.expectedTLSKeyHash()
        let nonces = (0..<count).map { _ in randomNonce() }
        let answers = try await withThrowingTaskGroup(of: ([UInt8], ServiceAPI.QuoteResponse?, HTTPResult).self) { group in
            for nonce in nonces {
                group.addTask {
                    let (result, response) = try await client.quote(server.url, nonce: nonce)
                    return (nonce, response, result)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers.count == count)
        var batches: [String: Set<Int>] = [:]
        for (nonce, response, result) in answers {
            guard let response else {
                Issue.record("quote failed: \(result.status) \(result.text)")
                continue
            }
            #expect(response.binding.scheme == "vmv-merkle-sha256-v1")
            #expect(response.binding.tlsKeyHash == Hex.encode(tlsKeyHash))
            #expect(try verify(response, nonce: nonce, tlsKeyHash: tlsKeyHash) == .valid)
            // Someone else's nonce does not verify with this answer.
            let verdict = try verify(response, nonce: randomNonce(), tlsKeyHash: tlsKeyHash)
            #expect(verdict.failures.map(\.rule) == [.binding])
            batches[response.quote.message, default: []].insert(response.binding.leafIndex)
            #expect(response.binding.leafCount == answers.filter { $0.1?.quote.message == response.quote.message }.count)
        }
        // Each TPM quote's answers take distinct places in its tree.
        for (message, indices) in batches {
            let members = answers.filter { $0.1?.quote.message == message }.count
            #expect(indices.count == members)
        }
        let metrics = try await client.call(server.url + "/metrics").text
        let tpmQuotes = metric(metrics, #"vmv_tpm_quotes_total{mode="batched"}"#) ?? 0
        #expect(tpmQuotes == Double(batches.count))
        #expect(tpmQuotes < Double(count), "\(count) concurrent requests took \(tpmQuotes) TPM quotes")
        #expect(metric(metrics, "vmv_quote_requests_total") == Double(count))
        #expect(metric(metrics, #"vmv_quote_batch_size_count"#) == tpmQuotes)
        #expect(metric(metrics, #"vmv_quote_batch_size_sum"#) == Double(count))
        #expect((metric(metrics, #"vmv_tpm_quote_duration_seconds_count"#) ?? 0) == tpmQuotes)
        }
    }

    @Test func withoutBatchingEveryRequestGetsItsOwnQuote() async throws {
        try await TestServer.with({ $0.batching = false }) { server in
        let count = 6
        let client = try server.verifierClient(connections: count)
        let tlsKeyHash = try server.expectedTLSKeyHash()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    let nonce = randomNonce()
                    let (result, response) = try await client.quote(server.url, nonce: nonce)
                    #expect(result.status == 200, "\(result.text)")
                    if let response {
                        #expect(response.binding.leafCount == 1)
                        #expect(response.binding.proof.isEmpty)
                        #expect(try verify(response, nonce: nonce, tlsKeyHash: tlsKeyHash) == .valid)
                    }
                }
            }
            try await group.waitForAll()
        }
        let metrics = try await client.call(server.url + "/metrics").text
        #expect(metric(metrics, #"vmv_tpm_quotes_total{mode="unbatched"}"#) == Double(count))
        #expect(metric(metrics, #"vmv_tpm_quotes_total{mode="batched"}"#) == 0)
        }
    }

    /// The binding uses the certificate the server presents in the handshake, and a verifier
    /// that saw another key (a relay) rejects the quote.
    @Test func bindingUsesThePresentedCertificate() async throws {
        try await TestServer.with { server in
        let connection = try await RawTLSConnection.connect(port: server.port, pki: server.pki)
        let body = try JSONEncoder().encode(ServiceAPI.QuoteRequest(nonce: Hex.encode(randomNonce())))
        try await connection.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        guard let presented = try await connection.serverCertificateDER() else {
            Issue.record("no server certificate on the connection")
            return
        }
        await connection.close()
        let client = try server.verifierClient()
        let nonce = randomNonce()
        let (result, response) = try await client.quote(server.url, nonce: nonce)
        #expect(result.status == 200, "\(result.text) \(body.count)")
        let seen = try QuoteBinding.tlsKeyHash(certificateDER: presented)
        #expect(response?.binding.tlsKeyHash == Hex.encode(seen))
        if let response {
            #expect(try verify(response, nonce: nonce, tlsKeyHash: seen) == .valid)
            let relayed = try verify(response, nonce: nonce, tlsKeyHash: QuoteBinding.tlsKeyHash(subjectPublicKeyInfoDER: [1, 2, 3]))
            #expect(relayed.failures.map(\.rule) == [.binding])
            #expect(relayed.failures.first?.reason.contains("relayed") == true)
        }
        }
    }

    /// tpm2_checkquote accepts an answer saved to files, with the Merkle root as qualifying data.
    @Test func tpm2CheckquoteAcceptsTheSavedEvidence() async throws {
        let nonce = randomNonce()
        var saved: (HTTPResult, ServiceAPI.QuoteResponse?)?
        try await TestServer.with { server in
            saved = try await server.verifierClient().quote(server.url, nonce: nonce, selection: "sha1:15+sha256:0,15")
        }
        let (result, answer) = try #require(saved)
        guard let response = answer else {
            Issue.record("quote failed: \(result.status) \(result.text)")
            return
        }
        let directory = try TemporaryDirectory.make(prefix: "vmv-evidence")
        defer { try? FileManager.default.removeItem(at: directory) }
        func save(_ name: String, _ b64: String) throws -> String {
            let url = directory.appendingPathComponent(name)
            try #require(Data(base64Encoded: b64)).write(to: url)
            return url.path
        }
        let root = try (BindingProof(leafIndex: response.binding.leafIndex, leafCount: response.binding.leafCount,
                                                 path: response.binding.proof.map { try Hex.decode($0) })
            .root(from: QuoteBinding.leaf(nonce: nonce, tlsKeyHash: try Hex.decode(response.binding.tlsKeyHash))).get())
        let args = ["-u", try save("ak.pub", response.ak.publicArea), "-m", try save("quote.msg", response.quote.message),
                    "-s", try save("quote.sig", response.quote.signature), "-f", try save("quote.pcrs", response.quote.pcrs),
                    "-g", "sha256", "-q", Hex.encode(root)]
        let ok = try Tools.run(try Tools.path("tpm2_checkquote"), args)
        #expect(ok.status == 0, "\(ok.stderr)\(ok.stdout)")
        #expect(ok.stdout.contains("pcrs:"))
        // The nonce alone is not the qualifying data: tpm2_checkquote refuses it.
        var wrong = args
        wrong[wrong.count - 1] = Hex.encode(nonce)
        let refused = try Tools.run(try Tools.path("tpm2_checkquote"), wrong)
        #expect(refused.status != 0)
    }

    // MARK: Limits

    /// Clients that stall (a TLS handshake never started; half a request sent) do not delay
    /// other clients' quotes; the server closes them when their time is up.
    @Test func stalledClientsDoNotBlockOthers() async throws {
        // Timeouts long enough that setting up the stalled connections and the quotes on a
        // loaded machine (seen: over 10 s while every suite ran in parallel) fit inside them.
        try await TestServer.with({
            $0.requestTimeoutSeconds = 25
            $0.idleTimeoutSeconds = 30
        }) { server in
        var silent: [any Channel] = []
        var halfRequests: [RawTLSConnection] = []
        for _ in 0..<4 {
            silent.append(try await openSilentTCP(port: server.port))
            let connection = try await RawTLSConnection.connect(port: server.port, pki: server.pki)
            try await connection.send("POST /v1/quote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"nonce\": \"00")
            halfRequests.append(connection)
        }
        let client = try server.verifierClient(connections: 8)
        let tlsKeyHash = try server.expectedTLSKeyHash()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let nonce = randomNonce()
                    let (result, response) = try await client.quote(server.url, nonce: nonce)
                    #expect(result.status == 200, "\(result.text)")
                    if let response { #expect(try verify(response, nonce: nonce, tlsKeyHash: tlsKeyHash) == .valid) }
                }
            }
            try await group.waitForAll()
        }
        // The quotes were answered while every stalled connection was still open.
        let stillOpen = halfRequests.filter { $0.isOpen }.count
        let silentOpen = silent.filter { $0.isActive }.count
        #expect(stillOpen == halfRequests.count, "a stalled request was dropped before the others were served")
        #expect(silentOpen == silent.count)
        #expect(halfRequests.allSatisfy { $0.bytesReceived.isEmpty })
        // Their time runs out: the server closes them.
        for connection in halfRequests {
            #expect(await connection.waitForClose(seconds: 60), "a half-sent request was never timed out")
        }
        for channel in silent {
            var closed = false
            for _ in 0..<1200 where !closed {
                closed = !channel.isActive
                if !closed { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(closed, "a connection without a TLS handshake was never closed")
            try? await channel.close().get()
        }
        }
    }

    @Test func rateLimitIsPerClientCertificate() async throws {
        try await TestServer.with({
            $0.ratePerSecond = 1
            $0.rateBurst = 3
        }) { server in
        let pki = server.pki
        let first = try server.verifierClient()
        // 20 requests at once: the burst of 3 passes, plus at most one per second they took.
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: HTTPResult.self) { group in
            for _ in 0..<20 { group.addTask { try await first.call(server.url + "/v1/ak") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let elapsed = (ContinuousClock.now - start).components.seconds + 1
        let passed = results.filter { $0.status == 200 }.count
        let limited = results.filter { $0.status == 429 }
        #expect(passed >= 3 && passed <= 3 + Int(elapsed), "\(passed) passed in \(elapsed) s")
        #expect(passed + limited.count == 20)
        #expect(limited.allSatisfy { $0.errorCode == "rate_limited" })
        // Another verifier's certificate has its own budget.
        let ca = try CertificateAuthority(certificatePEM: try String(contentsOfFile: pki.directory + "/ca.pem", encoding: .utf8),
                                          keyPEM: try String(contentsOfFile: pki.directory + "/ca.key", encoding: .utf8))
        let other = try ca.issue(commonName: "second verifier", usage: .client, days: 1)
        try PKIFiles.writeFile(pki.directory + "/second.pem", Array(try other.certificate.serializeAsPEM().pemString.utf8), mode: 0o644)
        try PKIFiles.writeFile(pki.directory + "/second.key", Array(other.key.pemRepresentation.utf8), mode: 0o600)
        let second = try server.client(cert: pki.directory + "/second.pem", key: pki.directory + "/second.key")
        #expect(try await second.call(server.url + "/v1/ak").status == 200)
        let metrics = try await second.call(server.url + "/metrics").text
        #expect(metric(metrics, #"vmv_errors_total{kind="rate_limited"}"#) == Double(limited.count))
        }
    }

    // MARK: Other endpoints

    /// Enrollment: a credential made in software for the EK and the AK's Name is activated by
    /// the host's TPM, which proves it with an HMAC and never sends the credential back; a
    /// credential for another Name is refused. An AK certificate for this AK is stored and
    /// served; one for another key is refused.
    @Test func enrollmentActivatesAndStoresTheAKCertificate() async throws {
        try await TestServer.with { server in
        let client = try server.verifierClient()
        let parts = try await client.call(server.url + "/v1/ak").decode(ServiceAPI.AKResponse.self)
        let ekB64 = try #require(parts.ek.publicArea)
        let ek = try TPM2BPublic(wireBytes: Array(try #require(Data(base64Encoded: ekB64)))).publicArea
        let akName = try Hex.decode(parts.ak.name)
        let credential = randomNonce(32)
        let challenge = try CredentialChallenge(ek: ek, objectName: akName, credential: credential)
        let request = ServiceAPI.ActivateRequest(credentialBlob: Data(challenge.credentialBlob).base64EncodedString(),
                                                 secret: Data(challenge.encryptedSecret).base64EncodedString())
        let answer = try await client.call(server.url + "/v1/enroll/activate", method: .POST, json: request)
        #expect(answer.status == 200, "\(answer.text)")
        let proof = try Hex.decode(try answer.decode(ServiceAPI.ActivateResponse.self).proof)
        #expect(ActivationProof.verify(proof, credential: credential, akName: akName))
        #expect(!answer.text.contains(Hex.encode(credential)))
        var otherName = akName
        otherName[otherName.count - 1] ^= 1
        let wrong = try CredentialChallenge(ek: ek, objectName: otherName, credential: credential)
        let refused = try await client.call(server.url + "/v1/enroll/activate", method: .POST, json: ServiceAPI.ActivateRequest(
            credentialBlob: Data(wrong.credentialBlob).base64EncodedString(), secret: Data(wrong.encryptedSecret).base64EncodedString()))
        #expect(refused.status == 400)
        #expect(refused.errorCode == "activation_failed")

        // An AK certificate: for this AK it is kept; for another key refused.
        let akPublic = try TPM2BPublic(wireBytes: Array(try #require(Data(base64Encoded: parts.ak.publicArea)))).publicArea
        let akKey = try AttestationKey(tpmPublic: akPublic).certificatePublicKey
        let ca = try CertificateAuthority(commonName: "AK CA")
        func akCertificate(_ key: Certificate.PublicKey) throws -> String {
            try Certificate(version: .v3, serialNumber: .init(), publicKey: key, notValidBefore: Date(),
                            notValidAfter: Date().addingTimeInterval(86400), issuer: ca.certificate.subject,
                            subject: try DistinguishedName { CommonName("AK of the test host") },
                            signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(),
                            issuerPrivateKey: ca.privateKey).serializeAsPEM().pemString
        }
        let stored = try await client.call(server.url + "/v1/enroll/certificate", method: .POST,
                                           json: ServiceAPI.CertificateRequest(certificate: try akCertificate(akKey)))
        #expect(stored.status == 200, "\(stored.text)")
        #expect(try stored.decode(ServiceAPI.AKResponse.self).ak.certificates.count == 1)
        let foreign = try await client.call(server.url + "/v1/enroll/certificate", method: .POST,
                                            json: ServiceAPI.CertificateRequest(certificate: try akCertificate(ca.certificate.publicKey)))
        #expect(foreign.status == 400)
        #expect(foreign.errorCode == "wrong_key")
        let (_, quote) = try await client.quote(server.url, nonce: randomNonce())
        #expect(quote?.ak.certificates.count == 1)
        }
    }

    @Test func keysDomainsAndHealth() async throws {
        try await TestServer.with { server in
        let client = try server.verifierClient()
        let keys = try await client.call(server.url + "/v1/ak")
        #expect(keys.status == 200)
        let parts = try keys.decode(ServiceAPI.AKResponse.self)
        let akPublic = try TPM2BPublic(wireBytes: Array(try #require(Data(base64Encoded: parts.ak.publicArea))))
        #expect(akPublic.publicArea.objectAttributes.isSuperset(of: TPMAObject.attestationKey))
        #expect(parts.ak.handle == "0x81010003")
        #expect(parts.ak.name == Hex.encode(akPublic.publicArea.name ?? []))
        let ekPEM = try #require(parts.ek.certificate)
        #expect(ekPEM.hasPrefix("-----BEGIN CERTIFICATE-----"))
        let domains = try await client.call(server.url + "/v1/domains")
        #expect(domains.status == 200)
        let list = try domains.decode(ServiceAPI.DomainsResponse.self)
        #expect(list.domains.isEmpty)
        #expect(list.note?.contains("Xen") == true)
        let metrics = try await client.call(server.url + "/metrics")
        #expect(metrics.status == 200)
        for name in ["vmv_tpm_quotes_total", "vmv_quote_requests_total", "vmv_quote_batch_size", "vmv_tpm_quote_duration_seconds",
                     "vmv_measurements_total", "vmv_errors_total", "vmv_log_records", "vmv_log_epoch", "vmv_http_requests_total"] {
            #expect(metrics.text.contains("# TYPE \(name)"), "/metrics lacks \(name)")
        }
        }
    }
}
