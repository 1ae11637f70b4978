import ArgumentParser
import Bootstrap
import Foundation
import Jobs
import LopConfig
import Logging
import Queue
import Store

extension GlobalOptions {
    /// The queue on the configured database.
    func jobQueue() throws -> JobQueue {
        let config = try load()
        return JobQueue(pool: try config.makePool(logger: Logger(label: "lop.cli")))
    }
}

/// Parses "+90s", "+10m", "+2h", "+1d" (from now) or an ISO 8601 time.
func parseTime(_ text: String) -> Date? {
    if text.hasPrefix("+"), let seconds = parseDuration(String(text.dropFirst())) { return Date().addingTimeInterval(seconds) }
    let formatter = ISO8601DateFormatter()
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: text)
}

/// Parses "90s", "10m", "2h", "7d" into seconds.
func parseDuration(_ text: String) -> Double? {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let unit = text.last, let scale = units[unit], let value = Double(text.dropLast()), value >= 0, value.isFinite else { return nil }
    return value * scale
}

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a job; prints its id (or, with --json, its row).",
        discussion: """
            Same as INSERT INTO lop.jobs (kind, args) VALUES (…). Kinds: \(JobKind.list).
            Examples: lop submit sleep --arg seconds=5 --priority 1
                      lop submit compress --model tiny-llama --budget 0.45 --method auto
                      lop submit train --model tiny-llama
                      lop submit evaluate --model tiny-llama-pruned@candidate --data corpus
            """)

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Kind of job: \(JobKind.list).")
    var kind: JobKind

    @Option(name: .long, help: "Arguments as a JSON object.")
    var args: String?

    @Option(name: .customLong("arg"), help: "One argument as key=value; the value is read as JSON if it parses, else as a string. Repeatable.")
    var pairs: [String] = []

    @Option(help: "Shorthand for --arg model=NAME (a registered model: name, name@alias or name:version; or a folder).")
    var model: String?

    @Option(help: "Shorthand for --arg budget=VALUE (0.5, 50%, params:N, …).")
    var budget: String?

    @Option(help: "Shorthand for --arg method=METHOD (compress: predict, search or auto).")
    var method: String?

    @Option(help: "Shorthand for --arg data=DATA (evaluate: the data to measure on).")
    var data: String?

    @Option(help: "Queue (default: default).")
    var queue = "default"

    @Option(help: "Priority: 1 runs first, 4 last.")
    var priority = 2

    @Option(help: "Run at or after this time: ISO 8601 (2026-11-25T03:00:00Z) or +90s, +10m, +2h, +1d.")
    var at: String?

    @Option(name: .long, help: "Only one live job may hold this key; a duplicate submission returns the existing job.")
    var uniqueKey: String?

    @Option(name: .long, help: "Attempts before the job is discarded (default: queue.max_attempts).")
    var maxAttempts: Int?

    func validate() throws {
        guard (1...4).contains(priority) else { throw ValidationError("--priority must be 1, 2, 3 or 4") }
        if let maxAttempts, !(1...1000).contains(maxAttempts) { throw ValidationError("--max-attempts must be between 1 and 1000") }
        if let at, parseTime(at) == nil { throw ValidationError("--at '\(at)' is neither ISO 8601 nor +N[s|m|h|d]") }
        _ = try argumentsJSON()
    }

    /// --args merged with the --arg pairs, as JSON object text.
    func argumentsJSON() throws -> String {
        var object: [String: AnyJSON] = [:]
        if let args {
            guard let parsed = try? JSONDecoder().decode([String: AnyJSON].self, from: Data(args.utf8)) else {
                throw ValidationError("--args must be a JSON object, e.g. '{\"seconds\": 5}'")
            }
            object = parsed
        }
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--arg '\(pair)' is not key=value")
            }
            let key = String(pair[..<equals]), raw = String(pair[pair.index(after: equals)...])
            object[key] = (try? JSONDecoder().decode(AnyJSON.self, from: Data(raw.utf8))) ?? .string(raw)
        }
        for (key, value) in [("model", model), ("budget", budget), ("method", method), ("data", data)] {
            if let value { object[key] = .string(value) }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(object), as: UTF8.self)
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let args = JSONB(text: try argumentsJSON())
            // Check the arguments here too when this build has the handler, so mistakes surface at once.
            if let handler = JobHandlers.all(config: config).first(where: { $0.kind == kind }) {
                do { _ = try handler.arguments(args) } catch let error as ArgumentError {
                    throw ValidationError(error.description)
                }
            }
            let queue = JobQueue(pool: try config.makePool(logger: Logger(label: "lop.cli")))
            let (job, duplicate) = try queue.enqueue(NewJob(
                kind: kind, args: args, queue: self.queue, priority: priority, scheduledAt: at.flatMap(parseTime),
                uniqueKey: uniqueKey, maxAttempts: maxAttempts ?? config.queue.maxAttempts))
            if options.json { try printJSON(job) } else {
                print(job.id)
                if duplicate { FileHandle.standardError.write(Data("lop: job \(job.id) already holds unique key '\(uniqueKey ?? "")'\n".utf8)) }
            }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "Only jobs in this state (\(JobState.allCases.map(\.rawValue).joined(separator: ", "))).")
    var state: String?

    @Option(help: "Only jobs of this kind (\(JobKind.list)).")
    var kind: JobKind?

    @Option(help: "At most this many jobs.")
    var limit = 50

    func validate() throws {
        if let state, JobState(rawValue: state) == nil {
            throw ValidationError("--state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (1...10000).contains(limit) else { throw ValidationError("--limit must be between 1 and 10000") }
    }

    func run() throws {
        try runReportingErrors {
            let jobs = try options.jobQueue().list(state: state.flatMap(JobState.init), kind: kind, limit: limit)
            if options.json { try printJSON(jobs); return }
            func row(_ cells: [String]) -> String {
                zip(cells, [8, 9, 10, 10, 8, 9, 0]).map { cell, width in cell.padding(toLength: max(width, cell.count), withPad: " ", startingAt: 0) }
                    .joined(separator: " ")
            }
            print(row(["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PROGRESS", "CREATED"]))
            for job in jobs {
                print(row(["\(job.id)", job.kind.rawValue, job.queue, job.state.rawValue, "\(job.attempt)/\(job.maxAttempts)",
                           String(format: "%.0f%%", job.progress * 100), "\(job.createdAt)"]))
            }
        }
    }
}

/// A one-line progress bar: `[#######.............]  35%  message`.
func progressBar(_ fraction: Double, width: Int = 30) -> String {
    let filled = Int((min(max(fraction, 0), 1) * Double(width)).rounded())
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]" + String(format: " %3.0f%%", fraction * 100)
}

