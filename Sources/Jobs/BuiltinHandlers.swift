import Foundation
import LopConfig
import Queue
import Store

/// Reads a job's args as a JSON object, or names what is wrong with them.
func argumentObject(_ args: JSONB) throws -> [String: AnyJSON] {
    guard let object = try? args.decode([String: AnyJSON].self) else { throw ArgumentError("args", "must be a JSON object") }
    return object
}

/// `noop`: completes at once with `{"ok": true}`; for tests and the queue benchmark.
public struct NoopHandler: JobHandler {
    public let kind = "noop"
    public init() {}

    public func validate(_ args: JSONB) throws {
        _ = try argumentObject(args)
    }

    public func run(_ job: Job, context: JobContext) throws -> JobResult {
        JobResult(result: JSONB(text: "{\"ok\": true}"))
    }
}

/// `sleep`: waits `seconds` (0…86400), reporting progress and stopping promptly when cancelled; for tests of
/// long jobs (leases, cancel, kill -9, shutdown).
public struct SleepHandler: JobHandler {
    public let kind = "sleep"
    public init() {}

    public func validate(_ args: JSONB) throws {
        _ = try seconds(args)
    }

    func seconds(_ args: JSONB) throws -> Double {
        let object = try argumentObject(args)
        guard let raw = object["seconds"] else { throw ArgumentError("seconds", "is required") }
        guard case let .number(value) = raw else { throw ArgumentError("seconds", "must be a number") }
        guard value.isFinite, value >= 0, value <= 86400 else { throw ArgumentError("seconds", "must be between 0 and 86400, got \(value)") }
        let unknown = Set(object.keys).subtracting(["seconds"])
        if let extra = unknown.sorted().first { throw ArgumentError(extra, "is not an argument of sleep") }
        return value
    }

    public func run(_ job: Job, context: JobContext) throws -> JobResult {
        let total = try seconds(job.args)
        let end = Date().addingTimeInterval(total)
        while Date() < end {
            try context.checkCancelled()
            context.progress(total > 0 ? 1 - end.timeIntervalSinceNow / total : 1, "sleeping")
            Thread.sleep(forTimeInterval: min(0.05, max(end.timeIntervalSinceNow, 0)))
        }
        context.progress(1, "done")
        return JobResult(result: JSONB(text: "{\"slept_seconds\": \(total)}"))
    }
}

/// Every handler lop has, by kind, with the defaults of `config`.
public enum JobHandlers {
    public static func all(config: LopConfig = LopConfig()) -> [any JobHandler] {
        [NoopHandler(), SleepHandler(), SearchHandler(config: config), SweepHandler(config: config), CompressHandler(config: config),
         TrainHandler(config: config)]
    }
}
