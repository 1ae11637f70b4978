import Evaluation
import Export
import Foundation
import LopConfig
import Models
import Predictor
import LopCore
import Pruning
import Queue
import Search
import Store
import Webhooks

/// What a finished compress job reports: the registered model, how its strategy was chosen, its sizes and
/// metrics beside the base model's, and the time each stage took.
public struct CompressSummary: Codable, Sendable {
    public struct ModelRef: Codable, Sendable, Equatable {
        public let id: Int64
        public let name: String
        public let version: Int

        init(_ model: RegisteredModel) { (id, name, version) = (model.id, model.name, model.version) }
    }

    /// The registered pruned model (nil until the registering transaction assigns it).
    public var model: ModelRef?
    /// True when an earlier job with the same identity had registered it and it was reused.
    public var reused: Bool
    public let base: ModelRef
    public let budget: Budget
    public let method: String
    /// predict or search: what chose the strategy; with auto, `fallback` says why it searched.
    public let methodUsed: String
    public let fallback: String?
    public let predictor: ModelRef?
    /// The ensemble's agreement and whether the budget was inside the predictor's trained range.
    public let prediction: Prediction?
    public let strategy: [Double]
    public let sizes: [Int]
    public let keptFraction: Double
    public let parameters: Int64
    public let baseParameters: Int64
    public let sizeBytes: Int64
    public let metrics: EvaluationData.Metrics?
    public let baseMetrics: EvaluationData.Metrics?
    /// Artifact folder (relative to the artifact root) and its HTML report.
    public let artifactPath: String
    public let report: String?
    public let samplesWritten: Int
    /// How the kept weights were set (nil in summaries written before reconstruction existed: none).
    public let reconstruction: ReconstructionMethod?
    public let timings: [String: Double]

    enum CodingKeys: String, CodingKey {
        case model, reused, base, budget, method, methodUsed = "method_used", fallback, predictor, prediction, strategy, sizes
        case keptFraction = "kept_fraction", parameters, baseParameters = "base_parameters", sizeBytes = "size_bytes", metrics
        case baseMetrics = "base_metrics", artifactPath = "artifact_path", report, samplesWritten = "samples_written", reconstruction, timings
    }
}

/// The compress job's stages, in order: recorded in `lop.jobs.progress_stage`; the progress message starts with
/// `N/4 stage:` for people.
public enum CompressStage: String, CaseIterable, Sendable {
    case strategy, prune, evaluate, register

    public var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// `compress`: a registered base model and a budget → a pruned, evaluated model, registered in the same
/// transaction that completes the job (with its `model.registered` event). A request with the identity of
/// one already registered (base, budget, method, predictor, search settings) reuses that model.
public struct CompressHandler: JobHandler {
    /// A request's identity: a retry or a duplicate finds the model already registered under it. A re-fitted
    /// request names its reconstruction and ridge; an unfitted one keeps the key it always had.
    static func requestKey(base: Int64, budget: Budget, method: String, predictor: Int64?, search: String, reconstruction: String? = nil,
                           exports: [String] = []) -> String {
        sha256Hex("compress/2|base=\(base)|budget=\(budget.identity)|method=\(method)|predictor=\(predictor ?? 0)|search=\(search)"
                  + (reconstruction.map { "|reconstruction=\($0)" } ?? "") + (exports.isEmpty ? "" : "|export=\(exports.joined(separator: ","))"))
    }

    /// The forms a compress job can write beside the pruned folder: `hf` (the folder itself: a plain config when
    /// every layer has one width) and `gguf-TYPE` (llama.cpp's language-model file, `model-TYPE.gguf`).
    public static let exportForms = ["hf"] + GGUFFile.TensorType.allCases.map { "gguf-\($0)" }

    public static let kind = JobKind.compress
    let config: LopConfig

    public init(config: LopConfig = LopConfig()) {
        self.config = config
    }

    public enum Method: String, Codable, Sendable { case predict, search, auto }

    /// A compress job's args.
    public struct Arguments: Decodable, Sendable {
        /// A registered base model.
        public var model: ModelReference
        public var budget: Budget
        /// nil: `compress.method` from the config.
        public var method: Method?
        public var evaluate: Bool
        /// The registry name of the pruned model (default: BASE-pruned).
        public var name: String?
        public var predictor: ModelReference?
        /// Search setting overrides, as a search job takes them.
        public var search: [String: AnyJSON]?
        /// How the pruned model's kept weights are set (nil: `pruning.reconstruction`).
        public var reconstruction: ReconstructionMethod?
        /// Forms written and registered with it (`exportForms`), in a canonical order.
        public var export: [String]

