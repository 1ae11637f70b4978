import Foundation
import Logging
import LopCore
import Store

/// The queue's operations on `lop.jobs`. Every transition names the state it comes from (and, for a running
/// job, the worker that holds it): zero rows affected means another actor won the race, which is reported as
/// such, never as success.
public struct JobQueue: Sendable {
    public let pool: ConnectionPool

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    // MARK: Submission

    /// Inserts a job; with a unique key that a live job already holds, returns that job and `duplicate: true`.
    @discardableResult
    public func enqueue(_ job: NewJob, on connection: Connection? = nil) throws -> (job: Job, duplicate: Bool) {
        let run = { (c: Connection) throws -> (Job, Bool) in
            let inserted = try c.query("""
                INSERT INTO lop.jobs (kind, args, queue, priority, scheduled_at, unique_key, max_attempts, parent_id)
                VALUES (\(job.kind), \(job.args), \(job.queue), \(Int16(clamping: job.priority)),
                        coalesce(\(job.scheduledAt), now()), \(job.uniqueKey), coalesce(\(job.maxAttempts), 5), \(job.parentId))
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state NOT IN ('completed', 'cancelled', 'discarded')
                DO NOTHING
                RETURNING \(fragment: SQL(unsafe: Job.columns))
                """)
            if let row = inserted.first { return (try Job(row: row), false) }
            let existing = try c.query("""
                SELECT \(fragment: SQL(unsafe: Job.columns)) FROM lop.jobs
                WHERE unique_key = \(job.uniqueKey) AND state NOT IN ('completed', 'cancelled', 'discarded')
                """)
            guard let row = existing.first else { throw StoreError.unexpected("unique key \(job.uniqueKey ?? "") conflicted but no live job holds it") }
            return (try Job(row: row), true)
        }
        if let connection { return try run(connection) }
        return try pool.withConnection(run)
    }

    // MARK: Claim and lease

    /// Claims up to `limit` runnable jobs for `worker` in one statement, highest priority and oldest first.
    public func claim(worker: String, queues: [String], kinds: [JobKind], limit: Int, leaseSeconds: Double) throws -> [Job] {
        let kinds = kinds.map(\.rawValue)
        guard limit > 0 else { return [] }
        return try pool.withConnection { c in
            try c.query("""
                WITH picked AS (
                    SELECT id FROM lop.jobs
                    WHERE state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= now()
                      AND queue = ANY(\(queues)) AND kind = ANY(\(kinds))
                    ORDER BY priority, scheduled_at, id
                    LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE lop.jobs AS j
                SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), attempted_by = \(worker),
                    lease_expires_at = now() + make_interval(secs => \(leaseSeconds)),
                    progress = CASE WHEN j.snoozes > 0 THEN j.progress ELSE 0 END,
                    progress_message = CASE WHEN j.snoozes > 0 THEN j.progress_message END,
                    progress_stage = CASE WHEN j.snoozes > 0 THEN j.progress_stage END
                FROM picked WHERE j.id = picked.id
                RETURNING j.*
                """).map { try Job(row: $0) }.sorted { ($0.priority, $0.scheduledAt, $0.id) < ($1.priority, $1.scheduledAt, $1.id) }
        }
    }

    /// Extends the leases of jobs `worker` still holds. Returns, for each of them, whether a cancel was asked;
    /// a job missing from the answer was taken from this worker (rescued) and must stop.
    public func heartbeat(worker: String, jobs: [Int64], leaseSeconds: Double) throws -> [Int64: Bool] {
        guard !jobs.isEmpty else { return [:] }
        let ids = jobs.map { Int($0) }
        return try pool.withConnection { c in
            var held: [Int64: Bool] = [:]
            for row in try c.query("""
                UPDATE lop.jobs SET lease_expires_at = now() + make_interval(secs => \(leaseSeconds))
                WHERE id = ANY(\(ids)) AND state = 'running' AND attempted_by = \(worker)
                RETURNING id, cancel_requested_at IS NOT NULL AS cancel
                """) {
                held[try row.decode("id")] = try row.decode("cancel", as: Bool.self)
            }
            return held
        }
    }

