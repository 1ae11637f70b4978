import Evaluation
import Export
import Foundation
import LopConfig
import LopCore
import Models
import Predictor
import Pruning
import Queue
import Search
import Store
import Webhooks

/// Reports a compress job's progress with its typed stage and an `N/4 stage:` message for people.
struct StageReporter {
    let context: JobContext

    func callAsFunction(_ stage: CompressStage, _ fraction: Double, _ message: String) {
        context.progress(fraction, "\(stage.index + 1)/\(CompressStage.allCases.count) \(stage.rawValue): \(message)", stage: stage.rawValue)
    }
}

/// Seconds per stage, lap by lap.
struct Stopwatch {
    private var start = Date()
    var timings: [String: Double] = [:]

    mutating func lap(_ name: String) {
        timings[name] = Date().timeIntervalSince(start)
        start = Date()
    }
}

/// What a compress request resolves to before any work: the base model, the predictor to try, the method and
/// the request's identity. A name that does not resolve can never work, so it discards the job.
struct CompressPlan {
    let request: CompressHandler.Arguments
    let method: CompressHandler.Method
    let base: RegisteredModel
    let predictor: RegisteredModel?
    /// How the pruned model's kept weights are set, and the least-squares ridge.
    let reconstruction: ReconstructionMethod
    let ridge: Double
    /// A retry or a duplicate finds the model already registered under it.
    let key: String

    init(_ request: CompressHandler.Arguments, method: CompressHandler.Method, config: LopConfig, registry: Registry) throws {
        self.request = request
        self.method = method
        reconstruction = request.reconstruction ?? ReconstructionMethod(rawValue: config.pruning.reconstruction) ?? .none
        ridge = config.pruning.reconstructionRidge
        base = try Self.argument("model") { try registry.resolve(request.model) }
        guard base.kind == .base else { throw ArgumentError("model", "\(base.reference) is a \(base.kind.rawValue) model; compress takes a base model") }
        var predictor: RegisteredModel?
        if method != .search {
            if let reference = request.predictor {
                predictor = try Self.argument("predictor") { try registry.resolve(reference) }
            } else {
                predictor = try? registry.resolve(ModelReference(name: TrainHandler.predictorName(of: base.name), selector: .alias("champion")))
                if predictor == nil && method == .predict {
                    throw ArgumentError("method", "predict needs a predictor, and \(base.reference) has no champion predictor yet (run a train job, or use search or auto)")
                }
            }
            if let p = predictor, p.kind != .predictor || p.baseModelId != base.id {
                throw ArgumentError("predictor", "\(p.reference) is not a predictor of \(base.reference) (it is a \(p.kind.rawValue) model\(p.baseModelId.map { " of model id \($0)" } ?? ""))")
            }
        }
        self.predictor = predictor
        let searchText = try request.search.map { try JSONB(encoding: $0).text } ?? "{}"
        key = CompressHandler.requestKey(base: base.id, budget: request.budget, method: method.rawValue, predictor: predictor?.id,
                                         search: method == .predict ? "" : searchText,
                                         reconstruction: reconstruction == .none ? nil : "\(reconstruction.rawValue)@\(ridge)",
                                         exports: request.export.filter { $0 != "hf" })
    }

    /// The summary of a model already registered for this request (its files checked), or nil.
    func reused(registry: Registry, root: ArtifactRoot) throws -> CompressSummary? {
        guard let existing = try registry.model(requestKey: key) else { return nil }
        let damaged = root.verify(existing)
        guard damaged.isEmpty else {
            throw RegistryError("\(existing.reference) is registered for this request but its files \(damaged.joined(separator: ", ")) are missing or changed")
        }
        var summary = try existing.lineage.decode(StoredSummary.self).summary
        summary.model = CompressSummary.ModelRef(existing)
        summary.reused = true
        return summary
    }

    /// Runs a lookup whose failure means the argument can never work (the job is discarded, not retried).
    private static func argument<T>(_ key: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as RegistryError { throw ArgumentError(key, error.description) }
    }
}

/// How the strategy was chosen: predicted, or searched (by request, or because auto should not trust the
/// predictor here, with the reason).
enum StrategyChoice {
    case predicted(Prediction)
    case searched(SearchResult, samplesWritten: Int, fallback: String?, prediction: Prediction?)

