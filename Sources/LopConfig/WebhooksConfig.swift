import Foundation
import Yams

extension LopConfig {
    /// Webhook delivery (lop-notifier) and destination safety.
    public struct Webhooks: Sendable, Equatable {
        /// A delivery succeeds on a 2xx within this many seconds.
        public var timeoutSeconds = 15.0
        /// Seconds before attempt 1, 2, …: the Standard Webhooks schedule (immediately, 5 s, 5 min, 30 min,
        /// 2 h, 5 h, 10 h, 14 h, 20 h, 24 h). After the last attempt fails the delivery is dead.
        public var retrySchedule: [Double] = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
        /// Each delay is stretched or shrunk at random by up to this fraction, so retries do not arrive in step.
        public var jitter = 0.1
        /// Deliveries a notifier has in flight at once.
        public var concurrency = 16
        /// Longest wait for a NOTIFY before looking for due deliveries anyway.
        public var pollSeconds = 1.0
        /// Hosts (names or addresses, exact) that may resolve to private, loopback or link-local addresses.
        public var allowHosts: [String] = []
        /// After `rotate-secret`, deliveries are signed with the old secret too for this long.
        public var rotationOverlapHours = 24.0
        /// Bytes of a receiver's response kept per attempt.
        public var responseSnippetBytes = 1024
        public init() {}
    }
}

extension TableReader {
    mutating func readWebhooks(into webhooks: inout LopConfig.Webhooks) throws {
        if let v = try double("timeout_seconds", in: 0.05...3600) { webhooks.timeoutSeconds = v }
        if let v = try doubleList("retry_schedule", in: 0...(7 * 86400)) {
            guard !v.isEmpty && v.count <= 100 else {
                throw ConfigError.invalidValue(key: keyPath("retry_schedule"), reason: "needs between 1 and 100 delays", source: source)
            }
            webhooks.retrySchedule = v
        }
        if let v = try double("jitter", in: 0...0.5) { webhooks.jitter = v }
        if let v = try int("concurrency", in: 1...1024) { webhooks.concurrency = v }
        if let v = try double("poll_seconds", in: 0.01...3600) { webhooks.pollSeconds = v }
        if let v = try stringList("allow_hosts") { webhooks.allowHosts = v.map { $0.lowercased() } }
        if let v = try double("rotation_overlap_hours", in: 0...(24 * 365)) { webhooks.rotationOverlapHours = v }
        if let v = try int("response_snippet_bytes", in: 0...65536) { webhooks.responseSnippetBytes = v }
    }

    /// A list of numbers from the file, or a comma-separated environment variable, each within `range`.
    mutating func doubleList(_ key: String, in range: ClosedRange<Double>) throws -> [Double]? {
        guard let texts = try scalarTexts(key, expected: "a list of numbers") else { return nil }
        return try texts.map { text, origin in
            guard let x = Double(text), x.isFinite else {
                throw ConfigError.wrongType(key: keyPath(key), expected: "a list of numbers", found: "'\(text)'", source: origin)
            }
            guard range.contains(x) else {
                throw ConfigError.invalidValue(key: keyPath(key), reason: "\(text) is outside \(range.lowerBound)...\(range.upperBound)", source: origin)
            }
            return x
        }
    }
}
