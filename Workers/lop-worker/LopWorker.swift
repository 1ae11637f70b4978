import ArgumentParser
import Bootstrap
import Dispatch
import Foundation
import Jobs
import LopConfig
import LopCore
import Logging
import Queue
import Search
import Store
import Tensor

/// `lop-worker`: claims jobs from lop.jobs and runs them until SIGTERM or SIGINT.
@main
struct LopWorker: ParsableCommand {
    /// Makes sure BLAS runs a kernel fit for this CPU (may re-execute once), then parses the command line.
    static func main() {
        BLASKernel.ensureFit()
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "lop-worker",
        abstract: "Claim lop's jobs from PostgreSQL and run them.",
        discussion: """
            Settings come from Config/lop.yaml (or --config / LOP_CONFIG) and LOP_… variables; flags override them.
            SIGTERM or SIGINT: stop claiming, let running jobs finish within queue.shutdown_grace_seconds, then
            release the rest to other workers. Exit codes: 0 after a clean shutdown, 69 database unreachable,
            78 bad configuration.
            """)

    @Option(name: .long, help: "Configuration file.")
    var config: String?

    @Option(name: .long, help: "Comma-separated queues to take jobs from (default: queue.queues).")
    var queues: String?

    @Option(name: .long, help: "Jobs run at once (default: queue.concurrency).")
    var concurrency: Int?

    @Option(name: .long, help: "Comma-separated kinds to run (default: every kind this worker has a handler for).")
    var kinds: String?

    @Option(name: .long, help: "Name recorded in attempted_by (default: host-pid-random).")
    var name: String?

    func validate() throws {
        if let concurrency, !(1...256).contains(concurrency) { throw ValidationError("--concurrency must be between 1 and 256") }
        if let kinds {
            for name in kinds.split(separator: ",").map({ String($0).trimmingCharacters(in: .whitespaces) }) where JobKind(rawValue: name) == nil {
                throw ValidationError("--kinds: this worker has no handler for '\(name)' (it has: \(JobKind.list))")
            }
        }
        if let queues, queues.split(separator: ",").isEmpty { throw ValidationError("--queues needs at least one queue name") }
    }

    func run() throws {
        let settings = Executable.loadConfig(file: config, program: "lop-worker")
        do { _ = try SearchSettings(settings.search) } catch { Executable.fail("lop-worker", error) }
        BLAS.setThreads(settings.blas.threads)
        let logger = Logger(label: "lop.worker")
        let kernel = BLASKernel.report
        logger.info("BLAS kernel", metadata: ["core": "\(kernel.core)", "chosen_by": "\(kernel.chosenBy)", "library_core": "\(kernel.libraryCore)",
                                               "threads": "\(kernel.threads)", "note": "\(kernel.note)"])
        let q = settings.queue
        var options = WorkerOptions(config: q, name: name ?? WorkerOptions.defaultName())
        if let queues { options.queues = queues.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        if let concurrency { options.concurrency = concurrency }
        let wanted = kinds.map { Set($0.split(separator: ",").compactMap { JobKind(rawValue: $0.trimmingCharacters(in: .whitespaces)) }) }
        let handlers = JobHandlers.all(config: settings).filter { wanted?.contains($0.kind) ?? true }

        // Each slot, the claim loop and the heartbeat may hold a connection at once.
        let pool: ConnectionPool
        do { pool = try ConnectionPool(config: settings.database, minimumSize: options.concurrency + 2, logger: logger) } catch {
            Executable.fail("lop-worker", "\(error)", code: ExitStatus.configError)
        }
        let target = pool.target
        let queue = JobQueue(pool: pool)
        do { _ = try pool.withConnection { try $0.query("SELECT 1") } } catch {
            Executable.fail("lop-worker", "\(error)", code: ExitStatus.unavailable)
        }
        var periodic: [PeriodicJob] = []
        let allHandlers = JobHandlers.all(config: settings)
        for spec in q.periodic {
            let schedule: CronSchedule
            do { schedule = try CronSchedule(spec.cron) } catch {
                Executable.fail("lop-worker", "queue.periodic '\(spec.name)': \(error)", code: ExitStatus.configError)
            }
            // The kind was checked when the configuration was read; the args are checked here, as the job will be.
            guard let kind = JobKind(rawValue: spec.kind), let handler = allHandlers.first(where: { $0.kind == kind }) else {
                Executable.fail("lop-worker", "queue.periodic '\(spec.name)': no handler for '\(spec.kind)'", code: ExitStatus.configError)
            }
            do { _ = try handler.arguments(JSONB(text: spec.args)) } catch {
                Executable.fail("lop-worker", "queue.periodic '\(spec.name)'.args: \(error)", code: ExitStatus.configError)
            }
            let job = NewJob(kind: kind, args: JSONB(text: spec.args), queue: spec.queue, priority: spec.priority, maxAttempts: q.maxAttempts)
            periodic.append(PeriodicJob(name: spec.name, schedule: schedule, job: job))
        }
        // The nightly predictor re-training (training.schedule), unless queue.periodic already names one.
        if !settings.training.schedule.isEmpty && !periodic.contains(where: { $0.name == "nightly-train" }) {
            do {
                periodic.append(PeriodicJob(name: "nightly-train", schedule: try CronSchedule(settings.training.schedule),
                                            job: NewJob(kind: .train, maxAttempts: q.maxAttempts)))
            } catch {
                Executable.fail("lop-worker", "training.schedule: \(error)", code: ExitStatus.configError)
            }
        }
        let scheduler = PeriodicScheduler(queue: queue, jobs: periodic, catchUpSeconds: q.periodicCatchUpSeconds)
        var tick: (@Sendable () throws -> Void)? = nil
        if !periodic.isEmpty {
            tick = { _ = try scheduler.tick() }
        }
        let worker = Worker(queue: queue, handlers: handlers, options: options, listenTarget: target, logger: logger, tick: tick)

        let sources = Executable.onShutdownSignals(logger: logger) { worker.stop() }
        worker.run()
        sources.forEach { $0.cancel() }
    }
}
