import Foundation
import LopConfig
import Queue
import Store

/// Arguments of a job that takes any object and reads none of it.
public struct IgnoredArguments: Decodable, Sendable {
    public init(from decoder: any Decoder) throws {}
}

/// `noop`: completes at once with `{"ok": true}`; for tests and the queue benchmark.
public struct NoopHandler: JobHandler {
    public static let kind = JobKind.noop
    public struct Output: Codable, Sendable { public let ok: Bool }
    public init() {}

    public func run(_ arguments: IgnoredArguments, job: Job, context: JobContext) throws -> JobOutcome<Output> {
        JobOutcome(Output(ok: true))
    }
}

/// `sleep`: waits `seconds` (0…86400), reporting progress and stopping promptly when cancelled; for tests of
/// long jobs (leases, cancel, kill -9, shutdown).
public struct SleepHandler: JobHandler {
    public static let kind = JobKind.sleep

    public struct Arguments: Decodable, Sendable {
        public let seconds: Double

        enum CodingKeys: String, CodingKey, CaseIterable { case seconds }

        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            seconds = try c.decode(Double.self, forKey: .seconds)
            guard seconds.isFinite, seconds >= 0, seconds <= 86400 else {
                throw c.invalid(.seconds, "must be between 0 and 86400, got \(seconds)")
            }
        }
    }

    public struct Output: Codable, Sendable {
        public let sleptSeconds: Double
        enum CodingKeys: String, CodingKey { case sleptSeconds = "slept_seconds" }
    }

    public init() {}

    public func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<Output> {
        let total = arguments.seconds
        let end = Date().addingTimeInterval(total)
        while Date() < end {
            try context.checkCancelled()
            context.progress(total > 0 ? 1 - end.timeIntervalSinceNow / total : 1, "sleeping")
            Thread.sleep(forTimeInterval: min(0.05, max(end.timeIntervalSinceNow, 0)))
        }
        context.progress(1, "done")
        return JobOutcome(Output(sleptSeconds: total))
    }
}

/// Every handler lop has, one per `JobKind`, with the defaults of `config`.
public enum JobHandlers {
    public static func all(config: LopConfig = LopConfig()) -> [any JobHandler] {
        // In JobKind's order (a test holds them to it).
        [CompressHandler(config: config), SearchHandler(config: config), SweepHandler(config: config), TrainHandler(config: config),
         EvaluateHandler(config: config), NoopHandler(), SleepHandler()]
    }
}
