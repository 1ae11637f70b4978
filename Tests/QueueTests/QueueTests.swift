import Foundation
import Jobs
import Queue
import Store
import TestSupport
import Testing

/// Handlers used by the queue tests.
struct CountingHandler: JobHandler {
    static let kind = JobKind.noop
    /// Any object; `n`, when given, must be a number.
    struct Arguments: Decodable, Sendable { let n: Double? }
    struct Output: Encodable, Sendable { let ok: Bool }

    func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<Output> {
        let id = job.id
        return JobOutcome(Output(ok: true)) { c in
            // Written in the completion's transaction: exactly one row per completed job.
            try c.execute("INSERT INTO completions (job_id) VALUES (\(id))")
            return nil
        }
    }
}

struct FailingHandler: JobHandler {
    static let kind = JobKind.evaluate
    func run(_ arguments: IgnoredArguments, job: Job, context: JobContext) throws -> JobOutcome<NoopHandler.Output> {
        struct Broken: Error, CustomStringConvertible { let description: String }
        throw Broken(description: "attempt \(job.attempt) broke")
    }
}

/// A test database with the queue schema and a completions side table.
func queueDatabase() throws -> (JobQueue, ConnectionTarget) {
    let target = try TestDatabase.createMigrated()
    let pool = ConnectionPool(target: target, size: 8)
    try pool.withConnection { try $0.execute("CREATE TABLE completions (job_id bigint NOT NULL)") }
    return (JobQueue(pool: pool), target)
}

func count(_ queue: JobQueue, _ sql: SQL) throws -> Int {
    try queue.pool.withConnection { try $0.query(sql).single().decode(0, as: Int.self) }
}

@Suite struct QueueTests {
    @Test func plainSQLInsertWorksWithDefaultsAndNotifies() throws {
        let (queue, target) = try queueDatabase()
        let listener = try Connection(target)
        try listener.listen(JobQueue.jobsChannel)
        try queue.pool.withConnection { c in
            try c.execute("""
                INSERT INTO lop.jobs (kind, args) VALUES ('compress', '{"model": "tiny-llama", "budget": {"kind": "params", "value": 0.5}, "method": "predict"}')
                """)
        }
        let note = try listener.waitForNotification(timeout: 5)
        #expect(note?.channel == "lop_jobs")
        #expect(note?.payload == "default")
        let job = try #require(try queue.list().first)
        #expect(job.state == .available)
        #expect(job.queue == "default" && job.priority == 2 && job.attempt == 0 && job.maxAttempts == 5)
        #expect(job.errors.isEmpty && job.progress == 0 && job.finalizedAt == nil)
        // A future job starts scheduled.
        let later = try queue.enqueue(NewJob(kind: .noop, scheduledAt: Date().addingTimeInterval(3600))).job
        #expect(later.state == .scheduled)
    }

    @Test(arguments: [
        "INSERT INTO lop.jobs (kind) VALUES ('mine_bitcoin')",
        "INSERT INTO lop.jobs (kind, args) VALUES ('noop', '[1, 2]')",
        "INSERT INTO lop.jobs (kind, priority) VALUES ('noop', 9)",
        "INSERT INTO lop.jobs (kind, max_attempts) VALUES ('noop', 0)",
        "INSERT INTO lop.jobs (kind, queue) VALUES ('noop', 'Bad Queue!')",
        "INSERT INTO lop.jobs (kind, state) VALUES ('noop', 'running')",
        "INSERT INTO lop.jobs (kind, state) VALUES ('noop', 'completed')",
        "INSERT INTO lop.jobs (kind, progress) VALUES ('noop', 1.5)",
    ])
    func checkConstraintsRejectBadInserts(statement: String) throws {
        let (queue, _) = try queueDatabase()
        let error = #expect(throws: StoreError.self) { try queue.pool.withConnection { try $0.executeScript(unsafe: statement) } }
        guard case let .server(server)? = error else { Issue.record("expected a server error"); return }
        #expect(["23514", "22P02"].contains(server.sqlState), "\(server)")
    }

    @Test func claimFollowsPriorityThenScheduleAndRespectsScheduledTime() throws {
        let (queue, _) = try queueDatabase()
        let low = try queue.enqueue(NewJob(kind: .noop, priority: 4)).job
        let high = try queue.enqueue(NewJob(kind: .noop, priority: 1)).job
        let normalOld = try queue.enqueue(NewJob(kind: .noop, priority: 2, scheduledAt: Date().addingTimeInterval(-60))).job
        let normalNew = try queue.enqueue(NewJob(kind: .noop, priority: 2)).job
        let future = try queue.enqueue(NewJob(kind: .noop, priority: 1, scheduledAt: Date().addingTimeInterval(3600))).job
        let otherQueue = try queue.enqueue(NewJob(kind: .noop, queue: "gpu")).job
        let claimed = try queue.claim(worker: "w", queues: ["default"], kinds: [.noop], limit: 10, leaseSeconds: 30)
        #expect(claimed.map(\.id) == [high.id, normalOld.id, normalNew.id, low.id])
        #expect(claimed.allSatisfy { $0.state == .running && $0.attempt == 1 && $0.attemptedBy == "w" && $0.leaseExpiresAt != nil })
        #expect(try queue.get(future.id)?.state == .scheduled)
        #expect(try queue.get(otherQueue.id)?.state == .available)
        // Kinds filter: a worker never claims a kind it cannot run.
        #expect(try queue.claim(worker: "w", queues: ["gpu"], kinds: [.compress], limit: 10, leaseSeconds: 30).isEmpty)
    }