    var sizes: [Int] {
        switch self {
        case .predicted(let p): p.sizes
        case .searched(let r, _, _, _): r.best.sizes
        }
    }

    var ratios: [Double] {
        switch self {
        case .predicted(let p): p.ratios
        case .searched(let r, _, _, _): r.best.ratios
        }
    }

    /// `predict` or `search`, as registry rows and summaries name it.
    var method: String {
        if case .predicted = self { return "predict" }
        return "search"
    }

    var fallback: String? {
        if case .searched(_, _, let fallback, _) = self { return fallback }
        return nil
    }

    var prediction: Prediction? {
        switch self {
        case .predicted(let p): p
        case .searched(_, _, _, let p): p
        }
    }

    var samplesWritten: Int {
        if case .searched(_, let written, _, _) = self { return written }
        return 0
    }

    static func make(_ plan: CompressPlan, base: OpenedBase, predictor: OpenedPredictor?, maxSpread: Double, overrides: [String: AnyJSON]?,
                     job: Job, context: JobContext, stage: StageReporter) throws -> StrategyChoice {
        let budget = plan.request.budget
        var fallback: String?
        var prediction: Prediction?
        if let predictor {
            do {
                try predictor.check(for: base, reconstruction: plan.reconstruction)
                let p = try predictor.predictor.predict(budget, bounds: base.bounds)
                prediction = p
                if plan.method == .auto && !p.inTrainedRange {
                    fallback = String(format: "the budget keeps %.3f of the FFN parameters, outside the predictor's trained range %.3f–%.3f",
                                      Projection.keptFraction(p.sizes, units: base.units), p.trainedRange[0], p.trainedRange[1])
                } else if plan.method == .auto && p.maximumSpread > maxSpread {
                    fallback = String(format: "the predictor's members disagree: largest spread %.4f > compress.max_spread %.4f", p.maximumSpread, maxSpread)
                }
            } catch let error as ArgumentError where plan.method == .auto {
                fallback = error.reason
            }
        } else if plan.method == .auto {
            fallback = "\(plan.base.reference) has no champion predictor yet"
        }
        if let prediction, plan.method != .search, fallback == nil { return .predicted(prediction) }
        stage(.strategy, 0.05, "searching" + (fallback.map { " (\($0))" } ?? ""))
        let gramPasses = { (done: Int, total: Int) in stage(.strategy, 0.05, "reconstruction: Gram matrices, calibration pass \(done)/\(total)") }
        let (result, written) = try base.search(budget, overrides: overrides, reconstruction: plan.reconstruction, job: job, context: context,
                                                gramPasses: gramPasses) { done, total, bestLoss in
            stage(.strategy, 0.05 + 0.5 * Double(done) / Double(total), String(format: "simulation %d/%d, best loss %.4f", done, total, bestLoss))
        }
        return .searched(result, samplesWritten: written, fallback: fallback, prediction: prediction)
    }
}

/// The pruned model's folder, installed under the artifact root: written, evaluated on the written files (what
/// is registered is what was measured), reported, hashed.
struct PrunedArtifact {
    let relative: String
    let files: [String: FileDigest]
    let name: String
    let parameters: Int
    let contentHash: String
    let record: PruningRecord
    let metrics: EvaluationData.Metrics?
    let report: String?

