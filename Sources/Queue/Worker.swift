import Foundation
import Logging
import Store

/// How a worker runs.
public struct WorkerOptions: Sendable, Equatable {
    /// Name recorded in `attempted_by`; unique per process (host, pid and a random suffix by default).
    public var name: String
    public var queues: [String]
    /// Jobs run at once, each on its own thread.
    public var concurrency: Int
    /// A running job's lease; heartbeats extend it every `heartbeatSeconds`.
    public var leaseSeconds: Double
    public var heartbeatSeconds: Double
    /// Longest wait for a NOTIFY before polling the table anyway.
    public var pollSeconds: Double
    /// How often this worker looks for jobs whose worker vanished.
    public var rescueSeconds: Double
    /// Minimum time between progress writes of one job.
    public var progressSeconds: Double
    /// On shutdown, how long running jobs may finish before they are released.
    public var shutdownGraceSeconds: Double
    public var retry: RetryPolicy
    public var retryByKind: [JobKind: RetryPolicy]

    /// The defaults are `queue.*`'s in Config/lop.yaml (a test keeps them equal).
    public init(name: String = WorkerOptions.defaultName(), queues: [String] = ["default"], concurrency: Int = 2, leaseSeconds: Double = 30,
                heartbeatSeconds: Double = 5, pollSeconds: Double = 1, rescueSeconds: Double = 10, progressSeconds: Double = 1,
                shutdownGraceSeconds: Double = 30, retry: RetryPolicy = RetryPolicy(), retryByKind: [JobKind: RetryPolicy] = [:]) {
        (self.name, self.queues, self.concurrency, self.leaseSeconds, self.heartbeatSeconds) = (name, queues, concurrency, leaseSeconds, heartbeatSeconds)
        (self.pollSeconds, self.rescueSeconds, self.progressSeconds, self.shutdownGraceSeconds) = (pollSeconds, rescueSeconds, progressSeconds, shutdownGraceSeconds)
        (self.retry, self.retryByKind) = (retry, retryByKind)
    }

    public static func defaultName() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UUID().uuidString.prefix(6).lowercased())"
    }

    func retryPolicy(for kind: JobKind) -> RetryPolicy { retryByKind[kind] ?? retry }
}

/// Claims jobs of the kinds it has handlers for and runs them; rescues jobs of vanished workers; runs
/// periodic-job scheduling through `tick`. `run()` blocks until `stop()` and the shutdown grace.
public final class Worker: @unchecked Sendable {
    public let options: WorkerOptions
    private let queue: JobQueue
    private let handlers: [JobKind: any JobHandler]
    private let listenTarget: ConnectionTarget
    private let logger: Logger
    /// Called once per loop turn (periodic-job scheduling); errors are logged.
    private let tick: (@Sendable () throws -> Void)?

    // Guarded by `lock`.
    private let lock = NSCondition()
    private var running: [Int64: JobContext] = [:]
    /// Slot threads alive; each runs jobs back to back while it can claim one.
    private var busySlots = 0
    private var stopping = false

