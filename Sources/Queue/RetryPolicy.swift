import Foundation

/// When a failed attempt runs again: `base · attempt^exponent` seconds, capped, with ±10 % jitter
/// (attempt⁴ like River and Oban: 1 s, 16 s, 81 s, 4 min, 10 min, …). The queue evaluates it in SQL.
public struct RetryPolicy: Sendable, Equatable {
    public var baseSeconds: Double
    public var exponent: Double
    public var capSeconds: Double

    /// The defaults are `queue.retry`'s in Config/lop.yaml (a test keeps them equal).
    public init(baseSeconds: Double = 1, exponent: Double = 4, capSeconds: Double = 3600) {
        self.baseSeconds = baseSeconds
        self.exponent = exponent
        self.capSeconds = capSeconds
    }

    /// The delay after failed attempt number `attempt` (1-based), before jitter.
    public func delay(afterAttempt attempt: Int) -> Double {
        min(capSeconds, baseSeconds * pow(Double(max(attempt, 1)), exponent))
    }
}