func describe(_ job: Job) -> String {
    var lines = [
        "job \(job.id): \(job.kind) on queue \(job.queue), priority \(job.priority)",
        "state:    \(job.state.rawValue)\(job.cancelRequestedAt != nil && !job.state.isFinal ? " (cancel requested)" : "")",
        "attempt:  \(job.attempt) of \(job.maxAttempts)\(job.attemptedBy.map { " by \($0)" } ?? "")",
        "progress: \(progressBar(job.progress))\(job.progressMessage.map { "  \($0)" } ?? "")",
        "args:     \(job.args.text)",
    ] + (job.parentId.map { ["parent:   job \($0)"] } ?? []) + [
        "created:  \(job.createdAt)   scheduled: \(job.scheduledAt)\(job.finalizedAt.map { "   finalized: \($0)" } ?? "")",
    ]
    if let result = job.result { lines.append("result:   \(result.text)") }
    for error in job.errors { lines.append("error:    attempt \(error.attempt) at \(error.at)\(error.worker.map { " on \($0)" } ?? ""): \(error.error)") }
    return lines.joined(separator: "\n")
}

/// A compress job's stages, each done (✓), running (with its progress) or to come (·), and for a finished job
/// the model it registered with the time each stage took.
func compressStages(_ job: Job) -> String {
    let summary = try? job.result?.decode(CompressSummary.self)
    var current = job.progressStage.flatMap(CompressStage.init(rawValue:))?.index ?? -1
    if job.state == .completed { current = CompressStage.allCases.count }
    let parts = CompressStage.allCases.map(\.rawValue).enumerated().map { index, stage in
        if index < current { return "\(stage) ✓" + (summary?.timings[stage].map { String(format: " %.1fs", $0) } ?? "") }
        if index == current { return job.state.isFinal ? "\(stage) ✗" : "\(stage) ▶ \(Int(job.progress * 100))%" }
        return "\(stage) ·"
    }
    var lines = ["stages:   " + parts.joined(separator: " → ")]
    if let summary, let model = summary.model {
        lines.append("model:    \(model.name):\(model.version) (id \(model.id))\(summary.reused ? ", reused" : "") from \(summary.base.name):\(summary.base.version); "
            + "strategy by \(summary.methodUsed)\(summary.fallback.map { " (\($0))" } ?? "")")
        var line = String(format: "kept:     %.4f of the FFN parameters, %d of %d parameters", summary.keptFraction, summary.parameters, summary.baseParameters)
        if let m = summary.metrics, let b = summary.baseMetrics {
            line += String(format: "; held-out loss %.4f (base %.4f)", m.loss, b.loss) + (m.accuracy.map { String(format: ", accuracy %.3f", $0) } ?? "")
        }
        lines.append(line)
    }
    return lines.joined(separator: "\n")
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one job: state, progress, result and the error of every failed attempt.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Job id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            let queue = try options.jobQueue()
            guard let job = try queue.get(id) else { throw QueueError.noSuchJob(id) }
            if options.json { return try printJSON(job) }
            print(describe(job))
            if job.kind == .compress { print(compressStages(job)) }
            let children = try queue.children(of: id)
            guard !children.isEmpty else { return }
            let byState = Dictionary(grouping: children, by: \.state).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            print("children: \(children.count) (\(byState.joined(separator: ", ")))")
            for child in children {
                print("  job \(child.id) \(child.kind) \(child.state.rawValue) \(progressBar(child.progress, width: 20))\(child.progressMessage.map { "  \($0)" } ?? "")")
            }
        }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a job until it is final: a live progress bar in a terminal, a line per change otherwise.",
        discussion: "Exits 0 if the job completed, 1 if it was discarded or cancelled.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Job id.")
    var id: Int64

    @Option(help: "Seconds between looks at the job.")
    var interval = 0.5

    func validate() throws {
        guard interval >= 0.05 && interval <= 60 else { throw ValidationError("--interval must be between 0.05 and 60 seconds") }
    }

    func run() throws {
        var finalState: JobState = .available
        try runReportingErrors {
            let queue = try options.jobQueue()
            let terminal = isatty(STDOUT_FILENO) == 1
            var last = ""
            while true {
                guard let job = try queue.get(id) else { throw QueueError.noSuchJob(id) }
                let line = "job \(job.id) \(job.state.rawValue) \(progressBar(job.progress))\(job.progressMessage.map { "  \($0)" } ?? "")"
                if options.json {
                    if line != last { try printJSON(job) }
                } else if terminal {
                    print("\r\u{1B}[2K" + line, terminator: "")
                    fflush(nil)
                } else if line != last {
                    print(line)
                    fflush(nil)
                }
                last = line
                if job.state.isFinal {
                    if terminal && !options.json { print("") }
                    if job.state != .completed, let error = job.errors.last { print("last error: \(error.error)") }
                    finalState = job.state
                    return
                }
                Thread.sleep(forTimeInterval: interval)
            }
        }
        if finalState != .completed { throw ExitCode(1) }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel a queued job at once, or ask a running one to stop (it ends as cancelled, never completed).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Job id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            let outcome = try options.jobQueue().cancel(job: id)
            if options.json { try printJSON(["id": "\(id)", "outcome": outcome.rawValue]) } else {
                switch outcome {
                case .cancelled: print("job \(id) cancelled")
                case .requested: print("job \(id) is running; its worker was asked to stop")
                case .alreadyFinal: print("job \(id) was already final")
                }
            }
        }
    }
}

struct Retry: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put a discarded or cancelled job back in the queue with one more attempt.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Job id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            let job = try options.jobQueue().retry(job: id)
            if options.json { try printJSON(job) } else { print("job \(job.id) is available again (attempt \(job.attempt) of \(job.maxAttempts))") }
        }
    }
}

struct PruneJobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune-jobs", abstract: "Delete finalized jobs older than a duration, in batches.")

    @OptionGroup var options: GlobalOptions

    @Option(name: .long, help: "Age of the finalized jobs to delete: 90s, 10m, 12h, 7d.")
    var olderThan: String

    func validate() throws {
        guard parseDuration(olderThan) != nil else { throw ValidationError("--older-than '\(olderThan)' is not N followed by s, m, h or d") }
    }

    func run() throws {
        try runReportingErrors {
            let deleted = try options.jobQueue().pruneFinalized(olderThan: parseDuration(olderThan)!)
            if options.json { try printJSON(["deleted": deleted]) } else { print("deleted \(deleted) finalized jobs") }
        }
    }
}

extension JobKind: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument) }
}
