import Foundation
import Queue
import Store
import TestSupport
import Testing

/// Real `lop` and `lop-worker` processes against a real server: submission by CLI, kill -9, restarts.
@Suite(.serialized) struct WorkerProcessTests {
    var binaries: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path }

    /// Environment for fast leases and polling against `target`.
    func environment(_ target: ConnectionTarget) -> [String: String] {
        [
            "LOP_CONFIG": TestDatabase.repositoryRoot + "/Config/lop.yaml",
            "LOP_DATABASE_URL": target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " "),
            "LOP_QUEUE_LEASE_SECONDS": "2", "LOP_QUEUE_HEARTBEAT_SECONDS": "0.3", "LOP_QUEUE_RESCUE_SECONDS": "0.5",
            "LOP_QUEUE_POLL_SECONDS": "0.2", "LOP_QUEUE_PROGRESS_SECONDS": "0.1", "LOP_QUEUE_SHUTDOWN_GRACE_SECONDS": "5",
            "LOP_QUEUE_RETRY_BASE_SECONDS": "0.1", "LOP_QUEUE_RETRY_CAP_SECONDS": "0.5",
            "LOP_DATABASE_RECONNECT_MAX_ATTEMPTS": "100", "LOP_DATABASE_RECONNECT_MAX_DELAY_MS": "500",
            // No nightly train job may appear in a test that runs at 03:00 UTC.
            "LOP_TRAINING_SCHEDULE": "",
        ]
    }

    func lop(_ arguments: [String], _ env: [String: String]) throws -> (status: Int32, output: String) {
        try TestProcess.run([binaries + "/lop"] + arguments, environment: env, separateStandardError: true)
    }

    func worker(_ name: String, _ env: [String: String], concurrency: Int = 2) throws -> BackgroundProcess {
        try TestProcess.start([binaries + "/lop-worker", "--name", name, "--concurrency", "\(concurrency)"], environment: env)
    }

    @Test func cliSubmissionsRunOnWorkerProcessesAndStatusShowsThem() throws {
        let target = try TestDatabase.createMigrated()
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2))
        var ids: [Int64] = []
        for i in 0..<20 {
            let submitted = try lop(i % 2 == 0 ? ["submit", "noop"] : ["submit", "sleep", "--arg", "seconds=0.05", "--priority", "1"], env)
            #expect(submitted.status == 0, "\(submitted.output)")
            ids.append(Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
        }
        let bad = try TestProcess.run([binaries + "/lop", "submit", "sleep", "--arg", "seconds=lots"], environment: env)
        #expect(bad.status == 64)
        #expect(bad.output.contains("'seconds' must be a number"))
        let workers = [try worker("p1", env), try worker("p2", env)]
        #expect(try waitUntil { try queue.list(state: .completed, limit: 100).count == 20 })
        // Each ran once: one attempt, no error entries, completed by one of the two processes.
        let finished = try queue.list(limit: 100)
        #expect(finished.allSatisfy { $0.attempt == 1 && $0.errors.isEmpty && ["p1", "p2"].contains($0.attemptedBy ?? "") })
        let status = try lop(["status", "\(ids[1])"], env)
        #expect(status.status == 0 && status.output.contains("state:    completed") && status.output.contains("100%"))
        let watch = try lop(["watch", "\(ids[1])"], env)
        #expect(watch.status == 0 && watch.output.contains("completed"))
        let listed = try lop(["list", "--state", "completed", "--json"], env)
        #expect((try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [Any])?.count == 20)
        for w in workers { w.signal(SIGTERM) }
        for w in workers { #expect(w.wait(timeout: 20) == 0, "\(w.output)") }
        #expect(workers.allSatisfy { $0.output.contains("worker stopped") })
    }

    @Test func killedWorkersJobIsRescuedAndCompletedByAnother() throws {
        let target = try TestDatabase.createMigrated()
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2))
        let job = try queue.enqueue(NewJob(kind: .sleep, args: JSONB(text: "{\"seconds\": 1.5}"))).job
        let doomed = try worker("doomed", env)
        #expect(try waitUntil { try queue.get(job.id)?.state == .running })
        doomed.signal(SIGKILL)
        #expect(doomed.wait() == 128 + SIGKILL)
        let survivor = try worker("survivor", env)
        defer { survivor.signal(SIGKILL) }
        #expect(try waitUntil { try queue.get(job.id)?.state == .completed })
        let done = try #require(try queue.get(job.id))
        #expect(done.attempt == 2 && done.attemptedBy == "survivor")
        #expect(done.errors.count == 1)
        #expect(done.errors.first?.worker == "doomed")
        #expect(done.errors.first?.error.contains("worker doomed vanished") == true)
    }

    @Test func gracefulShutdownLetsRunningJobsFinish() throws {
        let target = try TestDatabase.createMigrated()
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2))
        let job = try queue.enqueue(NewJob(kind: .sleep, args: JSONB(text: "{\"seconds\": 1}"))).job
        let w = try worker("graceful", env)
        #expect(try waitUntil { try queue.get(job.id)?.state == .running })
        let later = try queue.enqueue(NewJob(kind: .noop, scheduledAt: Date().addingTimeInterval(1))).job
        w.signal(SIGTERM)
        #expect(w.wait(timeout: 30) == 0)
        #expect(try queue.get(job.id)?.state == .completed)
        // It stopped claiming: the job that became due after SIGTERM is left for others.
        #expect(try queue.get(later.id)?.attempt == 0)
    }

    @Test func workersSurviveADatabaseRestartAndLoseNothing() throws {
        let cluster = try TestCluster.start()
        defer { cluster.stop() }
        let admin = try Connection(cluster.target)
        try admin.executeScript(unsafe: "CREATE DATABASE lop_restart")
        let target = cluster.target.with("dbname", "lop_restart")
        try Migrator(migrations: try Migrator.load(directory: TestDatabase.repositoryRoot + "/SQL")).migrate(try Connection(target))
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2, reconnect: ReconnectPolicy(maxAttempts: 100, initialDelay: 0.05, maxDelay: 0.5)))
        try queue.pool.withConnection { try $0.execute("INSERT INTO lop.jobs (kind, args) SELECT 'sleep', '{\"seconds\": 0.2}' FROM generate_series(1, 30)") }
        let workers = [try worker("r1", env, concurrency: 3), try worker("r2", env, concurrency: 3)]
        defer { workers.forEach { $0.signal(SIGKILL) } }
        #expect(try waitUntil { try queue.list(state: .completed, limit: 100).count >= 5 })
        try cluster.restart()
        #expect(try waitUntil(timeout: 90) { try queue.list(state: .completed, limit: 100).count == 30 })
        let jobs = try queue.list(limit: 100)
        #expect(jobs.count == 30 && jobs.allSatisfy { $0.state == .completed })
    }
    // MARK: Search and sweep jobs on tiny-llama

    var tinyLlama: String { TestDatabase.repositoryRoot + "/Fixtures/tiny-llama" }

    func sampleCount(_ pool: ConnectionPool, job: Int64) throws -> (all: Int, distinct: Int) {
        try pool.withConnection { c in
            let row = try c.query("SELECT count(*) AS n, count(DISTINCT sizes) AS d FROM lop.samples WHERE job_id = \(job)").single()
            return (try row.decode("n"), try row.decode("d"))
        }
    }

    @Test func sweepOverFourBudgetsRunsAsFourSearchesOnTwoWorkers() throws {
        let target = try TestDatabase.createMigrated()
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2))
        let submitted = try lop(["submit", "sweep", "--arg", "model=\(tinyLlama)", "--arg", "budgets=[0.3, 0.4, 0.5, 0.6]", "--arg", "samples=8",
                                 "--arg", #"search={"simulations": 10}"#], env)
        #expect(submitted.status == 0, "\(submitted.output)")
        let sweep = try #require(Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        let workers = [try worker("s1", env), try worker("s2", env)]
        defer { workers.forEach { $0.signal(SIGKILL) } }
        #expect(try waitUntil(timeout: 240) { try queue.get(sweep)?.state.isFinal == true })
        let done = try #require(try queue.get(sweep))
        #expect(done.state == .completed && done.attempt == 1 && done.snoozes >= 1, "\(done.errors)")
        let children = try queue.children(of: sweep)
        #expect(children.count == 4 && children.allSatisfy { $0.kind == .search && $0.state == .completed && $0.parentId == sweep })
        for child in children {
            let result = try #require(try child.result?.object() as? [String: Any])
            let statistics = try #require(result["statistics"] as? [String: Any])
            let stored = try sampleCount(queue.pool, job: child.id)
            #expect(stored.all == statistics["evaluations"] as? Int && stored.all == stored.distinct && stored.all > 1)
        }
        let summary = try #require(try done.result?.object() as? [String: Any])
        #expect(summary["completed"] as? Int == 4 && summary["failed"] as? Int == 0)
        #expect((summary["searches"] as? [[String: Any]])?.compactMap { $0["budget"] as? String }.sorted() == ["0.3", "0.4", "0.5", "0.6"])
        let status = try lop(["status", "\(sweep)"], env)
        #expect(status.output.contains("children: 4 (4 completed)"), "\(status.output)")
        let listed = try lop(["samples", "list", "--model", tinyLlama], env)
        #expect(listed.status == 0 && listed.output.split(separator: "\n").count == 5, "\(listed.output)")
    }

    @Test func killedSearchResumesFromItsSamplesAndEndsLikeAnUninterruptedOne() throws {
        let target = try TestDatabase.createMigrated()
        let env = environment(target)
        let queue = JobQueue(pool: ConnectionPool(target: target, size: 2))
        let args = JSONB(text: #"{"model": "\#(tinyLlama)", "budget": 0.5, "samples": 32, "search": {"simulations": 80, "sample_batch": 2}}"#)
        let interrupted = try queue.enqueue(NewJob(kind: .search, args: args)).job
        let doomed = try worker("doomed", env, concurrency: 1)
        #expect(try waitUntil(timeout: 120) { try sampleCount(queue.pool, job: interrupted.id).all >= 6 })
        doomed.signal(SIGKILL)
        _ = doomed.wait()
        let before = try sampleCount(queue.pool, job: interrupted.id).all
        let survivor = try worker("survivor", env, concurrency: 1)
        defer { survivor.signal(SIGKILL) }
        #expect(try waitUntil(timeout: 180) { try queue.get(interrupted.id)?.state == .completed })
        let reference = try queue.enqueue(NewJob(kind: .search, args: args)).job
        #expect(try waitUntil(timeout: 180) { try queue.get(reference.id)?.state == .completed })
        let resumed = try #require(try queue.get(interrupted.id)?.result?.object() as? [String: Any])
        let whole = try #require(try queue.get(reference.id)?.result?.object() as? [String: Any])
        func best(_ r: [String: Any]) -> [Int]? { (r["best"] as? [String: Any])?["sizes"] as? [Int] }
        #expect(best(resumed) != nil && best(resumed) == best(whole))
        let (a, b) = (try sampleCount(queue.pool, job: interrupted.id), try sampleCount(queue.pool, job: reference.id))
        #expect(a.all == a.distinct && a.all == b.all)
        let statistics = try #require(resumed["statistics"] as? [String: Any])
        #expect((statistics["preloaded"] as? Int ?? 0) >= before && before >= 6)
        #expect(try queue.get(interrupted.id)?.attempt == 2)
    }
}