    /// Records progress of a running job held by `worker` (false if it is no longer held); a nil `stage` keeps the
    /// stage already recorded.
    @discardableResult
    public func progress(job: Int64, worker: String, fraction: Double, message: String?, stage: String? = nil) throws -> Bool {
        let clamped = Float(min(max(fraction.isFinite ? fraction : 0, 0), 1))
        let text = message.map { String($0.prefix(500)) }
        return try pool.withConnection { c in
            try c.execute("""
                UPDATE lop.jobs SET progress = \(clamped), progress_message = \(text), progress_stage = coalesce(\(stage), progress_stage)
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker)
                """) == 1
        }
    }

    // MARK: Outcomes

    /// How finalizing a running job turned out.
    public enum Finalization: Sendable, Equatable {
        case completed
        case retryable(at: Date)
        case discarded
        case cancelled
        /// The job waits until the given time without spending an attempt (a sweep waiting for its children).
        case snoozed(until: Date)
        /// The worker no longer held the job (its lease expired and it was rescued): nothing was written.
        case lost
    }

    /// Completes a running job in one transaction with `finalize` (side effects such as a completion count or a
    /// model registration). A job whose cancel was asked is recorded as cancelled and `finalize` does not run.
    @discardableResult
    public func complete(job: Int64, worker: String, result: JSONB, finalize: ((Connection) throws -> JSONB?)? = nil) throws -> Finalization {
        try pool.withTransaction { c in
            let held = try c.query("""
                SELECT cancel_requested_at IS NOT NULL AS cancel FROM lop.jobs
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker) FOR UPDATE
                """)
            guard let row = held.first else { return .lost }
            if try row.decode("cancel", as: Bool.self) {
                try finalizeCancelled(job: job, worker: worker, on: c)
                return .cancelled
            }
            let stored = try finalize?(c) ?? result
            try c.execute("""
                UPDATE lop.jobs SET state = 'completed', result = \(stored), progress = 1, finalized_at = now(), lease_expires_at = NULL
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker)
                """)
            return .completed
        }
    }

    /// Records a failed attempt: retryable after the policy's backoff, or discarded after the last attempt
    /// (immediately with `discard`, for arguments that can never work). A cancel asked meanwhile wins.
    @discardableResult
    public func fail(job: Int64, worker: String, error: String, retry: RetryPolicy, discard: Bool = false) throws -> Finalization {
        let message = String(error.prefix(2000))
        return try pool.withConnection { c in
            let rows = try c.query("""
                UPDATE lop.jobs SET
                    state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'::lop.job_state
                                 WHEN \(discard) OR attempt >= max_attempts THEN 'discarded'::lop.job_state
                                 ELSE 'retryable'::lop.job_state END,
                    scheduled_at = now() + make_interval(secs => least(\(retry.capSeconds),
                                   \(retry.baseSeconds) * power(attempt, \(retry.exponent))) * (0.9 + random() * 0.2)),
                    finalized_at = CASE WHEN cancel_requested_at IS NOT NULL OR \(discard) OR attempt >= max_attempts THEN now() END,
                    errors = errors || jsonb_build_array(jsonb_build_object(
                        'attempt', attempt, 'at', now(), 'error', \(message)::text, 'worker', \(worker)::text)),
                    lease_expires_at = NULL
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker)
                RETURNING state, scheduled_at
                """)
            guard let row = rows.first else { return .lost }
            switch try row.decode("state", as: JobState.self) {
            case .cancelled: return .cancelled
            case .discarded: return .discarded
            default: return .retryable(at: try row.decode("scheduled_at"))
            }
        }
    }

    /// Marks a running job cancelled after its handler stopped on request.
    @discardableResult
    public func acknowledgeCancel(job: Int64, worker: String) throws -> Finalization {
        try pool.withConnection { c in
            try finalizeCancelled(job: job, worker: worker, on: c) ? .cancelled : .lost
        }
    }

    @discardableResult
    private func finalizeCancelled(job: Int64, worker: String, on c: Connection) throws -> Bool {
        try c.execute("""
            UPDATE lop.jobs SET state = 'cancelled', finalized_at = now(), lease_expires_at = NULL
            WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker)
            """) == 1
    }

    /// Gives a running job back (worker shutting down): claimable again at once, the attempt not counted.
    @discardableResult
    public func release(job: Int64, worker: String, reason: String) throws -> Bool {
        try pool.withConnection { c in
            try c.execute("""
                UPDATE lop.jobs SET state = 'available', attempt = attempt - 1, scheduled_at = now(), lease_expires_at = NULL,
                    errors = errors || jsonb_build_array(jsonb_build_object(
                        'attempt', attempt, 'at', now(), 'error', \(reason)::text, 'worker', \(worker)::text))
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker)
                """) == 1
        }
    }