    public init(queue: JobQueue, handlers: [any JobHandler], options: WorkerOptions, listenTarget: ConnectionTarget,
                logger: Logger = Logger(label: "lop.worker"), tick: (@Sendable () throws -> Void)? = nil) {
        self.queue = queue
        self.handlers = Dictionary(handlers.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })
        self.options = options
        self.listenTarget = listenTarget
        var logger = logger
        logger[metadataKey: "worker"] = "\(options.name)"
        self.logger = logger
        self.tick = tick
    }

    /// Asks the worker to stop claiming and shut down (safe from any thread or a signal handler's queue).
    public func stop() {
        lock.lock()
        stopping = true
        lock.broadcast()
        lock.unlock()
    }

    private var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    /// Jobs running now.
    public var runningCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return running.count
    }

    /// The claim loop. Returns after `stop()` once running jobs have finished or been released.
    public func run() {
        logger.info("worker started", metadata: ["queues": "\(options.queues.joined(separator: ","))",
                                                 "kinds": "\(handlers.keys.map(\.rawValue).sorted().joined(separator: ","))",
                                                 "concurrency": "\(options.concurrency)"])
        let heartbeat = Thread { [self] in heartbeatLoop() }
        heartbeat.start()
        var listener: Connection? = nil
        var lastRescue = Date.distantPast
        while !isStopping {
            do {
                if listener == nil {
                    let connection = try Connection(listenTarget, reconnect: queue.pool.reconnectPolicy, logger: logger)
                    try connection.listen(JobQueue.jobsChannel)
                    try connection.listen(JobQueue.cancelChannel)
                    listener = connection
                }
                if Date().timeIntervalSince(lastRescue) >= options.rescueSeconds {
                    lastRescue = Date()
                    for (id, state) in try queue.rescue(retry: options.retry) {
                        logger.warning("rescued a job whose worker vanished", metadata: ["job": "\(id)", "state": "\(state.rawValue)"])
                    }
                }
                if let tick { try tick() }
                let free = options.concurrency - busySlotCount
                var claimed = 0
                if free > 0 {
                    let jobs = try queue.claim(worker: options.name, queues: options.queues, kinds: Array(handlers.keys),
                                               limit: free, leaseSeconds: options.leaseSeconds)
                    claimed = jobs.count
                    for job in jobs { start(job) }
                }
                // A full batch means there may be more: claim again at once once a slot frees; otherwise wait.
                if claimed > 0 && claimed == free { waitForFreeSlot() } else { try listen(listener!, seconds: options.pollSeconds) }
            } catch {
                logger.error("worker loop error; retrying", metadata: ["error": "\(error)"])
                if let storeError = error as? StoreError, storeError.isConnectionLoss { listener = nil }
                Thread.sleep(forTimeInterval: min(options.pollSeconds, 1))
            }
        }
        shutDown()
        heartbeat.cancel()
        logger.info("worker stopped")
    }

    /// Waits for a NOTIFY (new job or cancel) or the poll interval.
    private func listen(_ listener: Connection, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !isStopping {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return }
            guard let note = try listener.waitForNotification(timeout: min(remaining, 0.25)) else { continue }
            if note.channel == JobQueue.cancelChannel, let id = Int64(note.payload) {
                context(of: id)?.requestStop(.cancelRequested)
                continue
            }
            if options.queues.contains(note.payload) && busySlotCount < options.concurrency { return }
        }
    }

    private func waitForFreeSlot() {
        lock.lock()
        while busySlots >= options.concurrency && !stopping {
            _ = lock.wait(until: Date().addingTimeInterval(options.pollSeconds))
        }
        lock.unlock()
    }

    private var busySlotCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return busySlots
    }

    private func context(of id: Int64) -> JobContext? {
        lock.lock()
        defer { lock.unlock() }
        return running[id]
    }

    /// Starts a slot thread for `job`. The slot then claims its next job itself, so a busy worker runs
    /// claim → run → complete back to back without waking the claim loop or starting a thread per job.
    private func start(_ job: Job) {
        lock.lock()
        busySlots += 1
        lock.unlock()
        let thread = Thread { [self] in
            var next: Job? = job
            while let current = next {
                let context = JobContext(job: current, queue: queue, worker: options.name, progressInterval: options.progressSeconds)
                lock.lock()
                running[current.id] = context
                lock.unlock()
                execute(current, context: context)
                lock.lock()
                running[current.id] = nil
                lock.unlock()
                next = isStopping ? nil : (try? queue.claim(worker: options.name, queues: options.queues, kinds: Array(handlers.keys),
                                                           limit: 1, leaseSeconds: options.leaseSeconds))?.first
            }
            lock.lock()
            busySlots -= 1
            lock.broadcast()
            lock.unlock()
        }
        thread.name = "lop-slot"
        thread.start()
    }

    /// Runs one job and writes its outcome. Nothing a handler throws escapes: every end becomes a row update.
    private func execute(_ job: Job, context: JobContext) {
        let started = Date()
        var log = logger
        log[metadataKey: "job"] = "\(job.id)"
        log[metadataKey: "kind"] = "\(job.kind)"
        log.info("job started", metadata: ["attempt": "\(job.attempt)/\(job.maxAttempts)"])
        let outcome: JobQueue.Finalization
        let policy = options.retryPolicy(for: job.kind)
        guard let handler = handlers[job.kind] else {
            // Unreachable through claim (it filters by kind); recorded rather than left to a lease expiry.
            _ = writeOutcome(log) { try queue.fail(job: job.id, worker: options.name, error: "this worker has no handler for '\(job.kind)'", retry: policy) }
            return
        }
        do {
            let result = try handler.execute(job, context: context)
            try context.checkCancelled()
            outcome = writeOutcome(log) { try queue.complete(job: job.id, worker: options.name, result: result.result, finalize: result.finalize) }
        } catch let error as ArgumentError {
            outcome = writeOutcome(log) { try queue.fail(job: job.id, worker: options.name, error: error.description, retry: policy, discard: true) }
        } catch let snooze as JobSnoozed {
            outcome = writeOutcome(log) {
                try queue.snooze(job: job.id, worker: options.name, seconds: snooze.seconds, progress: snooze.progress, message: snooze.message)
            }
        } catch is JobStopped {
            switch context.reasonToStop {
            case .cancelRequested?: outcome = writeOutcome(log) { try queue.acknowledgeCancel(job: job.id, worker: options.name) }
            case .shuttingDown?:
                let released = writeOutcome(log) {
                    try queue.release(job: job.id, worker: options.name, reason: "released by worker \(options.name) shutting down") ? .retryable(at: Date()) : .lost
                }
                outcome = released
            default: outcome = .lost
            }
        } catch {
            outcome = writeOutcome(log) { try queue.fail(job: job.id, worker: options.name, error: "\(error)", retry: policy) }
        }
        log.info("job finished", metadata: ["outcome": "\(outcome)", "seconds": "\(String(format: "%.3f", Date().timeIntervalSince(started)))"])
    }

    /// Writes an outcome, retrying while the database is unreachable (a restart must not lose a finished job).
    private func writeOutcome(_ log: Logger, _ write: () throws -> JobQueue.Finalization) -> JobQueue.Finalization {
        var delay = 0.1
        for attempt in 1...30 {
            do { return try write() } catch {
                log.warning("could not record the job's outcome; retrying", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 2)
            }
        }
        log.error("gave up recording the job's outcome; its lease will expire and it will be rescued")
        return .lost
    }

    /// Extends leases of running jobs and tells their handlers about cancels and lost jobs.
    private func heartbeatLoop() {
        while !Thread.current.isCancelled {
            Thread.sleep(forTimeInterval: options.heartbeatSeconds)
            lock.lock()
            let contexts = running
            lock.unlock()
            guard !contexts.isEmpty else { continue }
            do {
                let held = try queue.heartbeat(worker: options.name, jobs: Array(contexts.keys), leaseSeconds: options.leaseSeconds)
                for (id, context) in contexts {
                    if let cancel = held[id] {
                        if cancel { context.requestStop(.cancelRequested) }
                    } else if self.context(of: id) != nil {
                        logger.warning("job was taken from this worker (lease expired)", metadata: ["job": "\(id)"])
                        context.requestStop(.lost)
                    }
                }
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Lets running jobs finish within the grace period, then asks them to stop and releases what is left.
    private func shutDown() {
        let deadline = Date().addingTimeInterval(options.shutdownGraceSeconds)
        lock.lock()
        if !running.isEmpty { logger.info("waiting for running jobs", metadata: ["jobs": "\(running.count)"]) }
        while !running.isEmpty && lock.wait(until: deadline) {}
        let left = running
        lock.unlock()
        guard !left.isEmpty else { return }
        for context in left.values { context.requestStop(.shuttingDown) }
        // Handlers that check for cancellation release their job themselves; give them a moment.
        lock.lock()
        let settle = Date().addingTimeInterval(2)
        while !running.isEmpty && lock.wait(until: settle) {}
        let stuck = running
        lock.unlock()
        for id in stuck.keys {
            let released = (try? queue.release(job: id, worker: options.name, reason: "released by worker \(options.name) at shutdown")) ?? false
            logger.warning("released a job still running at shutdown", metadata: ["job": "\(id)", "released": "\(released)"])
        }
    }
}
