import Foundation
import Store

/// Where a job is in its life; the last three are final.
public enum JobState: String, Sendable, CaseIterable, Codable, PostgresDecodable {
    case available, scheduled, running, retryable, completed, cancelled, discarded

    public var isFinal: Bool { self == .completed || self == .cancelled || self == .discarded }
}

/// One failed attempt, as kept in `lop.jobs.errors`.
public struct JobError: Sendable, Codable, Equatable {
    public let attempt: Int
    public let at: String
    public let error: String
    public let worker: String?
}

/// A row of `lop.jobs`.
public struct Job: Sendable, Encodable {
    public let id: Int64
    public let kind: JobKind
    public let queue: String
    public let state: JobState
    public let priority: Int
    public let args: JSONB
    public let attempt: Int
    public let maxAttempts: Int
    public let scheduledAt: Date
    public let attemptedAt: Date?
    public let attemptedBy: String?
    public let leaseExpiresAt: Date?
    public let progress: Double
    public let progressMessage: String?
    /// The stage a multi-stage job reported last (compress: `CompressStage`).
    public let progressStage: String?
    public let result: JSONB?
    public let errors: [JobError]
    public let uniqueKey: String?
    public let cancelRequestedAt: Date?
    public let createdAt: Date
    public let finalizedAt: Date?
    /// The job that enqueued this one (a sweep's searches), and how often this job waited without spending an attempt.
    public let parentId: Int64?
    public let snoozes: Int

    enum CodingKeys: String, CodingKey {
        case id, kind, queue, state, priority, args, attempt, maxAttempts = "max_attempts", scheduledAt = "scheduled_at"
        case attemptedAt = "attempted_at", attemptedBy = "attempted_by", leaseExpiresAt = "lease_expires_at", progress
        case progressMessage = "progress_message", progressStage = "progress_stage", result, errors, uniqueKey = "unique_key"
        case cancelRequestedAt = "cancel_requested_at", createdAt = "created_at", finalizedAt = "finalized_at"
        case parentId = "parent_id", snoozes
    }

    /// The column list every query that returns jobs selects, in this order.
    static let columns = """
        id, kind, queue, state, priority, args, attempt, max_attempts, scheduled_at, attempted_at, attempted_by,
        lease_expires_at, progress, progress_message, progress_stage, result, errors, unique_key, cancel_requested_at, created_at, finalized_at, parent_id, snoozes
        """

    init(row: Row) throws {
        id = try row.decode("id")
        kind = try row.decode("kind")
        queue = try row.decode("queue")
        state = try row.decode("state")
        priority = try row.decode("priority")
        args = try row.decode("args")
        attempt = try row.decode("attempt")
        maxAttempts = try row.decode("max_attempts")
        scheduledAt = try row.decode("scheduled_at")
        attemptedAt = try row.decode("attempted_at")
        attemptedBy = try row.decode("attempted_by")
        leaseExpiresAt = try row.decode("lease_expires_at")
        progress = try row.decode("progress")
        progressMessage = try row.decode("progress_message")
        progressStage = try row.decode("progress_stage")
        result = try row.decode("result")
        errors = try row.decode("errors", as: JSONB.self).decode([JobError].self)
        uniqueKey = try row.decode("unique_key")
        cancelRequestedAt = try row.decode("cancel_requested_at")
        createdAt = try row.decode("created_at")
        finalizedAt = try row.decode("finalized_at")
        parentId = try row.decode("parent_id")
        snoozes = try row.decode("snoozes")
    }
}

/// What to submit.
public struct NewJob: Sendable {
    public var kind: JobKind
    public var args: JSONB
    public var queue: String
    public var priority: Int
    public var scheduledAt: Date?
    public var uniqueKey: String?
    public var maxAttempts: Int?
    public var parentId: Int64?

    public init(kind: JobKind, args: JSONB = JSONB(text: "{}"), queue: String = "default", priority: Int = 2,
                scheduledAt: Date? = nil, uniqueKey: String? = nil, maxAttempts: Int? = nil, parentId: Int64? = nil) {
        self.kind = kind
        self.args = args
        self.queue = queue
        self.priority = priority
        self.scheduledAt = scheduledAt
        self.uniqueKey = uniqueKey
        self.maxAttempts = maxAttempts
        self.parentId = parentId
    }
}
