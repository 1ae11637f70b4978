import Foundation
import LopConfig
import Testing
import TestSupport
@testable import Webhooks

@Suite struct SigningTests {
    /// The Standard Webhooks specification's test vector, and an HMAC computed by Python's hmac module from the
    /// spec's definition (base64 HMAC-SHA256 of "id.timestamp.body" with the base64-decoded secret).
    @Test func signaturesMatchTheSpecificationAndAnIndependentHMAC() throws {
        let secret = try WebhookSecret(parsing: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        let body = Array(#"{"test": 2432232314}"#.utf8)
        let signature = WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: body, secret: secret)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        for (id, timestamp, text) in [("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, #"{"test": 2432232314}"#), ("msg_2", 1700000000, "{\"a\": \"é\"}")] {
            let script = """
                import base64, hashlib, hmac, sys
                key = base64.b64decode(sys.argv[1][len("whsec_"):])
                print("v1," + base64.b64encode(hmac.new(key, ("%s.%s." % (sys.argv[2], sys.argv[3])).encode() + sys.argv[4].encode(), hashlib.sha256).digest()).decode())
                """
            let python = try TestProcess.run(["/usr/bin/env", "python3", "-c", script, secret.text, id, String(timestamp), text], separateStandardError: true)
            #expect(python.status == 0)
            #expect(WebhookSignature.sign(id: id, timestamp: timestamp, body: Array(text.utf8), secret: secret) == python.output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    @Test func theVerifierChecksSignatureSecretAndTimestamp() throws {
        let (old, new) = (WebhookSecret.generate(), WebhookSecret.generate())
        #expect(old != new && new.key.count == 32 && new.text.hasPrefix("whsec_"))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let body = Array(#"{"type":"ping"}"#.utf8)
        let t = Int(now.timeIntervalSince1970)
        let both = WebhookSignature.header(id: "msg_1", timestamp: t, body: body, secrets: [new, old])
        #expect(both.split(separator: " ").count == 2)
        // While a secret rotates, a receiver holding either one verifies the delivery.
        for secrets in [[new], [old], [WebhookSecret.generate(), old]] {
            try WebhookVerifier(secrets: secrets).verify(id: "msg_1", timestamp: String(t), signature: both, body: body, now: now)
        }
        let verifier = WebhookVerifier(secrets: [new])
        func rejects(_ message: String, id: String? = "msg_1", timestamp: String? = String(t), signature: String? = both, body: [UInt8] = body) {
            #expect { try verifier.verify(id: id, timestamp: timestamp, signature: signature, body: body, now: now) } throws: { "\($0)".contains(message) }
        }
        rejects("no v1 signature matches", body: Array(#"{"type":"pong"}"#.utf8))
        rejects("no v1 signature matches", id: "msg_2")
        rejects("no v1 signature matches", signature: WebhookSignature.sign(id: "msg_1", timestamp: t, body: body, secret: old))
        rejects("no v1 signature matches", signature: "v2," + both.dropFirst(3))
        rejects("old", timestamp: String(t - 301))
        rejects("future", timestamp: String(t + 301))
        rejects("malformed webhook-timestamp", timestamp: "yesterday")
        rejects("missing webhook-id", id: nil)
        rejects("missing webhook-signature", signature: "")
        // A timestamp changed after signing breaks the signature even within the tolerance.
        rejects("no v1 signature matches", timestamp: String(t - 10))
        #expect(WebhookVerifier.constantTimeEqual([1, 2, 3], [1, 2, 3]) && !WebhookVerifier.constantTimeEqual([1, 2, 3], [1, 2, 4]) && !WebhookVerifier.constantTimeEqual([1], [1, 1]))
    }

    @Test func secretsAreValidatedAndNeverPrinted() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + Data(repeating: 1, count: 8).base64EncodedString()] {
            #expect(throws: WebhookError.self) { try WebhookSecret(parsing: bad) }
        }
        let secret = WebhookSecret.generate()
        #expect("\(secret)" == "whsec_…" && !"\([secret])".contains(secret.text.dropFirst(6)))
    }
}

@Suite struct DestinationTests {
    @Test func onlyPublicAddressesArePublic() {
        for address in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            #expect(Destination.isPublic(address), "\(address)")
        }
        for address in ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                        "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "fc00::5", "ff02::1", "::ffff:127.0.0.1",
                        "::ffff:10.0.0.1", "2001:db8::1", "not an address"] {
            #expect(!Destination.isPublic(address), "\(address)")
        }
    }

    @Test func urlsAreCheckedAfterResolution() throws {
        func refused(_ url: String, allow: [String] = [], _ message: String) {
            #expect { _ = try Destination.check(url, allowHosts: allow) } throws: { "\($0)".contains(message) }
        }
        refused("http://127.0.0.1:8080/hook", "private, loopback or link-local")
        refused("http://localhost/hook", "private, loopback or link-local")
        refused("http://[::1]:9/x", "private, loopback or link-local")
        refused("http://169.254.169.254/latest/meta-data", "private, loopback or link-local")
        refused("ftp://example.com/x", "only http and https")
        refused("file:///etc/passwd", "only http and https")
        refused("http://user:pw@127.0.0.1/x", allow: ["127.0.0.1"], "credentials")
        refused("no scheme", "not a URL")
        refused("http:///path", "no host")
        refused("http://no-such-host.invalid/x", "does not resolve")
        // The allow-list names hosts exactly: 127.0.0.1 does not open localhost.
        refused("http://localhost:9/x", allow: ["127.0.0.1"], "private")
        let allowed = try Destination.check("http://127.0.0.1:8080/hook?a=1", allowHosts: ["127.0.0.1"])
        #expect(allowed.host == "127.0.0.1" && allowed.port == 8080 && allowed.addresses == ["127.0.0.1"])
        #expect(try Destination.check("https://[::1]/x", allowHosts: ["::1"]).port == 443)
    }
}

@Suite struct DeliveryDecisionTests {
    @Test func outcomesFollowTheSpecification() {
        var settings = DeliverySettings()
        settings.jitter = 0.1
        func outcome(_ status: Int?, retryAfter: String? = nil) -> PostOutcome {
            PostOutcome(statusCode: status, retryAfter: retryAfter, snippet: "", error: status == nil ? "Couldn't connect to server" : nil, seconds: 0.01)
        }
        #expect(DeliveryDecision.decide(outcome(200), attempt: 1, settings: settings) == .delivered)
        #expect(DeliveryDecision.decide(outcome(204), attempt: 10, settings: settings) == .delivered)
        #expect(DeliveryDecision.decide(outcome(410), attempt: 1, settings: settings) == .gone)
        // Failures wait for the schedule's next delay (5 s after attempt 1, 5 min after attempt 2), jittered.
        #expect(DeliveryDecision.decide(outcome(500), attempt: 1, settings: settings, random: 0) == .retry(after: 5))
        #expect(DeliveryDecision.decide(outcome(301), attempt: 2, settings: settings, random: 1) == .retry(after: 330))
        #expect(DeliveryDecision.decide(outcome(nil), attempt: 2, settings: settings, random: -1) == .retry(after: 270))
        #expect(DeliveryDecision.decide(outcome(500), attempt: 10, settings: settings) == .dead)
        // 429 and 503 wait for Retry-After (seconds or an HTTP date), capped at a day.
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(DeliveryDecision.decide(outcome(429, retryAfter: "7"), attempt: 1, settings: settings, now: now) == .retry(after: 7))
        #expect(DeliveryDecision.decide(outcome(503, retryAfter: "999999"), attempt: 1, settings: settings, now: now) == .retry(after: 86400))
        // 1_800_000_000 is Fri, 15 Jan 2027 08:00:00 GMT.
        #expect(DeliveryDecision.decide(outcome(503, retryAfter: "Fri, 15 Jan 2027 08:00:30 GMT"), attempt: 1, settings: settings, now: now) == .retry(after: 30))
        #expect(DeliveryDecision.decide(outcome(429, retryAfter: "soon"), attempt: 1, settings: settings, random: 0) == .retry(after: 5))
        #expect(DeliveryDecision.decide(outcome(500, retryAfter: "7"), attempt: 1, settings: settings, random: 0) == .retry(after: 5))
        #expect(DeliveryDecision.retryAfterSeconds("Thu, 01 Jan 1970 00:00:10 GMT", now: Date(timeIntervalSince1970: 0)) == 10)
        #expect(DeliveryDecision.retryAfterSeconds("-3", now: now) == nil)
    }
}
