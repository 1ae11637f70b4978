import Evaluation
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
    public let timings: [String: Double]

    enum CodingKeys: String, CodingKey {
        case model, reused, base, budget, method, methodUsed = "method_used", fallback, predictor, prediction, strategy, sizes
        case keptFraction = "kept_fraction", parameters, baseParameters = "base_parameters", sizeBytes = "size_bytes", metrics
        case baseMetrics = "base_metrics", artifactPath = "artifact_path", report, samplesWritten = "samples_written", timings
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
    /// A request's identity: a retry or a duplicate finds the model already registered under it.
    static func requestKey(base: Int64, budget: Budget, method: String, predictor: Int64?, search: String) -> String {
        sha256Hex("compress/2|base=\(base)|budget=\(budget.identity)|method=\(method)|predictor=\(predictor ?? 0)|search=\(search)")
    }

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

        enum CodingKeys: String, CodingKey, CaseIterable { case model, budget, method, evaluate, name, predictor, search }

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

    public func run(_ request: Arguments, job: Job, context: JobContext) throws -> JobOutcome<CompressSummary> {
        let method = try method(request)
        let started = Date()
        let registry = Registry(pool: context.queue.pool)
        let root = try ArtifactRoot(config.artifacts.root)
        func stage(_ stage: CompressStage, _ fraction: Double, _ message: String) {
            context.progress(fraction, "\(stage.index + 1)/\(CompressStage.allCases.count) \(stage.rawValue): \(message)", stage: stage.rawValue)
        }

        // Which models: a name that does not resolve can never work, so it discards the job.
        stage(.strategy, 0, "resolving \(request.model)")
        let base = try argument("model") { try registry.resolve(request.model) }
        guard base.kind == .base else { throw ArgumentError("model", "\(base.reference) is a \(base.kind.rawValue) model; compress takes a base model") }
        var predictorRecord: RegisteredModel?
        if method != .search {
            if let reference = request.predictor {
                predictorRecord = try argument("predictor") { try registry.resolve(reference) }
            } else {
                predictorRecord = try? registry.resolve(ModelReference(name: TrainHandler.predictorName(of: base.name), selector: .alias("champion")))
                if predictorRecord == nil && method == .predict {
                    throw ArgumentError("method", "predict needs a predictor, and \(base.reference) has no champion predictor yet (run a train job, or use search or auto)")
                }
            }
            if let p = predictorRecord, p.kind != .predictor || p.baseModelId != base.id {
                throw ArgumentError("predictor", "\(p.reference) is not a predictor of \(base.reference) (it is a \(p.kind.rawValue) model\(p.baseModelId.map { " of model id \($0)" } ?? ""))")
            }
        }

        // The request's identity: a retry or a duplicate finds the model already registered.
        let searchText = try request.search.map { try JSONB(encoding: $0).text } ?? "{}"
        let key = Self.requestKey(base: base.id, budget: request.budget, method: method.rawValue, predictor: predictorRecord?.id,
                                  search: method == .predict ? "" : searchText)
        if let existing = try registry.model(requestKey: key) {
            let damaged = root.verify(existing)
            guard damaged.isEmpty else {
                throw RegistryError("\(existing.reference) is registered for this request but its files \(damaged.joined(separator: ", ")) are missing or changed")
            }
            stage(.register, 1, "reused \(existing.reference)")
            var summary = try existing.lineage.decode(StoredSummary.self).summary
            summary.model = CompressSummary.ModelRef(existing)
            summary.reused = true
            return JobOutcome(summary)
        }

        // 1. Strategy: predicted, or searched (auto searches when the predictor should not be trusted here).
        stage(.strategy, 0.02, "loading \(base.reference) and ranking neurons")
        var timings: [String: Double] = [:]
        var clock = Date()
        let opened: OpenedPredictor? = try predictorRecord.map { try OpenedPredictor($0, root: root) }
        let opening = try OpenedBase(base, root: root, config: config, budget: request.budget, importance: opened?.importance, search: request.search)
        // A budget this model cannot meet within the bounds can never work: checked once, before any strategy.
        do {
            _ = try Projection.project(ratios: opening.units.map { _ in 1 }, units: opening.units, budget: request.budget, bounds: opening.request.bounds)
        } catch {
            throw ArgumentError("budget", error.description)
        }
        var methodUsed = method == .search ? "search" : "predict"
        var fallback: String?
        var prediction: Prediction?
        var ratios: [Double] = []
        var sizes: [Int] = []
        var samplesWritten = 0
        if let opened {
            do {
                try opened.check(for: opening)
                let p = try opened.predictor.predict(request.budget, bounds: opening.request.bounds)
                prediction = p
                (ratios, sizes) = (p.ratios, p.sizes)
                if method == .auto && !p.inTrainedRange {
                    fallback = String(format: "the budget keeps %.3f of the FFN parameters, outside the predictor's trained range %.3f–%.3f",
                                      Projection.keptFraction(p.sizes, units: opening.units), p.trainedRange[0], p.trainedRange[1])
                } else if method == .auto && p.maximumSpread > config.compress.maxSpread {
                    fallback = String(format: "the predictor's members disagree: largest spread %.4f > compress.max_spread %.4f", p.maximumSpread, config.compress.maxSpread)
                }
            } catch let error as ArgumentError where method == .auto {
                fallback = error.reason
            }
        } else if method == .auto {
            fallback = "\(base.reference) has no champion predictor yet"
        }
        if method == .search || fallback != nil {
            methodUsed = "search"
            stage(.strategy, 0.05, "searching" + (fallback.map { " (\($0))" } ?? ""))
            let (result, written) = try opening.request.runStored(opening.prepared, job: job, context: context) { done, total, bestLoss in
                stage(.strategy, 0.05 + 0.5 * Double(done) / Double(total), String(format: "simulation %d/%d, best loss %.4f", done, total, bestLoss))
            }
            (ratios, sizes, samplesWritten) = (result.best.ratios, result.best.sizes, written)
        }
        timings["strategy"] = Date().timeIntervalSince(clock)
        try context.checkCancelled()

        // 2. Prune: the smaller checkpoint, written under a temporary name.
        clock = Date()
        stage(.prune, 0.6, "writing the pruned checkpoint")
        let temporary = try root.temporary(for: key)
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        let dtype = opening.prepared.model.storageType
        let (pruned, record) = try opening.prepared.pruner.write(budget: request.budget, allocation: methodUsed, proposed: ratios, sizes: sizes,
                                                                  to: temporary, dtype: dtype)
        timings["prune"] = Date().timeIntervalSince(clock)
        try context.checkCancelled()

        // 3. Evaluate the written files (what is registered is what was measured), with a report.
        clock = Date()
        var metrics: EvaluationData.Metrics?
        let baseMetrics = base.heldOutMetrics
        var reportFile: String?
        if request.evaluate {
            stage(.evaluate, 0.7, "held-out \(base.evalData ?? "data")")
            let written = try Model.load(directory: temporary)
            guard written.parameterCount == pruned.parameterCount else {
                throw RegistryError("the written checkpoint has \(written.parameterCount) parameters, the pruned model \(pruned.parameterCount)")
            }
            let measured = try opening.heldOut.evaluate(written)
            metrics = measured
            if let baseMetrics {
                var report = Report(model: base.reference, modelHash: base.contentHash, data: base.evalData ?? "", importance: record.importance,
                                    units: record.units, original: baseMetrics, originalParameterCount: Int(base.parameters))
                report.entries.append(Report.Entry(strategy: methodUsed, budget: request.budget.description, keptFraction: Projection.keptFraction(sizes, units: opening.units),
                                                   ratios: record.ratios, sizes: sizes, parameterCount: pruned.parameterCount, metrics: measured,
                                                   seconds: Date().timeIntervalSince(clock)))
                try AtomicFile.write(try report.json(), to: temporary + "/report.json")
                try AtomicFile.write(Data(report.html().utf8), to: temporary + "/report.html")
                reportFile = "report.html"
            }
        }
        timings["evaluate"] = Date().timeIntervalSince(clock)
        try context.checkCancelled()

        // 4. Register: files hashed, folder renamed into place; the row, the job's completion and the
        // model.registered event then commit in one transaction.
        clock = Date()
        stage(.register, 0.95, "hashing and registering")
        let files = try ArtifactRoot.digest(folder: temporary)
        let name = request.name ?? "\(base.name)-pruned"
        let relative = "pruned/\(name)/\(key.prefix(20))"
        try root.install(temporary, at: relative)
        timings["register"] = Date().timeIntervalSince(clock)
        timings["total"] = Date().timeIntervalSince(started)
        let summary = CompressSummary(
            model: nil, reused: false, base: .init(base), budget: request.budget, method: method.rawValue, methodUsed: methodUsed,
            fallback: fallback, predictor: predictorRecord.map(CompressSummary.ModelRef.init), prediction: prediction, strategy: record.ratios,
            sizes: sizes, keptFraction: Projection.keptFraction(sizes, units: opening.units), parameters: Int64(pruned.parameterCount),
            baseParameters: base.parameters, sizeBytes: files.values.reduce(0) { $0 + $1.bytes }, metrics: metrics, baseMetrics: baseMetrics,
            artifactPath: relative, report: reportFile.map { relative + "/" + $0 }, samplesWritten: samplesWritten, timings: timings)
        var new = NewModel(name: name, kind: .pruned, artifactPath: relative, files: files, parameters: Int64(pruned.parameterCount),
                           contentHash: pruned.contentHash)
        new.baseModelId = base.id
        new.predictorId = methodUsed == "predict" ? predictorRecord?.id : nil
        new.sourceJobId = job.id
        new.budget = request.budget
        new.strategy = record.ratios
        new.sizes = sizes
        new.method = methodUsed
        new.requestKey = key
        new.metrics = try JSONB(encoding: HeldOutMetrics(heldOut: metrics))
        new.lineage = try JSONB(encoding: StoredSummary(summary: summary, searchKey: methodUsed == "search" ? "job:\(job.id)" : nil))
        let model = new
        return JobOutcome(summary) { c in
            var final = summary
            if let existing = try registry.model(requestKey: key, on: c) {
                // A duplicate running at the same time registered it first (same files, same folder).
                final.model = .init(existing)
                final.reused = true
                return final
            }
            let registered = try registry.register(model, on: c)
            _ = try WebhookStore.emit("model.registered", data: RegisteredEvent(registered), on: c)
            final.model = .init(registered)
            return final
        }
    }

    /// Runs a lookup whose failure means the argument can never work (the job is discarded, not retried).
    private func argument<T>(_ key: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as RegistryError { throw ArgumentError(key, error.description) }
    }
}

/// A pruned model's lineage as stored in the registry: the job's summary (so a reused request reports the same)
/// and, for a searched strategy, the search key of its samples.
struct StoredSummary: Codable {
    var summary: CompressSummary
    var searchKey: String?

    enum CodingKeys: String, CodingKey { case summary, searchKey = "search_key" }
}