    static func build(_ plan: CompressPlan, base: OpenedBase, choice: StrategyChoice, evaluate: Bool, root: ArtifactRoot,
                      context: JobContext, stage: StageReporter, clock: inout Stopwatch) throws -> PrunedArtifact {
        let budget = plan.request.budget
        stage(.prune, 0.6, "writing the pruned checkpoint")
        let temporary = try root.temporary(for: plan.key)
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        let (pruned, record) = try base.prepared.pruner.write(budget: budget, allocation: choice.method, proposed: choice.ratios, sizes: choice.sizes,
                                                               to: temporary, dtype: base.prepared.model.storageType,
                                                               reconstruction: try base.reconstruction(plan.reconstruction))
        clock.lap("prune")
        try context.checkCancelled()

        var metrics: EvaluationData.Metrics?
        var reportFile: String?
        // The written folder, loaded once for evaluation and exports (what is measured and exported is the file).
        let gguf = plan.request.export.compactMap { form in GGUFFile.TensorType.allCases.first { "gguf-\($0)" == form } }
        let written = evaluate || !gguf.isEmpty ? try Model.load(directory: temporary) : nil
        if evaluate, let written {
            stage(.evaluate, 0.7, "held-out \(plan.base.evalData ?? "data")")
            let evaluationStart = Date()
            guard written.parameterCount == pruned.parameterCount else {
                throw RegistryError("the written checkpoint has \(written.parameterCount) parameters, the pruned model \(pruned.parameterCount)")
            }
            let measured = try base.heldOut.evaluate(written)
            metrics = measured
            if let baseMetrics = plan.base.heldOutMetrics {
                var report = Report(model: plan.base.reference, modelHash: plan.base.contentHash, data: plan.base.evalData ?? "",
                                    importance: record.importance, units: record.units, original: baseMetrics,
                                    originalParameterCount: Int(plan.base.parameters))
                report.entries.append(Report.Entry(strategy: choice.method, budget: budget.description,
                                                   keptFraction: Projection.keptFraction(choice.sizes, units: base.units), ratios: record.ratios,
                                                   sizes: choice.sizes, parameterCount: pruned.parameterCount, metrics: measured,
                                                   seconds: Date().timeIntervalSince(evaluationStart)))
                try AtomicFile.write(try report.json(), to: temporary + "/report.json")
                try AtomicFile.write(Data(report.html().utf8), to: temporary + "/report.html")
                reportFile = "report.html"
            }
        }
        clock.lap("evaluate")
        try context.checkCancelled()

        // llama.cpp's files, from the written (and evaluated) folder, registered with it.
        if let written, !gguf.isEmpty {
            for type in gguf {
                stage(.register, 0.9, "writing gguf-\(type)")
                do {
                    try LanguageModelGGUF.write(written, name: plan.request.name ?? "\(plan.base.name)-pruned", type: type, to: temporary + "/model-\(type).gguf")
                } catch let error as ExportError {
                    throw ArgumentError("export", error.description)  // the same on every attempt
                }
                try context.checkCancelled()
            }
            clock.lap("export")
        }

        stage(.register, 0.95, "hashing and registering")
        let files = try ArtifactRoot.digest(folder: temporary)
        let name = plan.request.name ?? "\(plan.base.name)-pruned"
        let relative = "pruned/\(name)/\(plan.key.prefix(20))"
        try root.install(temporary, at: relative)
        clock.lap("register")
        return PrunedArtifact(relative: relative, files: files, name: name, parameters: pruned.parameterCount, contentHash: pruned.contentHash,
                              record: record, metrics: metrics, report: reportFile.map { relative + "/" + $0 })
    }

    /// The job's summary, and the registry row with its model.registered event for the completing transaction
    /// (a duplicate that registered first is reused instead).
    func registration(_ plan: CompressPlan, base: OpenedBase, choice: StrategyChoice, job: Job, registry: Registry,
                      timings: [String: Double]) throws -> JobOutcome<CompressSummary> {
        let summary = CompressSummary(
            model: nil, reused: false, base: .init(plan.base), budget: plan.request.budget, method: plan.method.rawValue, methodUsed: choice.method,
            fallback: choice.fallback, predictor: plan.predictor.map(CompressSummary.ModelRef.init), prediction: choice.prediction,
            strategy: record.ratios, sizes: choice.sizes, keptFraction: Projection.keptFraction(choice.sizes, units: base.units),
            parameters: Int64(parameters), baseParameters: plan.base.parameters, sizeBytes: files.values.reduce(0) { $0 + $1.bytes },
            metrics: metrics, baseMetrics: plan.base.heldOutMetrics, artifactPath: relative, report: report,
            samplesWritten: choice.samplesWritten, reconstruction: plan.reconstruction, timings: timings)
        var new = NewModel(name: name, kind: .pruned, artifactPath: relative, files: files, parameters: Int64(parameters), contentHash: contentHash)
        new.baseModelId = plan.base.id
        if case .predicted = choice { new.predictorId = plan.predictor?.id }
        new.sourceJobId = job.id
        new.budget = plan.request.budget
        new.strategy = record.ratios
        new.sizes = choice.sizes
        new.method = choice.method
        new.requestKey = plan.key
        new.metrics = try JSONB(encoding: HeldOutMetrics(heldOut: metrics))
        new.lineage = try JSONB(encoding: StoredSummary(summary: summary, searchKey: choice.method == "search" ? "job:\(job.id)" : nil))
        let model = new
        let key = plan.key
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
}