    /// Puts a running job back to wait `seconds` without spending its attempt (it runs again then, or as soon as
    /// one of its children finishes), keeping its progress.
    public func snooze(job: Int64, worker: String, seconds: Double, progress: Double, message: String?) throws -> Finalization {
        let clamped = Float(min(max(progress.isFinite ? progress : 0, 0), 1))
        return try pool.withConnection { c in
            let rows = try c.query("""
                UPDATE lop.jobs SET state = 'scheduled', attempt = attempt - 1, snoozes = snoozes + 1, lease_expires_at = NULL,
                    scheduled_at = now() + make_interval(secs => \(max(seconds, 0))), progress = \(clamped),
                    progress_message = \(message.map { String($0.prefix(500)) })
                WHERE id = \(job) AND state = 'running' AND attempted_by = \(worker) AND cancel_requested_at IS NULL
                RETURNING scheduled_at
                """)
            guard let row = rows.first else {
                // Cancelled meanwhile (the cancel wins) or taken away.
                return try finalizeCancelled(job: job, worker: worker, on: c) ? .cancelled : .lost
            }
            return .snoozed(until: try row.decode("scheduled_at"))
        }
    }

    // MARK: Control

    public enum CancelOutcome: String, Sendable, Equatable {
        /// It was queued and is now cancelled.
        case cancelled
        /// It is running; its worker was asked to stop (it becomes cancelled when the worker acknowledges).
        case requested
        /// It was already completed, cancelled or discarded.
        case alreadyFinal = "already_final"
    }

    /// Cancels a queued job at once, or asks a running one to stop (through NOTIFY and the next heartbeat).
    public func cancel(job: Int64) throws -> CancelOutcome {
        try pool.withTransaction { c in try cancel(job, on: c) }
    }

    /// Cancels a job and, first, every live job it enqueued (a sweep's searches).
    private func cancel(_ job: Int64, on c: Connection) throws -> CancelOutcome {
        for child in try c.query("""
            SELECT id FROM lop.jobs WHERE parent_id = \(job) AND state IN ('available', 'scheduled', 'retryable', 'running')
            """) {
            _ = try cancel(try child.decode("id", as: Int64.self), on: c)
        }
        let rows = try c.query("""
            UPDATE lop.jobs SET
                state = CASE WHEN state = 'running' THEN state ELSE 'cancelled'::lop.job_state END,
                finalized_at = CASE WHEN state = 'running' THEN NULL ELSE now() END,
                cancel_requested_at = coalesce(cancel_requested_at, now())
            WHERE id = \(job) AND state IN ('available', 'scheduled', 'retryable', 'running')
            RETURNING state
            """)
        guard let row = rows.first else {
            guard try c.query("SELECT 1 FROM lop.jobs WHERE id = \(job)").first != nil else { throw QueueError.noSuchJob(job) }
            return .alreadyFinal
        }
        if try row.decode("state", as: JobState.self) == .running {
            try c.notify(Self.cancelChannel, payload: String(job))
            return .requested
        }
        return .cancelled
    }

    /// The jobs `parent` enqueued (a sweep's searches), oldest first.
    public func children(of parent: Int64) throws -> [Job] {
        try pool.withConnection { c in
            try c.query("SELECT \(fragment: SQL(unsafe: Job.columns)) FROM lop.jobs WHERE parent_id = \(parent) ORDER BY id").map { try Job(row: $0) }
        }
    }

    /// Puts a discarded or cancelled job back in the queue, allowing it one more attempt.
    public func retry(job: Int64) throws -> Job {
        try pool.withConnection { c in
            let rows = try c.query("""
                UPDATE lop.jobs SET state = 'available', scheduled_at = now(), finalized_at = NULL, cancel_requested_at = NULL,
                    result = NULL, progress = 0, progress_message = NULL, progress_stage = NULL, max_attempts = greatest(max_attempts, attempt + 1)
                WHERE id = \(job) AND state IN ('discarded', 'cancelled')
                RETURNING \(fragment: SQL(unsafe: Job.columns))
                """)
            guard let row = rows.first else {
                guard let existing = try get(job, on: c) else { throw QueueError.noSuchJob(job) }
                throw QueueError.wrongState(job, existing.state, expected: "discarded or cancelled")
            }
            return try Job(row: row)
        }
    }

