import Foundation
import LopCore
import Store

/// Runs one kind of job: a typed arguments value in, a typed result out. The worker decodes `lop.jobs.args` into
/// `Arguments` (a decoding error discards the job with an `ArgumentError` naming the field and the expected form)
/// and encodes `Output` into `lop.jobs.result`. Handlers are values shared by the worker's threads.
public protocol JobHandler: Sendable {
    associatedtype Arguments: Decodable & Sendable
    associatedtype Output: Encodable & Sendable

    /// The `lop.jobs.kind` this handler runs.
    static var kind: JobKind { get }
    /// Checks what decoding cannot (cross-field rules, budgets the bounds allow) before any work; throws
    /// `ArgumentError` (the job is discarded at once, never retried).
    func validate(_ arguments: Arguments) throws
    /// Does the work. Long work calls `context.progress` and `context.checkCancelled()` now and then.
    func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<Output>
}

extension JobHandler {
    public func validate(_ arguments: Arguments) throws {}

    public var kind: JobKind { Self.kind }

    /// Decodes and validates a job's args as this handler would before running it.
    public func arguments(_ args: JSONB) throws -> Arguments {
        let arguments = try JobArguments.decode(Arguments.self, from: args, kind: Self.kind)
        try validate(arguments)
        return arguments
    }

    /// Runs a claimed job through its typed contract; the worker's one entry point.
    func execute(_ job: Job, context: JobContext) throws -> JobResult {
        let outcome = try run(try arguments(job.args), job: job, context: context)
        var result = JobResult(result: try JSONB(encoding: outcome.output))
        if let finalize = outcome.finalize {
            result.finalize = { connection in
                guard let output = try finalize(connection) else { return nil }
                return try JSONB(encoding: output)
            }
        }
        return result
    }
}

/// A handler's successful outcome: its result, and side effects to commit in the same transaction that
/// completes the job (so a crash never leaves one without the other).
public struct JobOutcome<Output: Encodable & Sendable>: Sendable {
    public var output: Output
    /// Runs in the completing transaction; returns the result to store when the transaction decides part of it
    /// (a registered model's version), nil to keep `output`.
    public var finalize: (@Sendable (Connection) throws -> Output?)?

    public init(_ output: Output, finalize: (@Sendable (Connection) throws -> Output?)? = nil) {
        self.output = output
        self.finalize = finalize
    }
}

/// An outcome as the queue stores it.
struct JobResult: Sendable {
    var result: JSONB
    var finalize: (@Sendable (Connection) throws -> JSONB?)?
}

/// Arguments that can never work: names the field and why.
public struct ArgumentError: Error, CustomStringConvertible, Equatable {
    public let field: String
    public let reason: String
    public init(_ field: String, _ reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "invalid args: '\(field)' \(reason)" }
}

/// Thrown by a handler whose job must wait (for its children) without spending an attempt: the job is
/// scheduled again after `seconds`, or sooner when a child finishes, with its progress kept.
public struct JobSnoozed: Error, CustomStringConvertible {
    public let seconds: Double
    public let progress: Double
    public let message: String?
    public init(seconds: Double, progress: Double, message: String? = nil) {
        self.seconds = seconds
        self.progress = progress
        self.message = message
    }
    public var description: String { "waiting \(seconds) s" }
}

/// Thrown by `JobContext.checkCancelled()` when the job must stop: cancelled, taken away, or shutting down.
public struct JobStopped: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "stopped: \(reason)" }
}

/// What a running handler can see and say: its progress (written to the row at a bounded rate) and whether it
/// should stop.
public final class JobContext: @unchecked Sendable {
    public let job: Job
    /// The queue the job came from (handlers that enqueue or store rows use its pool).
    public let queue: JobQueue
    private let worker: String
    private let minimumInterval: Double
    private let lock = NSLock()
    private var lastWrite = Date.distantPast
    private var lastStage: String?
    private var stopReason: StopReason?

    enum StopReason: Equatable {
        case cancelRequested, lost, shuttingDown
    }

    init(job: Job, queue: JobQueue, worker: String, progressInterval: Double) {
        self.job = job
        self.queue = queue
        self.worker = worker
        minimumInterval = progressInterval
    }

    /// Reports progress (0…1) with a short message and, for a multi-stage job, its stage. Writes at most once per
    /// progress interval, except the final 1.0 and a new stage, which are always written. A failed write is not the
    /// handler's problem: it is dropped.
    public func progress(_ fraction: Double, _ message: String? = nil, stage: String? = nil) {
        lock.lock()
        let now = Date()
        let newStage = stage != nil && stage != lastStage
        let due = fraction >= 1 || newStage || now.timeIntervalSince(lastWrite) >= minimumInterval
        if due { lastWrite = now }
        if let stage { lastStage = stage }
        lock.unlock()
        if due { _ = try? queue.progress(job: job.id, worker: worker, fraction: fraction, message: message, stage: stage) }
    }

    /// Throws `JobStopped` if the handler should stop.
    public func checkCancelled() throws {
        lock.lock()
        let reason = stopReason
        lock.unlock()
        if let reason { throw JobStopped(reason: "\(reason)") }
    }

    func requestStop(_ reason: StopReason) {
        lock.lock()
        if stopReason == nil || reason == .lost { stopReason = reason }
        lock.unlock()
    }

    var reasonToStop: StopReason? {
        lock.lock()
        defer { lock.unlock() }
        return stopReason
    }
}

extension ArgumentError: LopError {
    public var exitCode: Int32 { ExitStatus.usage }
}
