import Foundation
import LopConfig
import LopCore
import Pruning
import Queue
import Search
import Store

/// What a finished search reports in its job's result (and `lop search --json` prints).
public struct SearchSummary: Codable, Sendable {
    public struct Statistics: Codable, Sendable {
        public let simulations, nodes, evaluations, cacheHits, preloaded, screenings, screenedOut: Int
        public let evaluationSeconds, featureSeconds, seconds: Double

        enum CodingKeys: String, CodingKey {
            case simulations, nodes, evaluations, cacheHits = "cache_hits", preloaded, screenings, screenedOut = "screened_out"
            case evaluationSeconds = "evaluation_seconds", featureSeconds = "feature_seconds", seconds
        }
    }

    public let model: String
    public let modelHash: String
    public let calibration: String
    public let calibrationHash: String
    public let budget: Budget
    public let units: [String]
    public let best: ScoredStrategy
    public let uniform: ScoredStrategy
    /// 1 − best loss / uniform loss.
    public let improvement: Double
    public let statistics: Statistics
    /// Samples this run wrote (a resumed search writes only the ones it had not stored yet).
    public var samplesWritten: Int

    enum CodingKeys: String, CodingKey {
        case model, modelHash = "model_hash", calibration, calibrationHash = "calibration_hash", budget, units, best, uniform
        case improvement, statistics, samplesWritten = "samples_written"
    }

    public init(request: SearchRequest, prepared: SearchRequest.Prepared, result: SearchResult, samplesWritten: Int) {
        let units = prepared.pruner.units
        model = request.model
        modelHash = prepared.pruner.modelHash
        calibration = prepared.calibration.name
        calibrationHash = prepared.calibration.hash
        budget = request.budget
        self.units = units.map(\.name)
        best = ScoredStrategy(result.best, units: units)
        uniform = ScoredStrategy(result.uniform, units: units)
        improvement = 1 - result.best.score.loss / result.uniform.score.loss
        let c = result.counters
        statistics = Statistics(simulations: result.simulations, nodes: result.nodes, evaluations: c.evaluations, cacheHits: c.cacheHits,
                                preloaded: c.preloaded, screenings: c.screenings, screenedOut: result.screenedOut,
                                evaluationSeconds: c.evaluationSeconds, featureSeconds: c.featureSeconds, seconds: result.seconds)
        self.samplesWritten = samplesWritten
    }
}

/// `search`: one model, one budget → the best strategy LOP's tree search finds, every evaluated strategy
/// stored in `lop.samples` (in batches). A retried search replays its seeded tree from the samples it stored,
/// so it resumes without re-evaluating them and ends where an uninterrupted run would.
public struct SearchHandler: JobHandler {
    public static let kind = JobKind.search
    let config: LopConfig

    public init(config: LopConfig = LopConfig()) {
        self.config = config
    }

    public func validate(_ arguments: SearchArguments) throws {
        _ = try SearchRequest(options: arguments.options, budget: arguments.budget, config: config)
    }

    public func run(_ arguments: SearchArguments, job: Job, context: JobContext) throws -> JobOutcome<SearchSummary> {
        var request = try SearchRequest(options: arguments.options, budget: arguments.budget, config: config)
        request.model = try modelFolder(request.model, pool: context.queue.pool, config: config)
        context.progress(0, "loading \(request.model) and ranking neurons")
        let prepared = try request.prepare()
        let gramPasses = { (done: Int, total: Int) in context.progress(0, "reconstruction: Gram matrices, calibration pass \(done)/\(total)") }
        let (result, written) = try request.runStored(prepared, job: job, context: context, gramPasses: gramPasses) { done, total, bestLoss in
            context.progress(Double(done) / Double(total), String(format: "simulation %d/%d, best loss %.4f", done, total, bestLoss))
        }
        return JobOutcome(SearchSummary(request: request, prepared: prepared, result: result, samplesWritten: written))
    }
}

/// `sweep`: one model, many budgets → one `search` job per budget (children, so many workers share the
/// sweep). The sweep waits without spending attempts until every child is final, then summarises the best
/// strategy per budget.
public struct SweepHandler: JobHandler {
    public static let kind = JobKind.sweep
    let config: LopConfig
    /// How long the sweep waits between looks at its children (a finishing child wakes it sooner).
    let recheckSeconds: Double

    public init(config: LopConfig = LopConfig(), recheckSeconds: Double = 10) {
        self.config = config
        self.recheckSeconds = recheckSeconds
    }

    /// The shared search options and the budgets: a list (`[0.3, "50%", "params:N"]`) or a fraction range
    /// `{"from", "to", "step"}`.
    public struct Arguments: Decodable, Sendable {
        public var options: SearchOptions
        public var budgets: [Budget]

