import Foundation
import Jobs
import Logging
import Queue
import Store

/// `lop bench queue`: no-op jobs claimed and completed by lop's workers, beside the same claim and complete
/// statements driven by pgbench on the same server.
public enum QueueBenchmark {
    /// The queue the benchmark's jobs go to (and are deleted from afterwards).
    static let benchQueue = "lop-bench"

    /// Alternates lop and pgbench for `rounds` rounds (each on a freshly vacuumed table) and reports medians:
    /// this machine is noisy, and a ratio from the same round is steadier than either rate.
    public static func run(target: ConnectionTarget, jobs: Int, workers: Int, concurrency: Int, rounds: Int) throws -> BenchmarkTable {
        let pool = ConnectionPool(target: target, size: workers * (concurrency + 2) + 2)
        defer { _ = try? pool.withConnection { try $0.execute("DELETE FROM lop.jobs WHERE queue = \(benchQueue)") } }
        var lopRates: [Double] = [], pgbenchRates: [Double] = [], ratios: [Double] = []
        for _ in 0..<rounds {
            let lop = try lopRate(pool: pool, target: target, jobs: jobs, workers: workers, concurrency: concurrency)
            let reference = try pgbenchRate(pool: pool, target: target, jobs: jobs, clients: workers * concurrency)
            lopRates.append(lop)
            pgbenchRates.append(reference)
            ratios.append(lop / reference)
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        var table = BenchmarkTable(title: "Queue: \(jobs) no-op jobs, \(workers) workers × \(concurrency) slots, medians of \(rounds) rounds")
        table.add("pgbench, same claim + complete statements", median(pgbenchRates), unit: "jobs/s", reference: "—", ratio: 1)
        table.add("lop workers (claim, run, complete)", median(lopRates), unit: "jobs/s", reference: "pgbench, same round", ratio: median(ratios))
        table.add("  ratio per round", ratios.min()!, unit: "lowest", reference: "highest \(String(format: "%.2f", ratios.max()!))", ratio: nil)
        return table
    }

    /// Jobs per second through lop's workers, from insert to the last completion.
    static func lopRate(pool: ConnectionPool, target: ConnectionTarget, jobs: Int, workers: Int, concurrency: Int) throws -> Double {
        try fresh(pool)
        // lop's workers, in this process (one thread per slot, as lop-worker runs them).
        try insert(jobs, pool: pool)
        var logger = Logger(label: "lop.bench")
        logger.logLevel = .error
        let runners = (0..<workers).map { index -> Worker in
            var options = WorkerOptions(name: "bench-\(index)")
            options.queues = [benchQueue]
            options.concurrency = concurrency
            options.pollSeconds = 0.05
            options.rescueSeconds = 3600
            return Worker(queue: JobQueue(pool: pool), handlers: [NoopHandler()], options: options, listenTarget: target, logger: logger)
        }
        let start = Date()
        let group = DispatchGroup()
        for runner in runners {
            group.enter()
            Thread { runner.run(); group.leave() }.start()
        }
        while try completed(pool) < jobs { Thread.sleep(forTimeInterval: 0.01) }
        let lopSeconds = Date().timeIntervalSince(start)
        runners.forEach { $0.stop() }
        group.wait()
        return Double(jobs) / lopSeconds
    }

    /// Jobs per second through pgbench running the same claim (one job) and completion, one client per slot.
    static func pgbenchRate(pool: ConnectionPool, target: ConnectionTarget, jobs: Int, clients: Int) throws -> Double {
        try fresh(pool)
        try insert(jobs, pool: pool)
        let script = NSTemporaryDirectory() + "lop-bench-\(UUID().uuidString).sql"
        defer { try? FileManager.default.removeItem(atPath: script) }
        try """
            WITH picked AS (SELECT id FROM lop.jobs WHERE state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= now() AND queue = '\(benchQueue)' AND kind = 'noop' ORDER BY priority, scheduled_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE lop.jobs AS j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), attempted_by = 'pgbench', lease_expires_at = now() + interval '30 seconds', progress = 0, progress_message = NULL FROM picked WHERE j.id = picked.id RETURNING j.id AS job \\gset
            BEGIN;
            SELECT cancel_requested_at IS NOT NULL AS cancel FROM lop.jobs WHERE id = :job AND state = 'running' AND attempted_by = 'pgbench' FOR UPDATE;
            UPDATE lop.jobs SET state = 'completed', result = '{"ok": true}', progress = 1, finalized_at = now(), lease_expires_at = NULL WHERE id = :job AND state = 'running' AND attempted_by = 'pgbench';
            COMMIT;

            """.write(toFile: script, atomically: true, encoding: .utf8)
        let perClient = jobs / clients
        let conninfo = target.parameters.map { "\($0.0)='\($0.1.replacingOccurrences(of: "'", with: "\\'"))'" }.joined(separator: " ")
        let output = try runPgbench(["-n", "-M", "extended", "-f", script, "-c", "\(clients)", "-j", "\(min(clients, 4))", "-t", "\(perClient)", conninfo])
        guard let tps = output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") })
            .flatMap({ Double($0.dropFirst(6).split(separator: " ").first ?? "") }) else {
            throw StoreError.unexpected("could not read pgbench's rate from: \(output.suffix(400))")
        }
        return tps
    }

    /// Deletes the benchmark's jobs and vacuums, so that every run starts from the same table.
    private static func fresh(_ pool: ConnectionPool) throws {
        try pool.withConnection { c in
            try c.execute("DELETE FROM lop.jobs WHERE queue = \(benchQueue)")
            try c.executeScript(unsafe: "VACUUM ANALYZE lop.jobs")
        }
    }

    private static func insert(_ count: Int, pool: ConnectionPool) throws {
        try pool.withConnection { c in
            try c.execute("""
                INSERT INTO lop.jobs (kind, queue) SELECT 'noop', \(benchQueue) FROM generate_series(1, \(count))
                """)
        }
    }

    private static func completed(_ pool: ConnectionPool) throws -> Int {
        try pool.withConnection {
            try $0.query("SELECT count(*) AS n FROM lop.jobs WHERE queue = \(benchQueue) AND state = 'completed'").single().decode("n")
        }
    }

    /// Runs pgbench from PATH or PostgreSQL's bin directory and returns its output.
    private static func runPgbench(_ arguments: [String]) throws -> String {
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin/pgbench" } + ["/usr/bin/pgbench"]
        guard let pgbench = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw StoreError.unexpected("pgbench was not found (install postgresql)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: pgbench)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else { throw StoreError.unexpected("pgbench failed: \(text.suffix(600))") }
        return text
    }
}
