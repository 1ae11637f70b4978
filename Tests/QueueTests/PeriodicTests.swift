import Foundation
import Queue
import Store
import TestSupport
import Testing

@Suite struct CronTests {
    /// 2026-11-24 is a Tuesday.
    func utc(_ text: String) -> Date {
        let f = ISO8601DateFormatter()
        return f.date(from: text)!
    }

    @Test func fieldsMatchAsCronDoes() throws {
        let nightly = try CronSchedule("0 3 * * *")
        #expect(nightly.matches(utc("2026-11-24T03:00:00Z")))
        #expect(nightly.matches(utc("2026-11-24T03:00:59Z")))
        #expect(!nightly.matches(utc("2026-11-24T03:01:00Z")))
        let everyQuarter = try CronSchedule("*/15 9-17 * * 1-5")
        #expect(everyQuarter.matches(utc("2026-11-24T09:45:00Z")))
        #expect(!everyQuarter.matches(utc("2026-11-24T09:46:00Z")))
        #expect(!everyQuarter.matches(utc("2026-11-29T10:00:00Z")), "Sunday")
        let sundays = try CronSchedule("30 6 * * 0,7")
        #expect(sundays.matches(utc("2026-11-29T06:30:00Z")))
        // Both day fields restricted: either matches.
        let either = try CronSchedule("0 0 1 * 2")
        #expect(either.matches(utc("2026-12-01T00:00:00Z")) && either.matches(utc("2026-11-24T00:00:00Z")))
        #expect(!either.matches(utc("2026-11-25T00:00:00Z")))
        #expect(try CronSchedule("0 3 * * *").latestFire(atOrBefore: utc("2026-11-24T03:20:10Z"), within: 3600) == utc("2026-11-24T03:00:00Z"))
        #expect(try CronSchedule("0 3 * * *").latestFire(atOrBefore: utc("2026-11-24T05:00:00Z"), within: 3600) == nil)
    }

    @Test(arguments: ["0 3 * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *", "5-1 * * * *", "a * * * *", "* * * 13 *"])
    func badExpressionsAreRejected(expression: String) {
        #expect(throws: CronError.self) { try CronSchedule(expression) }
    }
}

@Suite struct PeriodicTests {
    @Test func eachFireTimeIsEnqueuedOnceWithThreeRacingSchedulers() throws {
        let (queue, _) = try queueDatabase()
        let spec = PeriodicJob(name: "every-minute", schedule: try CronSchedule("* * * * *"), job: NewJob(kind: .noop))
        let schedulers = (0..<3).map { _ in PeriodicScheduler(queue: queue, jobs: [spec], catchUpSeconds: 120) }
        let now = Date()
        let created = LockedValue(0)
        let failures = LockedValue<[String]>([])
        let group = DispatchGroup()
        for round in 0..<2 {
            for scheduler in schedulers {
                group.enter()
                Thread {
                    defer { group.leave() }
                    do {
                        let made = try scheduler.tick(now: now.addingTimeInterval(Double(round) * 60))
                        created.withLock { $0 += made.count }
                    } catch { failures.withLock { $0.append("\(error)") } }
                }.start()
            }
            group.wait()
        }
        #expect(failures.withLock { $0 } == [])
        #expect(created.withLock { $0 } == 2)
        #expect(try count(queue, "SELECT count(*) FROM lop.jobs") == 2)
        #expect(try count(queue, "SELECT count(*) FROM lop.periodic_runs WHERE job_id IS NOT NULL") == 2)
        // Completing a period's job does not let it be enqueued again.
        try queue.pool.withConnection { try $0.execute("UPDATE lop.jobs SET state = 'cancelled', finalized_at = now()") }
        let fresh = PeriodicScheduler(queue: queue, jobs: [spec], catchUpSeconds: 120)
        #expect(try fresh.tick(now: now.addingTimeInterval(60)).isEmpty)
    }
}