        enum CodingKeys: String, CodingKey { case budgets }
        struct Range: Decodable { let from, to, step: Double }

        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(SearchOptions.CodingKeys.allCases.map(\.stringValue) + ["budgets"])
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard c.contains(.budgets), try !c.decodeNil(forKey: .budgets) else { throw c.invalid(.budgets, "is required") }
            if (try? c.decode([AnyJSON].self, forKey: .budgets)) != nil {
                budgets = try c.decode([Budget].self, forKey: .budgets)
            } else if let range = try? c.decode([String: AnyJSON].self, forKey: .budgets) {
                guard range.count == 3, let r = try? c.decode(Range.self, forKey: .budgets) else {
                    throw c.invalid(.budgets, "as a range must be {\"from\", \"to\", \"step\"} (fractions)")
                }
                guard r.from > 0, r.to <= 1, r.from <= r.to, r.step > 0, (r.to - r.from) / r.step < 1000 else {
                    throw c.invalid(.budgets, "range needs 0 < from <= to <= 1 and a positive step giving at most 1000 budgets")
                }
                // Budgets on the step grid, rounded so that 0.2 + 3 × 0.05 is 0.35, not 0.35000000000000003.
                let count = Int(((r.to - r.from) / r.step + 1e-9).rounded(.down)) + 1
                budgets = (0..<count).map { i in .fraction(((r.from + Double(i) * r.step) * 1e9).rounded() / 1e9) }
            } else {
                throw c.invalid(.budgets, "must be a list of budgets or {\"from\", \"to\", \"step\"}")
            }
            guard !budgets.isEmpty, budgets.count <= 1000 else { throw c.invalid(.budgets, "must hold 1 to 1000 budgets") }
            var seen = Set<String>()
            if let repeated = budgets.first(where: { !seen.insert($0.description).inserted }) {
                throw c.invalid(.budgets, "lists \(repeated) twice")
            }
            options = try SearchOptions(from: decoder)
        }
    }

    /// The shared options are checked once here, as the first search would check them.
    public func validate(_ arguments: Arguments) throws {
        _ = try SearchRequest(options: arguments.options, budget: arguments.budgets[0], config: config)
    }

    public struct Summary: Codable, Sendable {
        public struct Child: Codable, Sendable {
            public let budget: String
            public let job: Int64
            public let state: String
            public let best: ScoredStrategy?
            public let uniform: ScoredStrategy?
            public let error: String?
        }
        public let searches: [Child]
        public let completed: Int
        public let failed: Int
    }

    public func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<Summary> {
        let queue = context.queue
        var children = try queue.children(of: job.id)
        if children.isEmpty {
            _ = try modelFolder(arguments.options.model, pool: queue.pool, config: config)
            try queue.pool.withTransaction { c in
                for budget in arguments.budgets {
                    let args = try JSONB(encoding: SearchArguments(options: arguments.options, budget: budget))
                    try queue.enqueue(NewJob(kind: .search, args: args, queue: job.queue, priority: job.priority,
                                             uniqueKey: "sweep:\(job.id):\(budget)", parentId: job.id), on: c)
                }
            }
            children = try queue.children(of: job.id)
        }
        let finished = children.filter(\.state.isFinal).count
        guard finished == children.count else {
            throw JobSnoozed(seconds: recheckSeconds, progress: Double(finished) / Double(children.count),
                             message: "\(finished)/\(children.count) searches finished")
        }
        return JobOutcome(Summary(searches: children.map { child in
            let result = try? child.result?.decode(SearchSummary.self)
            let budget = (try? JobArguments.decode(SearchArguments.self, from: child.args, kind: .search))?.budget.description ?? "?"
            return Summary.Child(budget: budget, job: child.id, state: child.state.rawValue, best: result?.best, uniform: result?.uniform,
                                 error: child.state == .completed ? nil : child.errors.last?.error ?? child.state.rawValue)
        }, completed: children.filter { $0.state == .completed }.count, failed: children.filter { $0.state != .completed }.count))
    }
}

/// Whether a model argument names a folder rather than a registered model: it has a '/', or a config.json.
func namesAFolder(_ text: String) -> Bool {
    text.contains("/") || FileManager.default.fileExists(atPath: text + "/config.json")
}

/// A search or sweep's model argument: a Hugging Face folder on the worker, or a registered base model
/// (`name[@alias|:version]`, no '/'). Checked when the job runs, not when it is submitted from another machine.
func modelFolder(_ text: String, pool: ConnectionPool, config: LopConfig) throws -> String {
    if namesAFolder(text) {
        guard FileManager.default.fileExists(atPath: text + "/config.json") else {
            throw ArgumentError("model", "no model folder with a config.json at \(text)")
        }
        return text
    }
    do {
        let model = try Registry(pool: pool).resolve(try ModelReference(parsing: text))
        guard model.kind == .base else { throw RegistryError("\(model.reference) is a \(model.kind.rawValue) model, not a base model") }
        return try ArtifactRoot(config.artifacts.root).folder(model)
    } catch let error as RegistryError {
        throw ArgumentError("model", "\(error.description) (nor is it a model folder)")
    }
}