    /// Returns jobs whose lease expired (their worker vanished) to the queue, or discards them after their last
    /// attempt, with an error entry that says so. Safe to run on every worker at once.
    public func rescue(retry: RetryPolicy, limit: Int = 1000) throws -> [(id: Int64, state: JobState)] {
        try pool.withConnection { c in
            try c.query("""
                WITH expired AS (
                    SELECT id FROM lop.jobs WHERE state = 'running' AND lease_expires_at < now()
                    ORDER BY lease_expires_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
                )
                UPDATE lop.jobs AS j SET
                    state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'::lop.job_state
                                 WHEN j.attempt >= j.max_attempts THEN 'discarded'::lop.job_state
                                 ELSE 'retryable'::lop.job_state END,
                    scheduled_at = now() + make_interval(secs => least(\(retry.capSeconds),
                                   \(retry.baseSeconds) * power(j.attempt, \(retry.exponent))) * (0.9 + random() * 0.2)),
                    finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempt >= j.max_attempts THEN now() END,
                    errors = j.errors || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempt, 'at', now(), 'worker', j.attempted_by,
                        'error', 'worker ' || j.attempted_by || ' vanished: its lease expired at ' || j.lease_expires_at)),
                    lease_expires_at = NULL
                FROM expired WHERE j.id = expired.id AND j.state = 'running'
                RETURNING j.id, j.state
                """).map { (try $0.decode("id"), try $0.decode("state")) }
        }
    }

    /// Deletes jobs finalized more than `olderThan` seconds ago, in batches; returns how many.
    public func pruneFinalized(olderThan seconds: Double, batchSize: Int = 1000) throws -> Int {
        var total = 0
        while true {
            let deleted = try pool.withConnection { c in
                try c.execute("""
                    WITH doomed AS (
                        SELECT id FROM lop.jobs WHERE finalized_at < now() - make_interval(secs => \(seconds))
                        ORDER BY finalized_at LIMIT \(batchSize) FOR UPDATE SKIP LOCKED
                    )
                    DELETE FROM lop.jobs AS j USING doomed WHERE j.id = doomed.id
                    """)
            }
            total += deleted
            if deleted < batchSize { return total }
        }
    }

    // MARK: Reading

    public func get(_ id: Int64, on connection: Connection? = nil) throws -> Job? {
        let run = { (c: Connection) throws -> Job? in
            try c.query("SELECT \(fragment: SQL(unsafe: Job.columns)) FROM lop.jobs WHERE id = \(id)").first.map { try Job(row: $0) }
        }
        if let connection { return try run(connection) }
        return try pool.withConnection(run)
    }

    /// Newest first, optionally filtered by state, kind and queue.
    public func list(state: JobState? = nil, kind: JobKind? = nil, queue: String? = nil, limit: Int = 50) throws -> [Job] {
        let kind = kind?.rawValue
        return try pool.withConnection { c in
            try c.query("""
                SELECT \(fragment: SQL(unsafe: Job.columns)) FROM lop.jobs
                WHERE (\(state?.rawValue)::lop.job_state IS NULL OR state = \(state?.rawValue)::lop.job_state)
                  AND (\(kind)::text IS NULL OR kind = \(kind)) AND (\(queue)::text IS NULL OR queue = \(queue))
                ORDER BY id DESC LIMIT \(limit)
                """).map { try Job(row: $0) }
        }
    }

    /// NOTIFY channel on which running jobs are told to stop (payload: the job id).
    public static let cancelChannel = "lop_job_cancel"
    /// NOTIFY channel on which new jobs are announced (payload: the queue).
    public static let jobsChannel = "lop_jobs"
}

public enum QueueError: Error, CustomStringConvertible, Equatable {
    case noSuchJob(Int64)
    case wrongState(Int64, JobState, expected: String)

    public var description: String {
        switch self {
        case let .noSuchJob(id): "there is no job \(id)"
        case let .wrongState(id, state, expected): "job \(id) is \(state.rawValue), not \(expected)"
        }
    }
}

extension QueueError: LopError {
    public var exitCode: Int32 { ExitStatus.failure }
}
