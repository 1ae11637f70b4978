/// How the notifier delivers (mapped from the config's `webhooks` section by the executables).
public struct DeliverySettings: Sendable, Equatable {
    /// A delivery succeeds on a 2xx within this many seconds.
    public var timeoutSeconds = 15.0
    /// Seconds before attempt 1, 2, …: the Standard Webhooks schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h, 14 h, 20 h, 24 h). After the last attempt fails the delivery is dead.
    public var retrySchedule: [Double] = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    /// Each delay is stretched or shrunk at random by up to this fraction, so retries do not arrive in step.
    public var jitter = 0.1
    /// Deliveries in flight at once.
    public var concurrency = 16
    /// Longest wait for a NOTIFY before looking for due deliveries anyway.
    public var pollSeconds = 1.0
    /// Hosts (names or addresses, exact) that may resolve to private, loopback or link-local addresses.
    public var allowHosts: [String] = []
    /// Bytes of a receiver's response kept per attempt.
    public var responseSnippetBytes = 1024

    public init() {}
}

/// The events lop writes to the webhook outbox (the webhook tables' CHECKs list the same; `ping` only by
/// `lop webhooks test`).
public enum WebhookEvents {
    public static let known = ["job.completed", "job.failed", "job.cancelled", "model.registered", "model.evaluated", "model.alias_changed",
                               "predictor.promoted", "ping"]
}