        enum CodingKeys: String, CodingKey, CaseIterable { case model, budget, method, evaluate, name, predictor, search, reconstruction, export }

        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard let model = try c.parsed(.model, ModelReference.init(parsing:)) else { throw c.invalid(.model, "is required") }
            self.model = model
            budget = try c.decode(Budget.self, forKey: .budget)
            method = try c.parsed(.method) { name in
                guard let method = Method(rawValue: name) else { throw c.invalid(.method, "must be predict, search or auto, got \"\(name)\"") }
                return method
            }
            evaluate = try c.decodeIfPresent(Bool.self, forKey: .evaluate) ?? true
            name = try c.string(.name)
            if let name, !ModelReference.isName(name) {
                throw c.invalid(.name, "\"\(name)\" is not a model name (letters, digits, '.', '-', '_'; at most 100; starting with a letter or digit)")
            }
            predictor = try c.parsed(.predictor, ModelReference.init(parsing:))
            search = try c.decodeIfPresent([String: AnyJSON].self, forKey: .search)
            reconstruction = try SearchOptions.reconstruction(c, .reconstruction)
            let forms = try c.decodeIfPresent([String].self, forKey: .export) ?? []
            for form in forms where !CompressHandler.exportForms.contains(form) {
                throw c.invalid(.export, "\"\(form)\" is not an export form (\(CompressHandler.exportForms.joined(separator: ", ")))")
            }
            export = CompressHandler.exportForms.filter(forms.contains)
        }
    }

    /// The method a request runs: its own, or the config's default.
    func method(_ arguments: Arguments) throws -> Method {
        if let method = arguments.method { return method }
        guard let method = Method(rawValue: config.compress.method) else {
            throw ArgumentError("method", "must be predict, search or auto, got \"\(config.compress.method)\"")
        }
        return method
    }

    public func validate(_ arguments: Arguments) throws {
        let method = try method(arguments)
        if arguments.predictor != nil && method == .search { throw ArgumentError("predictor", "is not used by method search") }
        // The search overrides are checked as a search job would check them.
        var settings = try SearchSettings(config.search)
        try settings.apply(arguments.search ?? [:])
    }

    /// The story: resolve the models, reuse a model registered for the same request, else open the base, choose
    /// a strategy, build the artifact, and register it with the job's completion.
    public func run(_ request: Arguments, job: Job, context: JobContext) throws -> JobOutcome<CompressSummary> {
        let started = Date()
        let registry = Registry(pool: context.queue.pool)
        let root = try ArtifactRoot(config.artifacts.root)
        let stage = StageReporter(context: context)

        stage(.strategy, 0, "resolving \(request.model)")
        let plan = try CompressPlan(request, method: try method(request), config: config, registry: registry)
        if let reused = try plan.reused(registry: registry, root: root) {
            stage(.register, 1, "reused \(reused.model.map { "\($0.name):\($0.version)" } ?? "")")
            return JobOutcome(reused)
        }

        var clock = Stopwatch()
        stage(.strategy, 0.02, "loading \(plan.base.reference) and ranking neurons")
        let predictor = try plan.predictor.map { try OpenedPredictor($0, root: root) }
        let base = try OpenedBase(plan.base, root: root, config: config, importance: predictor?.importance)
        try base.check(request.budget)
        let choice = try StrategyChoice.make(plan, base: base, predictor: predictor, maxSpread: config.compress.maxSpread,
                                             overrides: request.search, job: job, context: context, stage: stage)
        clock.lap("strategy")
        try context.checkCancelled()

        let artifact = try PrunedArtifact.build(plan, base: base, choice: choice, evaluate: request.evaluate, root: root,
                                                context: context, stage: stage, clock: &clock)
        clock.timings["total"] = Date().timeIntervalSince(started)
        return try artifact.registration(plan, base: base, choice: choice, job: job, registry: registry, timings: clock.timings)
    }
}

/// A pruned model's lineage as stored in the registry: the job's summary (so a reused request reports the same)
/// and, for a searched strategy, the search key of its samples.
struct StoredSummary: Codable {
    var summary: CompressSummary
    var searchKey: String?

    enum CodingKeys: String, CodingKey { case summary, searchKey = "search_key" }
}
