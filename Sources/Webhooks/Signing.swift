import Crypto
import Foundation
import LopCore

/// A Standard Webhooks signing secret: `whsec_` followed by the base64 of 24 to 64 random bytes.
public struct WebhookSecret: Sendable, Equatable, CustomStringConvertible {
    public let key: [UInt8]
    /// The `whsec_…` form, shown to the user once and stored for signing.
    public let text: String

    public init(parsing text: String) throws(WebhookError) {
        guard text.hasPrefix("whsec_"), let data = Data(base64Encoded: String(text.dropFirst(6))) else {
            throw WebhookError("a webhook secret is \"whsec_\" followed by base64")
        }
        guard (24...64).contains(data.count) else { throw WebhookError("a webhook secret holds 24 to 64 bytes, this one \(data.count)") }
        key = Array(data)
        self.text = text
    }

    /// A fresh secret of 32 random bytes.
    public static func generate() -> WebhookSecret {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return try! WebhookSecret(parsing: "whsec_" + Data(bytes).base64EncodedString())
    }

    /// Never the key itself: secrets stay out of logs and error messages.
    public var description: String { "whsec_…" }
}

/// Standard Webhooks v1 signatures: base64 HMAC-SHA256 of `id.timestamp.body`.
public enum WebhookSignature {
    /// `v1,<base64>` for one secret.
    public static func sign(id: String, timestamp: Int, body: [UInt8], secret: WebhookSecret) -> String {
        "v1," + Data(mac(id: id, timestamp: timestamp, body: body, key: secret.key)).base64EncodedString()
    }

    /// The `webhook-signature` header: one space-separated signature per secret (several while rotating).
    public static func header(id: String, timestamp: Int, body: [UInt8], secrets: [WebhookSecret]) -> String {
        secrets.map { sign(id: id, timestamp: timestamp, body: body, secret: $0) }.joined(separator: " ")
    }

    static func mac(id: String, timestamp: Int, body: [UInt8], key: [UInt8]) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: key))
        hmac.update(data: Array("\(id).\(timestamp).".utf8))
        hmac.update(data: body)
        return Array(hmac.finalize())
    }
}

/// Checks a delivery as a receiver must: a `v1` signature made with one of the secrets (compared in constant
/// time) and a timestamp within the tolerance of now.
public struct WebhookVerifier: Sendable {
    public let secrets: [WebhookSecret]
    public let toleranceSeconds: Int

    public init(secrets: [WebhookSecret], toleranceSeconds: Int = 300) {
        self.secrets = secrets
        self.toleranceSeconds = toleranceSeconds
    }

    /// Throws unless the headers `webhook-id`, `webhook-timestamp` and `webhook-signature` verify `body`.
    public func verify(id: String?, timestamp: String?, signature: String?, body: [UInt8], now: Date = Date()) throws(WebhookError) {
        guard let id, !id.isEmpty else { throw WebhookError("missing webhook-id header") }
        guard let timestamp, let seconds = Int(timestamp) else { throw WebhookError("missing or malformed webhook-timestamp header") }
        let age = Int(now.timeIntervalSince1970) - seconds
        guard age <= toleranceSeconds else { throw WebhookError("webhook-timestamp is \(age) s old, beyond the \(toleranceSeconds) s tolerance") }
        guard -age <= toleranceSeconds else { throw WebhookError("webhook-timestamp is \(-age) s in the future, beyond the \(toleranceSeconds) s tolerance") }
        guard let signature, !signature.isEmpty else { throw WebhookError("missing webhook-signature header") }
        let offered = signature.split(separator: " ").compactMap { part -> [UInt8]? in
            guard part.hasPrefix("v1,"), let data = Data(base64Encoded: String(part.dropFirst(3))) else { return nil }
            return Array(data)
        }
        for secret in secrets {
            let expected = WebhookSignature.mac(id: id, timestamp: seconds, body: body, key: secret.key)
            for candidate in offered where Self.constantTimeEqual(candidate, expected) { return }
        }
        throw WebhookError("no v1 signature matches")
    }

    /// Compares every byte whatever differs first, so timing says nothing about how much of a guess was right.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}

public struct WebhookError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension WebhookError: LopError {
    /// A bad URL, secret, event name or delivery id: bad input.
    public var exitCode: Int32 { ExitStatus.dataError }
}
