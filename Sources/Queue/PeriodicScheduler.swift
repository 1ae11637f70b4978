import Foundation
import Logging
import Store

/// One schedule: a cron expression and the job it enqueues.
public struct PeriodicJob: Sendable {
    public let name: String
    public let schedule: CronSchedule
    public let job: NewJob

    public init(name: String, schedule: CronSchedule, job: NewJob) {
        self.name = name
        self.schedule = schedule
        self.job = job
    }
}

/// Enqueues periodic jobs. Every worker runs one; `lop.periodic_runs` makes each fire time enqueue exactly
/// one job however many race for it.
public final class PeriodicScheduler: @unchecked Sendable {
    private let queue: JobQueue
    private let jobs: [PeriodicJob]
    private let catchUpSeconds: Double
    private let logger: Logger
    private let lock = NSLock()
    private var done: [String: Date] = [:]

    public init(queue: JobQueue, jobs: [PeriodicJob], catchUpSeconds: Double, logger: Logger = Logger(label: "lop.periodic")) {
        self.queue = queue
        self.jobs = jobs
        self.catchUpSeconds = catchUpSeconds
        self.logger = logger
    }

    /// Enqueues the latest due fire time of each schedule not yet enqueued; returns the jobs this call created.
    @discardableResult
    public func tick(now: Date = Date()) throws -> [Job] {
        var created: [Job] = []
        for periodic in jobs {
            guard let fire = periodic.schedule.latestFire(atOrBefore: now, within: catchUpSeconds) else { continue }
            lock.lock()
            let seen = done[periodic.name] == fire
            lock.unlock()
            if seen { continue }
            let job: Job? = try queue.pool.withTransaction { c in
                let claimed = try c.query("""
                    INSERT INTO lop.periodic_runs (name, fire_time) VALUES (\(periodic.name), \(fire))
                    ON CONFLICT DO NOTHING RETURNING name
                    """)
                guard !claimed.isEmpty else { return nil }
                var new = periodic.job
                new.uniqueKey = new.uniqueKey ?? "periodic:\(periodic.name):\(fire.postgresText ?? "")"
                let (job, _) = try queue.enqueue(new, on: c)
                try c.execute("UPDATE lop.periodic_runs SET job_id = \(job.id) WHERE name = \(periodic.name) AND fire_time = \(fire)")
                return job
            }
            lock.lock()
            done[periodic.name] = fire
            lock.unlock()
            if let job {
                logger.info("enqueued periodic job", metadata: ["name": "\(periodic.name)", "job": "\(job.id)", "fire_time": "\(fire)"])
                created.append(job)
            }
        }
        return created
    }
}
