import LopConfig
import Logging

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
