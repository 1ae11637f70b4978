import LopConfig
import Logging
import Store

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
        // Kind names were checked when the configuration was read.
        retryByKind = Dictionary(uniqueKeysWithValues: config.retryByKind.compactMap { name, retry in JobKind(rawValue: name).map { ($0, RetryPolicy(retry)) } })
    }
}