    @Test func uniqueKeysAllowOneLiveJob() throws {
        let (queue, _) = try queueDatabase()
        let first = try queue.enqueue(NewJob(kind: .noop, uniqueKey: "nightly-2026-11-24"))
        let second = try queue.enqueue(NewJob(kind: .noop, uniqueKey: "nightly-2026-11-24"))
        #expect(!first.duplicate && second.duplicate && second.job.id == first.job.id)
        // Once finalized, the key is free again.
        #expect(try queue.cancel(job: first.job.id) == .cancelled)
        #expect(try !queue.enqueue(NewJob(kind: .noop, uniqueKey: "nightly-2026-11-24")).duplicate)
    }

    @Test func manyJobsManyWorkersEachCompletesExactlyOnce() throws {
        let (queue, target) = try queueDatabase()
        let total = 300
        try queue.pool.withConnection { c in
            try c.execute("INSERT INTO lop.jobs (kind, args) SELECT 'noop', jsonb_build_object('n', g) FROM generate_series(1, \(total)) g")
        }
        let workers = (0..<4).map { Worker(queue: queue, handlers: [CountingHandler()], options: fastOptions("w\($0)", concurrency: 3), listenTarget: target) }
        try runWorkers(workers) { try count(queue, "SELECT count(*) FROM lop.jobs WHERE state = 'completed'") == total }
        #expect(try count(queue, "SELECT count(*) FROM lop.jobs WHERE state = 'completed'") == total)
        #expect(try count(queue, "SELECT count(*) FROM completions") == total)
        #expect(try count(queue, "SELECT count(DISTINCT job_id) FROM completions") == total)
        #expect(try count(queue, "SELECT count(DISTINCT attempted_by) FROM lop.jobs") >= 2)
    }

    @Test func failuresRetryWithBackoffThenDiscardWithHistoryAndRetryBringsBack() throws {
        let (queue, target) = try queueDatabase()
        let job = try queue.enqueue(NewJob(kind: .evaluate, maxAttempts: 3)).job
        let worker = Worker(queue: queue, handlers: [FailingHandler()], options: fastOptions("failing"), listenTarget: target)
        try runWorkers([worker]) { try queue.get(job.id)?.state == .discarded }
        let discarded = try #require(try queue.get(job.id))
        #expect(discarded.state == .discarded && discarded.attempt == 3 && discarded.finalizedAt != nil)
        #expect(discarded.errors.map(\.attempt) == [1, 2, 3])
        #expect(discarded.errors.map(\.error) == ["attempt 1 broke", "attempt 2 broke", "attempt 3 broke"])
        #expect(discarded.errors.allSatisfy { $0.worker == "failing" })
        let back = try queue.retry(job: job.id)
        #expect(back.state == .available && back.maxAttempts == 4 && back.finalizedAt == nil)
        #expect(throws: QueueError.self) { try queue.retry(job: job.id) }
        #expect(throws: QueueError.noSuchJob(999_999)) { try queue.retry(job: 999_999) }
    }

    @Test func backoffGrowsWithTheAttempt() throws {
        let (queue, _) = try queueDatabase()
        let policy = RetryPolicy(baseSeconds: 10, exponent: 2, capSeconds: 1000)
        var delays: [Double] = []
        let job = try queue.enqueue(NewJob(kind: .evaluate, maxAttempts: 4)).job
        for _ in 1...3 {
            try queue.pool.withConnection { try $0.execute("UPDATE lop.jobs SET scheduled_at = now() WHERE id = \(job.id)") }
            let claimed = try queue.claim(worker: "w", queues: ["default"], kinds: [.evaluate], limit: 1, leaseSeconds: 30)
            #expect(claimed.count == 1)
            guard case let .retryable(at) = try queue.fail(job: job.id, worker: "w", error: "no", retry: policy) else {
                Issue.record("expected retryable"); return
            }
            delays.append(at.timeIntervalSinceNow)
        }
        // 10·1², 10·2², 10·3² seconds, ±10 % jitter.
        #expect((1...3).map { policy.delay(afterAttempt: $0) } == [10, 40, 90])
        for (attempt, delay) in zip(1..., delays) {
            let expected = policy.delay(afterAttempt: attempt)
            #expect(abs(delay - expected) <= expected * 0.1 + 1, "SQL backoff after attempt \(attempt): \(delay) s")
        }
    }

