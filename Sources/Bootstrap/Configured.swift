import LopConfig
import Logging
import Queue
import Store
import Webhooks

// The configuration mapped onto each module's own settings: Store, Queue and Webhooks know nothing of LopConfig.

extension ConnectionPool {
    /// The pool for the configured database (size, timeouts, reconnect policy from `database.*`).
    public convenience init(config: LopConfig.Database, minimumSize: Int = 1, logger: Logger) throws {
        self.init(
            target: try ConnectionTarget(config.url), size: max(config.poolSize, minimumSize),
            acquireTimeout: config.acquireTimeoutSeconds, connectTimeoutSeconds: config.connectTimeoutSeconds,
            reconnect: ReconnectPolicy(maxAttempts: config.reconnect.maxAttempts,
                                       initialDelay: Double(config.reconnect.initialDelayMs) / 1000,
                                       maxDelay: Double(config.reconnect.maxDelayMs) / 1000),
            logger: logger)
    }
}

extension LopConfig {
    /// The pool every command uses to reach the database.
    public func makePool(minimumSize: Int = 1, logger: Logger) throws -> ConnectionPool {
        try ConnectionPool(config: database, minimumSize: minimumSize, logger: logger)
    }
}

extension RetryPolicy {
    public init(_ retry: LopConfig.Retry) {
        self.init(baseSeconds: retry.baseSeconds, exponent: retry.exponent, capSeconds: retry.capSeconds)
    }
}

extension WorkerOptions {
    /// Worker settings from `queue.*`.
    public init(config: LopConfig.Queue, name: String = WorkerOptions.defaultName()) {
        // Kind names were checked when the configuration was read.
        let byKind = config.retryByKind.compactMap { name, retry in JobKind(rawValue: name).map { ($0, RetryPolicy(retry)) } }
        self.init(name: name, queues: config.queues, concurrency: config.concurrency, leaseSeconds: config.leaseSeconds,
                  heartbeatSeconds: config.heartbeatSeconds, pollSeconds: config.pollSeconds, rescueSeconds: config.rescueSeconds,
                  progressSeconds: config.progressSeconds, shutdownGraceSeconds: config.shutdownGraceSeconds,
                  retry: RetryPolicy(config.retry), retryByKind: Dictionary(uniqueKeysWithValues: byKind))
    }
}

extension DeliverySettings {
    /// Delivery settings from `webhooks.*`.
    public init(_ config: LopConfig.Webhooks) {
        self.init()
        (timeoutSeconds, retrySchedule, jitter, concurrency) = (config.timeoutSeconds, config.retrySchedule, config.jitter, config.concurrency)
        (pollSeconds, allowHosts, responseSnippetBytes) = (config.pollSeconds, config.allowHosts, config.responseSnippetBytes)
    }
}
