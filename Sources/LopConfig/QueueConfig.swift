import Foundation
import Yams

/// Kinds of job lop knows (the same list as the CHECK on `lop.jobs.kind`).
public let knownJobKinds = ["compress", "search", "sweep", "train", "evaluate", "noop", "sleep"]

extension LopConfig {
    /// Worker and queue settings.
    public struct Queue: Sendable, Equatable {
        /// Queues a worker takes jobs from (comma-separated in LOP_QUEUE_QUEUES).
        public var queues = ["default"]
        public var concurrency = 2
        public var leaseSeconds = 30.0
        public var heartbeatSeconds = 5.0
        public var pollSeconds = 1.0
        public var rescueSeconds = 10.0
        public var progressSeconds = 1.0
        public var shutdownGraceSeconds = 30.0
        /// Default attempts of a job submitted without --max-attempts.
        public var maxAttempts = 5
        public var retry = Retry()
        /// Per-kind overrides of `retry`.
        public var retryByKind: [String: Retry] = [:]
        /// Jobs enqueued on a schedule, exactly once per period across all workers.
        public var periodic: [Periodic] = []
        /// A periodic job whose fire time passed while no worker ran is still enqueued within this window.
        public var periodicCatchUpSeconds = 3600.0
        public init() {}
    }

    /// Backoff after a failed attempt: base · attempt^exponent seconds, capped.
    public struct Retry: Sendable, Equatable {
        public var baseSeconds = 1.0
        public var exponent = 4.0
        public var capSeconds = 3600.0
        public init() {}
    }

    /// A job enqueued at each fire time of a cron expression (UTC).
    public struct Periodic: Sendable, Equatable {
        public var name: String
        /// Five fields: minute hour day-of-month month day-of-week.
        public var cron: String
        public var kind: String
        /// JSON object text.
        public var args: String
        public var queue: String
        public var priority: Int
        public init(name: String, cron: String, kind: String, args: String = "{}", queue: String = "default", priority: Int = 2) {
            self.name = name
            self.cron = cron
            self.kind = kind
            self.args = args
            self.queue = queue
            self.priority = priority
        }
    }
}

extension TableReader {
    mutating func readQueue(into queue: inout LopConfig.Queue) throws {
        let source = self.source
        if let v = try stringList("queues") {
            guard !v.isEmpty, v.allSatisfy({ $0.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil }) else {
                throw ConfigError.invalidValue(key: keyPath("queues"), reason: "queue names are lower-case letters, digits, '_' and '-'", source: source)
            }
            queue.queues = v
        }
        if let v = try int("concurrency", in: 1...256) { queue.concurrency = v }
        if let v = try double("lease_seconds", in: 1...86400) { queue.leaseSeconds = v }
        if let v = try double("heartbeat_seconds", in: 0.05...3600) { queue.heartbeatSeconds = v }
        if let v = try double("poll_seconds", in: 0.01...3600) { queue.pollSeconds = v }
        if let v = try double("rescue_seconds", in: 0.05...86400) { queue.rescueSeconds = v }
        if let v = try double("progress_seconds", in: 0...3600) { queue.progressSeconds = v }
        if let v = try double("shutdown_grace_seconds", in: 0...86400) { queue.shutdownGraceSeconds = v }
        if let v = try int("max_attempts", in: 1...1000) { queue.maxAttempts = v }
        if let v = try double("periodic_catch_up_seconds", in: 0...(366 * 86400)) { queue.periodicCatchUpSeconds = v }
        if queue.heartbeatSeconds >= queue.leaseSeconds {
            throw ConfigError.invalidValue(key: keyPath("heartbeat_seconds"), reason: "must be shorter than lease_seconds", source: source)
        }
        try table("retry") { try $0.readRetry(into: &queue.retry) }
        try tables("retry_by_kind") { kind, reader in
            guard knownJobKinds.contains(kind) else {
                throw ConfigError.invalidValue(key: reader.path, reason: "'\(kind)' is not a job kind (\(knownJobKinds.joined(separator: ", ")))", source: source)
            }
            var retry = queue.retry
            try reader.readRetry(into: &retry)
            queue.retryByKind[kind] = retry
        }
        try list("periodic") { index, reader in
            func required(_ key: String) throws -> String {
                guard let v = try reader.string(key)?.0 else {
                    throw ConfigError.invalidValue(key: "\(reader.path).\(key)", reason: "is required", source: source)
                }
                return v
            }
            let kind = try required("kind")
            guard knownJobKinds.contains(kind) else {
                throw ConfigError.invalidValue(key: "\(reader.path).kind", reason: "'\(kind)' is not a job kind", source: source)
            }
            var periodic = LopConfig.Periodic(name: try required("name"), cron: try required("cron"), kind: kind)
            if let v = try reader.string("queue")?.0 { periodic.queue = v }
            if let v = try reader.int("priority", in: 1...4) { periodic.priority = v }
            if let v = try reader.json("args") { periodic.args = v }
            if queue.periodic.contains(where: { $0.name == periodic.name }) {
                throw ConfigError.invalidValue(key: "\(reader.path).name", reason: "'\(periodic.name)' is used twice", source: source)
            }
            queue.periodic.append(periodic)
        }
    }

    mutating func readRetry(into retry: inout LopConfig.Retry) throws {
        if let v = try double("base_seconds", in: 0...86400) { retry.baseSeconds = v }
        if let v = try double("exponent", in: 0...10) { retry.exponent = v }
        if let v = try double("cap_seconds", in: 0...(30 * 86400)) { retry.capSeconds = v }
    }
}