    @Test func invalidArgsAreDiscardedAtOnceWithTheField() throws {
        let (queue, target) = try queueDatabase()
        let job = try queue.enqueue(NewJob(kind: .noop, args: JSONB(text: "{\"n\": \"seven\"}"))).job
        let worker = Worker(queue: queue, handlers: [CountingHandler()], options: fastOptions("validator"), listenTarget: target)
        try runWorkers([worker]) { try queue.get(job.id)?.state.isFinal == true }
        let done = try #require(try queue.get(job.id))
        #expect(done.state == .discarded && done.attempt == 1)
        #expect(done.errors.first?.error == "invalid args: 'n' must be a number")
    }

    @Test func cancelQueuedAndRunningJobs() throws {
        let (queue, target) = try queueDatabase()
        let queued = try queue.enqueue(NewJob(kind: .noop, scheduledAt: Date().addingTimeInterval(600))).job
        #expect(try queue.cancel(job: queued.id) == .cancelled)
        #expect(try queue.cancel(job: queued.id) == .alreadyFinal)
        #expect(throws: QueueError.self) { try queue.cancel(job: 424_242) }

        let long = try queue.enqueue(NewJob(kind: .sleep, args: JSONB(text: "{\"seconds\": 30}"))).job
        let worker = Worker(queue: queue, handlers: [SleepHandler()], options: fastOptions("sleeper"), listenTarget: target)
        var outcome: JobQueue.CancelOutcome? = nil
        try runWorkers([worker], timeout: 20) {
            if outcome == nil, try queue.get(long.id)?.state == .running { outcome = try queue.cancel(job: long.id) }
            return try queue.get(long.id)?.state.isFinal == true
        }
        #expect(outcome == .requested)
        let cancelled = try #require(try queue.get(long.id))
        #expect(cancelled.state == .cancelled && cancelled.cancelRequestedAt != nil && cancelled.result == nil)
        // A cancelled job never completes later, even if its handler tries.
        #expect(try queue.complete(job: long.id, worker: "sleeper", result: JSONB(text: "{}")) == .lost)
    }

    @Test func completionAfterACancelRequestIsRecordedAsCancelled() throws {
        let (queue, _) = try queueDatabase()
        let job = try queue.enqueue(NewJob(kind: .noop)).job
        _ = try queue.claim(worker: "w", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 30)
        #expect(try queue.cancel(job: job.id) == .requested)
        let wrote = LockedValue(false)
        #expect(try queue.complete(job: job.id, worker: "w", result: JSONB(text: "{}")) { _ in wrote.withLock { $0 = true }; return nil } == .cancelled)
        #expect(!wrote.withLock { $0 }, "side effects of a cancelled job must not be committed")
        #expect(try queue.get(job.id)?.state == .cancelled)
    }

    @Test func expiredLeasesAreRescuedWithTheLostAttemptRecorded() throws {
        let (queue, _) = try queueDatabase()
        let job = try queue.enqueue(NewJob(kind: .noop, maxAttempts: 2)).job
        _ = try queue.claim(worker: "ghost", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 0.2)
        #expect(try queue.rescue(retry: RetryPolicy(baseSeconds: 0)).isEmpty)
        Thread.sleep(forTimeInterval: 0.4)
        let rescued = try queue.rescue(retry: RetryPolicy(baseSeconds: 0))
        #expect(rescued.map(\.id) == [job.id] && rescued.first?.state == .retryable)
        let after = try #require(try queue.get(job.id))
        #expect(after.errors.first?.error.contains("worker ghost vanished") == true)
        // The ghost cannot finalize what it no longer holds.
        #expect(try queue.complete(job: job.id, worker: "ghost", result: JSONB(text: "{}")) == .lost)
        // Past max attempts, a rescued job is discarded.
        _ = try queue.claim(worker: "ghost", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 0.1)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try queue.rescue(retry: RetryPolicy(baseSeconds: 0)).first?.state == .discarded)
    }

    @Test func progressIsWrittenAndPruneDeletesOldFinalizedJobs() throws {
        let (queue, _) = try queueDatabase()
        let job = try queue.enqueue(NewJob(kind: .noop)).job
        _ = try queue.claim(worker: "w", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 30)
        #expect(try queue.progress(job: job.id, worker: "w", fraction: 0.25, message: "a quarter"))
        #expect(try !queue.progress(job: job.id, worker: "other", fraction: 0.5, message: nil))
        let running = try #require(try queue.get(job.id))
        #expect(running.progress == 0.25 && running.progressMessage == "a quarter")
        #expect(try queue.complete(job: job.id, worker: "w", result: JSONB(text: "{\"x\": 1}")) == .completed)
        for _ in 0..<5 { try queue.enqueue(NewJob(kind: .noop)) }
        try queue.pool.withConnection { try $0.execute("UPDATE lop.jobs SET finalized_at = now() - interval '2 days' WHERE id = \(job.id)") }
        #expect(try queue.pruneFinalized(olderThan: 86400, batchSize: 2) == 1)
        #expect(try queue.get(job.id) == nil)
        #expect(try count(queue, "SELECT count(*) FROM lop.jobs") == 5)
    }
}
