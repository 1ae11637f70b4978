import LopConfig
import Logging
import Store

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

extension RetryPolicy {
    public init(_ retry: LopConfig.Retry) {
        self.init(baseSeconds: retry.baseSeconds, exponent: retry.exponent, capSeconds: retry.capSeconds)
    }
}

extension WorkerOptions {
    /// Worker settings from `queue.*`.
    public init(config: LopConfig.Queue, name: String = WorkerOptions.defaultName()) {
        self.name = name
        queues = config.queues
        concurrency = config.concurrency
        leaseSeconds = config.leaseSeconds
        heartbeatSeconds = config.heartbeatSeconds
        pollSeconds = config.pollSeconds
        rescueSeconds = config.rescueSeconds
        progressSeconds = config.progressSeconds
        shutdownGraceSeconds = config.shutdownGraceSeconds
        retry = RetryPolicy(config.retry)
        retryByKind = config.retryByKind.mapValues(RetryPolicy.init)
    }
}
